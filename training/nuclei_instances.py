"""Nuclei detection measured as the Data Science Bowl 2018 scored it, and its watershed chosen on validation.

Each image goes the way `aimc predict image.png` takes it (`engine.volume.load_scan`, the slice
pipeline, `engine.instances`), and its instances are compared with the data set's instance map
(`labels/ID.png`): the DSB score (mean over IoU thresholds 0.5..0.95 of TP / (TP + FP + FN)) and the
F1 at IoU 0.5, per image, averaged over images.

    python -m training.nuclei_instances choose --model nuclei_unet_hwa --data ../shared/data/nuclei
    python -m training.nuclei_instances measure --model nuclei_unet_hwa --data ../shared/data/nuclei \
        --mode analog --mc 4 --noise 1 --drift 86400 --json reports/nuclei_instances/test_analog.json

`choose` segments the validation images once (digitally) and scores every watershed setting of a
small grid on them; the engine's `engine.instances.CHOSEN` is set to the best. `measure` scores the
test split (the split recorded in the model's model.json) once with those parameters.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.files import atomic_write_json
from engine.inference import Segmenter
from engine.instances import CHOSEN, drop_small, split_instances, watershed_regions
from engine.metrics import dsb_average_precision, instance_f1, mean_dice
from engine.model_store import find_model
from engine.pipeline import segment_volume
from engine.preprocessing import get_slice
from engine.run_settings import RunSettings
from engine.volume import load_scan
from training.evaluate import cases_of_split

GRID = {"h": (0.5, 1.0, 2.0, 3.0), "sigma": (0.0, 1.0, 2.0), "min_area": (0, 8, 24)}


def truth_instances(label_file: Path) -> np.ndarray:
    """The data set's instance map (0 background, one value per nucleus) as the image shows it."""
    return np.rint(get_slice(load_scan(label_file).data, "axial", 0)).astype(np.int64)


def _segmented(model: str, data: Path, split: str, run: RunSettings, limit: int | None, progress: bool):
    """(case id, result, truth instances) of each image of `split`, segmented under `run`."""
    spec = find_model(model)
    _, cases = cases_of_split(spec, data, split)
    segmenter = Segmenter(spec, run)
    for case in tqdm(cases[:limit], desc=f"{model} {split} {run.mode}", disable=not progress, leave=False):
        result = segment_volume(segmenter, load_scan(case.image))
        yield case.case_id, result, truth_instances(case.label)


def choose(model: str, data: Path, progress: bool = True) -> dict:
    """Mean DSB score (and F1) on the validation images of every setting in `GRID`, best first.

    The watershed runs once per (h, sigma); the area cut is applied to its regions afterwards.
    """
    run = RunSettings(model=model, mode="digital", mc_samples=1)
    masks = [
        (get_slice(r.segmentation, "axial", 0) > 0, truth)
        for _, r, truth in _segmented(model, data, "val", run, None, progress)
    ]
    rows = []
    for h, sigma in tqdm(
        list(itertools.product(GRID["h"], GRID["sigma"])), disable=not progress, leave=False
    ):
        regions = [(watershed_regions(m, h, sigma), t) for m, t in masks]
        for min_area in GRID["min_area"]:
            split = [(drop_small(r, min_area), t) for r, t in regions]
            rows.append(
                {
                    "h": h,
                    "sigma": sigma,
                    "min_area": min_area,
                    "dsb": float(np.mean([dsb_average_precision(p, t) for p, t in split])),
                    "f1": float(np.mean([instance_f1(p, t) for p, t in split])),
                }
            )
    rows.sort(key=lambda r: -r["dsb"])
    return {"model": model, "split": "val", "images": len(masks), "mode": "digital", "grid": rows}


def segment_split(
    model: str, data: Path, split: str, run: RunSettings, limit: int | None = None, progress: bool = True
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per image of `split`: its segmented foreground and the data set's instance map (what scoring needs;
    the network's part, which does not depend on the watershed, so it can be kept and scored later)."""
    return {
        case_id: (get_slice(result.segmentation, "axial", 0) > 0, truth)
        for case_id, result, truth in _segmented(model, data, split, run, limit, progress)
    }


def _run_settings(model: str, mode: str, mc: int, noise: float, drift: float, seed: int) -> RunSettings:
    analog = mode == "analog"
    return RunSettings(
        model=model, mode=mode, mc_samples=mc if analog else 1, noise_level=noise, drift_s=drift, seed=seed
    )


def measure(
    model: str,
    data: Path,
    split: str = "test",
    run: RunSettings | None = None,
    limit: int | None = None,
    masks: Path | None = None,
    progress: bool = True,
) -> dict:
    """DSB score, F1 at IoU 0.5, pixel Dice and counts per image of `split` with `engine.instances.CHOSEN`,
    and their means. `masks`: an .npz of the segmented split, read if it exists, else written."""
    run = run or RunSettings(model=model, mode="digital", mc_samples=1)
    if masks is not None and masks.exists():
        with np.load(masks) as stored:
            segmented = {
                k[5:]: (stored[k], stored["truth" + k[4:]]) for k in stored.files if k.startswith("mask")
            }
    else:
        segmented = segment_split(model, data, split, run, limit, progress)
        if masks is not None:
            arrays = {f"mask_{k}": m for k, (m, _) in segmented.items()}
            np.savez_compressed(masks, **arrays, **{f"truth_{k}": t for k, (_, t) in segmented.items()})
    rows = []
    for case_id, (mask, truth) in segmented.items():
        labels = split_instances(mask)
        rows.append(
            {
                "image": case_id,
                "dsb": dsb_average_precision(labels, truth),
                "f1": instance_f1(labels, truth),
                "dice": mean_dice(mask.astype(int), (truth > 0).astype(int), 2),
                "count": int(labels.max()),
                "true_count": int(len(np.unique(truth)) - (truth == 0).any()),
            }
        )
    analog = run.mode == "analog"
    return {
        "model": model,
        "split": split,
        "images": len(rows),
        "mode": str(run.mode),
        "mc_samples": run.mc_samples,
        "noise_level": run.noise_level if analog else None,
        "drift_s": run.drift_s if analog else None,
        "seed": run.seed,
        "parameters": {"h": CHOSEN.h, "sigma": CHOSEN.sigma, "min_area": CHOSEN.min_area},
        "mean_dsb": float(np.mean([r["dsb"] for r in rows])),
        "mean_f1": float(np.mean([r["f1"] for r in rows])),
        "mean_dice": float(np.mean([r["dice"] for r in rows])),
        "mean_abs_count_error": float(np.mean([abs(r["count"] - r["true_count"]) for r in rows])),
        "per_image": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.nuclei_instances", description=__doc__.split("\n")[0]
    )
    parser.add_argument("what", choices=["choose", "measure"])
    parser.add_argument("--model", default="nuclei_unet_hwa")
    parser.add_argument("--data", default="../shared/data/nuclei")
    parser.add_argument("--split", default="test", help="measure: the split to score (choose uses val)")
    parser.add_argument("--mode", choices=["digital", "analog"], default="digital")
    parser.add_argument("--mc", type=int, default=4)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--drift", type=float, default=86400.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument(
        "--masks", help="measure: .npz of the segmented split, read if it exists, else written (score later)"
    )
    args = parser.parse_args(argv)
    if args.what == "choose":
        report = choose(args.model, Path(args.data))
        for row in report["grid"][:10]:
            print(row)
    else:
        run = _run_settings(args.model, args.mode, args.mc, args.noise, args.drift, args.seed)
        masks = Path(args.masks) if args.masks else None
        report = measure(args.model, Path(args.data), args.split, run, args.limit, masks)
        print({k: v for k, v in report.items() if k != "per_image"})
    if args.json:
        atomic_write_json(report, Path(args.json))


if __name__ == "__main__":
    main()
