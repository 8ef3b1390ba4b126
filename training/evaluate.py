"""Evaluate a model on a split of its data set: per-case volume Dice per label and mean uncertainty.

Cases run through the same slice pipeline as the viewer and `aimc predict`, at the scan's own
resolution. In analog mode the evaluation is repeated over several chip programmings (seeds) and
reports the mean and standard deviation of the mean Dice across them: chip-to-chip spread.

Each (case, programming) is one unit of `engine.executor`: it ships the model's folder, the case and
the settings; the worker that runs it builds the model and its chips once and keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.executor import Executor, local_chips, local_model
from engine.inference import Segmenter
from engine.metrics import dice_per_label
from engine.model_store import ModelSpec, find_model, metrics_key, read_spec, write_spec
from engine.pipeline import segment_slice, segment_volume
from engine.run_settings import RunSettings
from engine.trust import border_band
from engine.volume import ScanError, load_scan
from training.data import Case, read_dataset, read_nuclei_image


def cases_of_split(spec: ModelSpec, data: Path, split: str) -> tuple[str, list[Case]]:
    layout, cases = read_dataset(data)
    wanted = spec.data.get("split", {}).get(split)
    if wanted is None:
        raise ValueError(f"model {spec.name} records no {split!r} split")
    chosen = [c for c in cases if c.case_id in set(wanted)]
    if not chosen:
        raise ValueError(f"{data}: none of the {split} cases of {spec.name} are in this folder")
    return layout, chosen


def _segment_case(
    segmenter: Segmenter, case: Case, layout: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
    """Prediction, entropy map, ground truth and voxel spacing of one case at its own resolution."""
    if layout == "nuclei":  # 2D microscopy: one image, no volume pipeline
        grey, truth = read_nuclei_image(case, segmenter.spec.preprocessing)
        stats = segment_slice(segmenter, grey)
        return stats.segmentation, stats.entropy, truth, (1.0, 1.0)
    volume, truth = load_scan(case.image), load_scan(case.label)
    result = segment_volume(segmenter, volume)
    return result.segmentation, result.maps["entropy"], np.rint(truth.data).astype(np.int64), volume.spacing


@dataclass(frozen=True)
class EvaluationUnit:
    """One case under one run (one programming): names and settings, built on the worker."""

    model: str  # the model's folder (or name)
    case: Case
    layout: str
    run: RunSettings
    mirror: bool | None = None  # average with the left-right mirror; None: as the model ships


def model_ref(spec: ModelSpec) -> str:
    """What a unit ships instead of the model: its folder, or its name where it has none."""
    return str(spec.folder) if spec.folder is not None else spec.name


def evaluate_case(unit: EvaluationUnit) -> dict | str:
    """One case's Dice per label and uncertainty, on the worker's cached chips; a str says why the case
    was skipped (unreadable)."""
    spec = local_model(unit.model)
    if unit.mirror is not None:
        spec = replace(spec, flip_average=unit.mirror)
    segmenter = local_chips().segmenter(spec, unit.run)
    try:
        pred, entropy, truth, spacing = _segment_case(segmenter, unit.case, unit.layout)
    except (ScanError, OSError, ValueError) as exc:
        return f"skipping {unit.case.case_id}: {exc}"
    dice = dice_per_label(pred, truth, spec.num_classes)
    inside = [float(entropy[pred == c].mean()) for c in range(1, spec.num_classes) if (pred == c).any()]
    lesion_band = (pred > 0) | border_band(pred, spacing)
    return {
        "case": unit.case.case_id,
        "dice": {spec.label_names[c]: d for c, d in dice.items()},
        "mean_dice": float(np.mean(list(dice.values()))),
        "mean_entropy": float(entropy.mean()),
        "mean_entropy_in_segmentation": float(np.mean(inside)) if inside else 0.0,
        # the segmentation and a band around its border: where a model's certainty matters
        "mean_entropy_lesion_band": float(entropy[lesion_band].mean()) if lesion_band.any() else 0.0,
    }


def _summarise(rows: list[dict]) -> dict:
    return {
        "cases": rows,
        "mean_dice": float(np.mean([r["mean_dice"] for r in rows])),
        "mean_entropy": float(np.mean([r["mean_entropy"] for r in rows])),
    }


def evaluate_runs(
    spec: ModelSpec,
    cases: list[Case],
    layout: str,
    runs: list[RunSettings],
    progress: bool = True,
    executor: Executor | None = None,
    mirror: bool | None = None,
) -> list[dict]:
    """One pass over the cases per run (each with its own chips), every (run, case) a unit of
    `executor` (default: this process): per run, per-case Dice per label and uncertainty, in case order.
    `mirror` overrides whether the model averages each read with its mirror (None: as it ships)."""
    units = [EvaluationUnit(model_ref(spec), case, layout, run, mirror) for run in runs for case in cases]
    found: dict[tuple[RunSettings, str], dict] = {}
    done = (executor or Executor(0)).map(evaluate_case, units)
    for unit, row in tqdm(done, desc=f"{spec.name} {runs[0].mode}", total=len(units), disable=not progress):
        if isinstance(row, str):
            print(row)
        else:
            found[(unit.run, unit.case.case_id)] = row
    return [_summarise([found[(run, c.case_id)] for c in cases if (run, c.case_id) in found]) for run in runs]


def evaluate_run(
    spec: ModelSpec,
    cases: list[Case],
    layout: str,
    run: RunSettings,
    progress: bool = True,
    executor: Executor | None = None,
    mirror: bool | None = None,
) -> dict:
    """One pass over the cases with one set of chips: per-case Dice per label and uncertainty."""
    return evaluate_runs(spec, cases, layout, [run], progress, executor, mirror)[0]


def evaluate(
    model: str,
    data: Path,
    split: str = "test",
    mode: str = "digital",
    mc: int = 8,
    noise: float = 1.0,
    drift: float = 86400.0,
    programmings: int = 3,
    record: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
) -> dict:
    """Evaluate; with `record`, store the summary under metrics[split] in the model's model.json.
    The (case, programming) units run on `executor` (default: this process)."""
    spec = find_model(model)
    layout, cases = cases_of_split(spec, data, split)
    seeds = range(programmings) if mode == "analog" else range(1)
    settings = [
        RunSettings(
            model=spec.name,
            mode=mode,
            mc_samples=mc if mode == "analog" else 1,
            noise_level=noise,
            drift_s=drift,
            seed=seed,
        )
        for seed in seeds
    ]
    runs = evaluate_runs(spec, cases, layout, settings, progress, executor)
    means = [r["mean_dice"] for r in runs]
    report = {
        "model": spec.name,
        "split": split,
        "cases": len(runs[0]["cases"]),
        "mode": mode,
        "mc_samples": mc if mode == "analog" else 1,
        "noise_level": noise if mode == "analog" else None,
        "drift_s": drift if mode == "analog" else None,
        "programmings": len(runs),
        "mean_dice": float(np.mean(means)),
        "std_dice_over_programmings": float(np.std(means)),
        "mean_entropy": float(np.mean([r["mean_entropy"] for r in runs])),
        "per_case": runs[0]["cases"],
    }
    if record:  # into model.json as it is now: another run may have recorded its mode meanwhile
        stored = read_spec(spec.folder)
        stored.metrics.setdefault(split, {})[metrics_key(mode, noise, drift)] = {
            k: v for k, v in report.items() if k != "per_case"
        }
        write_spec(stored, spec.folder)
    return report


def print_report(report: dict) -> None:
    print(
        f"{report['model']} on {report['split']} ({report['cases']} cases), {report['mode']}"
        + (
            f", MC {report['mc_samples']}, noise {report['noise_level']}, drift {report['drift_s']:g}s,"
            f" {report['programmings']} programmings"
            if report["mode"] == "analog"
            else ""
        )
    )
    for row in report["per_case"]:
        labels = ", ".join(f"{k} {v:.3f}" for k, v in row["dice"].items())
        print(
            f"  {row['case']:20s} Dice {row['mean_dice']:.3f} ({labels})  "
            f"mean entropy {row['mean_entropy']:.4f}"
        )
    print(
        f"mean Dice {report['mean_dice']:.4f} ± {report['std_dice_over_programmings']:.4f} over programmings;"
        f" mean entropy {report['mean_entropy']:.4f}"
    )
