"""Nuclei detection measured as the Data Science Bowl 2018 scored it, and its watershed chosen on validation.

Each image goes the way `aimc predict image.png` takes it (`engine.volume.load_scan`, the slice
pipeline, `engine.instances`), and its instances are compared with the data set's instance map
(`labels/ID.png`): the DSB score (mean over IoU thresholds 0.5..0.95 of TP / (TP + FP + FN)) and the
F1 at IoU 0.5, per image, averaged over images.

    python -m training.nuclei_instances choose --model nuclei_unet_hwa --data ../shared/data/nuclei
    python -m training.nuclei_instances measure --model nuclei_unet_hwa --data ../shared/data/nuclei \
        --mode analog --mc 4 --noise 1 --drift 86400 --json reports/nuclei_instances_analog.json

`choose` segments the validation images once (digitally) and scores every watershed setting of a
small grid on them; the engine's `engine.instances.CHOSEN` is set to the best. `measure` scores the
test split (the split recorded in the model's model.json) once with those parameters.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.files import atomic_write_json
from engine.inference import Segmenter
from engine.instances import CHOSEN, WatershedParameters, instances, split_instances
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
    """Mean DSB score on the validation images of every setting in `GRID`, best first."""
    run = RunSettings(model=model, mode="digital", mc_samples=1)
    masks = [
        (get_slice(r.segmentation, "axial", 0) > 0, truth)
        for _, r, truth in _segmented(model, data, "val", run, None, progress)
    ]
    rows = []
    for h, sigma, min_area in itertools.product(*GRID.values()):
        params = WatershedParameters(h=h, sigma=sigma, min_area=min_area)
        split = [(split_instances(m, params), t) for m, t in masks]
        scores = [dsb_average_precision(p, t) for p, t in split]
        f1 = [instance_f1(p, t) for p, t in split]
        rows.append(
            {
                "h": h,
                "sigma": sigma,
                "min_area": min_area,
                "dsb": float(np.mean(scores)),
                "f1": float(np.mean(f1)),
            }
        )
    rows.sort(key=lambda r: -r["dsb"])
    return {"model": model, "split": "val", "images": len(masks), "mode": "digital", "grid": rows}


def measure(
    model: str,
    data: Path,
    split: str = "test",
    mode: str = "digital",
    mc: int = 4,
    noise: float = 1.0,
    drift: float = 86400.0,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """DSB score, F1 at IoU 0.5, pixel Dice and counts per image of `split`, and their means."""
    analog = mode == "analog"
    run = RunSettings(
        model=model, mode=mode, mc_samples=mc if analog else 1, noise_level=noise, drift_s=drift, seed=seed
    )
    t0 = time.perf_counter()
    rows = []
    for case_id, result, truth in _segmented(model, data, split, run, limit, progress):
        found = instances(result)
        rows.append(
            {
                "image": case_id,
                "dsb": dsb_average_precision(found.labels, truth),
                "f1": instance_f1(found.labels, truth),
                "dice": mean_dice(get_slice(result.segmentation, "axial", 0), (truth > 0).astype(int), 2),
                "count": found.count,
                "true_count": int(len(np.unique(truth)) - (truth == 0).any()),
            }
        )
    return {
        "model": model,
        "split": split,
        "images": len(rows),
        "mode": mode,
        "mc_samples": run.mc_samples,
        "noise_level": noise if analog else None,
        "drift_s": drift if analog else None,
        "seed": seed,
        "parameters": {"h": CHOSEN.h, "sigma": CHOSEN.sigma, "min_area": CHOSEN.min_area},
        "mean_dsb": float(np.mean([r["dsb"] for r in rows])),
        "mean_f1": float(np.mean([r["f1"] for r in rows])),
        "mean_dice": float(np.mean([r["dice"] for r in rows])),
        "mean_abs_count_error": float(np.mean([abs(r["count"] - r["true_count"]) for r in rows])),
        "seconds": round(time.perf_counter() - t0, 1),
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
    args = parser.parse_args(argv)
    if args.what == "choose":
        report = choose(args.model, Path(args.data))
        for row in report["grid"][:10]:
            print(row)
    else:
        report = measure(
            args.model,
            Path(args.data),
            args.split,
            args.mode,
            args.mc,
            args.noise,
            args.drift,
            args.seed,
            args.limit,
        )
        print({k: v for k, v in report.items() if k != "per_image"})
    if args.json:
        atomic_write_json(report, Path(args.json))


if __name__ == "__main__":
    main()
