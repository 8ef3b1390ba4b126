"""Where a model fails, patient by patient, on its validation split (never the test split).

For each case: volume Dice as predicted and after the model's post-processing, and the kind of error
behind a low score: false regions (predicted 3D components that touch no lesion, and how large the
largest is), missed lesions (reference components the prediction does not touch), slices wrong at
the ends of the lesion (first/last slices), the post-processing keeping the wrong component, and
intensity (how bright the lesion is against the rest of the head after the model's normalisation).
With `flips`, also the Dice of the engine's left-right flip averaging (`ModelSpec.flip_average`: each
slice's class probabilities averaged with its mirror image's), then the same post-processing. A model's
own flip averaging is left out of its "Dice" here, so both columns are comparable across models.

    python -m training.failure_analysis --model lgg_unet_digital --data ../shared/data/lgg --json out.json
    # a digital run's best epoch so far:
    python -m training.failure_analysis --run /work/runs/NAME --data ../shared/data/lgg
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from engine.inference import Segmenter
from engine.metrics import dice_per_label
from engine.model_store import ModelSpec, find_model, save_model
from engine.pipeline import segment_volume
from engine.postprocessing import keep_large_components
from engine.preprocessing import AXES, normalise_volume
from engine.run_settings import RunSettings
from engine.volume import load_scan
from training.evaluate import cases_of_split

FULL = np.ones((3, 3, 3), bool)


def case_errors(pred: np.ndarray, truth: np.ndarray, image: np.ndarray, axis: int = 2) -> dict:
    """Error anatomy of one binary prediction against its reference (both (i, j, k) volumes)."""
    pred, truth = pred > 0, truth > 0
    tp = int((pred & truth).sum())
    fp, fn = int((pred & ~truth).sum()), int((~pred & truth).sum())
    p_lab, n_p = ndimage.label(pred, FULL)
    t_lab, n_t = ndimage.label(truth, FULL)
    false_regions = [int((p_lab == i).sum()) for i in range(1, n_p + 1) if not truth[p_lab == i].any()]
    missed = [int((t_lab == i).sum()) for i in range(1, n_t + 1) if not pred[t_lab == i].any()]
    other = tuple(a for a in range(3) if a != axis)
    t_slices, p_slices = truth.any(axis=other), pred.any(axis=other)
    lesion = np.flatnonzero(t_slices)
    ends = set(lesion[[0, -1]].tolist()) if lesion.size else set()
    head = image > np.percentile(image, 50)  # a rough head mask: the brighter half of the volume
    return {
        "dice": 2 * tp / max(1, 2 * tp + fp + fn) if (pred.any() or truth.any()) else 1.0,
        "truth_voxels": int(truth.sum()),
        "pred_voxels": int(pred.sum()),
        "fp_voxels": fp,
        "fn_voxels": fn,
        "truth_components": n_t,
        "pred_components": n_p,
        "false_regions": len(false_regions),
        "false_region_voxels": int(sum(false_regions)),
        "largest_false_region": max(false_regions, default=0),
        "missed_lesions": len(missed),
        "missed_lesion_voxels": int(sum(missed)),
        "slices": int(truth.shape[axis]),
        "lesion_slices": int(t_slices.sum()),
        "missed_slices": int((t_slices & ~p_slices).sum()),
        "false_slices": int((p_slices & ~t_slices).sum()),
        "missed_end_slices": int(sum(1 for k in ends if not p_slices[k])),
        "lesion_at_volume_edge": bool(
            lesion.size and (lesion[0] == 0 or lesion[-1] == truth.shape[axis] - 1)
        ),
        "lesion_intensity": float(image[truth].mean()) if truth.any() else float("nan"),
        "head_intensity": float(image[head & ~truth].mean()),
    }


def snapshot_model(run: Path, out: Path, checkpoint: str = "best.pt") -> ModelSpec:
    """A digital-only model folder from a training run's `spec.json` and a checkpoint (the best epoch so far),
    with every foreground label cut to its largest component, so `analyse` reports Dice raw and cut."""
    import torch

    spec = ModelSpec.from_dict(json.loads((run / "spec.json").read_text()))
    if spec.kind != "digital":
        raise ValueError(f"{run}: only digital runs can be looked at from their checkpoints")
    state = torch.load(run / checkpoint, weights_only=True)
    net = spec.build()
    net.load_state_dict(state["model"] if "model" in state else state)
    spec.keep_largest = list(range(1, spec.num_classes))
    out.mkdir(parents=True, exist_ok=True)
    save_model(spec, out, net.eval())
    return spec


def analyse(model: str, data: Path, split: str = "val", progress=print, flips: bool = False) -> list[dict]:
    if split == "test":
        raise ValueError("failure analysis is for model selection: use the validation (or training) split")
    spec = find_model(model)
    layout, cases = cases_of_split(spec, data, split)
    raw_spec = dataclasses.replace(spec, keep_largest=[], flip_average=False)
    exact = RunSettings(model=spec.name, mode="digital", mc_samples=1, noise_level=0.0, drift_s=0.0, seed=0)
    segmenter = Segmenter(raw_spec, exact)
    flip_segmenter = Segmenter(dataclasses.replace(raw_spec, flip_average=True), exact)
    axis = AXES[spec.preprocessing.slice_axis]
    rows = []
    for case in cases:
        volume, truth = load_scan(case.image), np.rint(load_scan(case.label).data).astype(np.int64)
        result = segment_volume(segmenter, volume)
        raw = result.segmentation
        post = keep_large_components(raw, spec.keep_largest, spec.component_fraction)
        image = normalise_volume(volume.data, spec.preprocessing)
        row = {
            "case": case.case_id,
            "dice_raw": dice_per_label(raw, truth, spec.num_classes)[1],
            "dice": dice_per_label(post, truth, spec.num_classes)[1],
            "raw": case_errors(raw, truth, image, axis),
            "post": case_errors(post, truth, image, axis),
        }
        if flips:
            mirrored = segment_volume(flip_segmenter, volume).segmentation
            tta = keep_large_components(mirrored, spec.keep_largest, spec.component_fraction)
            row["dice_flips"] = dice_per_label(tta, truth, spec.num_classes)[1]
        rows.append(row)
        progress(
            f"{case.case_id}: Dice {row['dice']:.3f} (raw {row['dice_raw']:.3f})"
            + (f", with flips {row['dice_flips']:.3f}" if flips else "")
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| case | Dice | raw Dice | lesion vox | pred vox | FP vox | FN vox | false regions (raw), largest | "
        "missed lesions | lesion slices | missed slices (ends) | false slices | lesion / head intensity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["dice"]):
        p, q = r["post"], r["raw"]
        lines.append(
            f"| {r['case']} | {r['dice']:.3f} | {r['dice_raw']:.3f} | "
            f"{p['truth_voxels']} | {p['pred_voxels']} | "
            f"{p['fp_voxels']} | {p['fn_voxels']} | {q['false_regions']}, {q['largest_false_region']} | "
            f"{p['missed_lesions']}/{p['truth_components']} | {p['lesion_slices']}/{p['slices']} | "
            f"{p['missed_slices']} ({p['missed_end_slices']}) | {p['false_slices']} | "
            f"{p['lesion_intensity']:.2f} / {p['head_intensity']:.2f} |"
        )
    d = np.array([r["dice"] for r in rows])
    if all("dice_flips" in r for r in rows):
        f = np.array([r["dice_flips"] for r in rows])
        lines.append(f"\nwith left-right flips: mean {f.mean():.4f}, min {f.min():.4f}")
    lines.append(
        f"\nmean {d.mean():.4f}, median {np.median(d):.4f}, min {d.min():.4f}, "
        f"below 0.5: {(d < 0.5).sum()} of {len(d)}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a model name or folder")
    p.add_argument("--run", help="a digital training run folder instead (spec.json and best.pt)")
    p.add_argument("--data", required=True)
    p.add_argument("--split", choices=["train", "val"], default="val")
    p.add_argument("--flips", action="store_true", help="also score a left-right test-time flip ensemble")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if bool(args.model) == bool(args.run):
        p.error("give --model or --run")
    model = args.model
    if args.run:
        import tempfile

        model = Path(tempfile.mkdtemp(prefix="snapshot_")) / Path(args.run).name
        snapshot_model(Path(args.run), model)
    rows = analyse(str(model), Path(args.data), args.split, flips=args.flips)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
