"""Claim 3, uncertainty (paper Fig. 2 and 3): how certain the models are on chips, and whether that
tells their errors.

One Monte-Carlo pass per model over the LGG test cases gives the entropy density, the per-pixel error
AUROC, the calibration error and the per-case correlation of entropy with Dice; each pass is kept as
one JSON file in `OUT/measurements/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.stats import pearsonr, spearmanr

from engine.architectures import ARCHITECTURES
from engine.inference import Segmenter
from engine.metrics import calibration_bins, dice_per_label, ece_from_bins, error_detection_auroc
from engine.model_store import ModelSpec
from engine.pipeline import segment_slice, segment_volume
from engine.preprocessing import get_slice, input_slices, normalise_volume
from engine.run_settings import Mode, RunSettings
from engine.uncertainty import SliceStats
from training.data import Case
from training.report.jobs import Bar, CaseCache, UncertaintyJob, run_parallel

ENTROPY_BINS = np.linspace(0.0, np.log(2.0), 61)
NEAR_MM = 10.0  # the "near the lesion" region of the error-detection AUROC


def _uncertainty_of(job: UncertaintyJob) -> dict:
    """A model's Monte-Carlo pass over the LGG test cases: entropy density, error AUROC, ECE, correlations."""
    spec = job.spec
    segmenter = Segmenter(spec, job.run)
    hist = np.zeros(len(ENTROPY_BINS) - 1)
    bins = np.zeros((3, 15))
    scores: dict[str, tuple[list, list]] = {region: ([], []) for region in ("head", "near")}  # wrong, right
    case_rows = []
    rng = np.random.default_rng(0)
    for case in CaseCache(job.cases).cases:
        vol, truth = case.volume, case.truth
        res = segment_volume(segmenter, vol)
        head = vol.data > 0
        # Near the lesion: within NEAR_MM of the true or the predicted lesion, where errors can happen.
        near = head & (distance_transform_edt((truth == 0) & (res.segmentation == 0), vol.spacing) <= NEAR_MM)
        wrong = res.segmentation != truth
        hist += np.histogram(res.maps["entropy"][head], ENTROPY_BINS)[0]
        bins += calibration_bins(res.probabilities.max(-1)[head], ~wrong[head])
        for region, mask in (("head", head), ("near", near)):
            ent, bad = res.maps["entropy"][mask], wrong[mask]
            scores[region][0].append(ent[bad])
            scores[region][1].append(
                ent[~bad][rng.random((~bad).sum()) < 0.05]
            )  # uniform subsample keeps AUROC
        dice = dice_per_label(res.segmentation, truth, spec.num_classes)
        case_rows.append(
            {
                "case": case.case_id,
                "dice": float(np.mean(list(dice.values()))),
                "mean_entropy": float(res.maps["entropy"][head].mean()),
            }
        )
    auroc = {}
    for region, (wrong_parts, right_parts) in scores.items():
        w, r = np.concatenate(wrong_parts), np.concatenate(right_parts)
        auroc[region] = error_detection_auroc(
            np.concatenate([w, r]), np.concatenate([np.ones(len(w), bool), np.zeros(len(r), bool)])
        )
    d = [c["dice"] for c in case_rows]
    u = [c["mean_entropy"] for c in case_rows]
    return {
        "model": spec.name,
        "histogram": hist.tolist(),
        "auroc": auroc["head"],
        "auroc_near": auroc["near"],
        "ece": ece_from_bins(bins),
        "mean_entropy": float(np.average(0.5 * (ENTROPY_BINS[1:] + ENTROPY_BINS[:-1]), weights=hist)),
        "pearson_uncertainty_dice": float(pearsonr(u, d)[0]) if len(d) > 2 else float("nan"),
        "spearman_uncertainty_dice": float(spearmanr(u, d)[0]) if len(d) > 2 else float("nan"),
        "cases": case_rows,
    }


def uncertainty(
    models: dict[tuple[str, str], ModelSpec],
    cases: list[Case],
    out: Path,
    mc: int,
    noise: float,
    drift: float,
    bar: Bar,
    workers: int = 1,
    measure: bool = True,
) -> dict[tuple[str, str], dict]:
    """Per model, the uncertainty measurements (read from `OUT/measurements/` when already made)."""
    folder = out / "measurements"
    folder.mkdir(parents=True, exist_ok=True)
    jobs = {key: UncertaintyJob(spec, cases, mc, noise, drift) for key, spec in models.items()}
    todo = [job for job in jobs.values() if not (folder / job.file_name).exists()]
    for job, result in bar(
        run_parallel(_uncertainty_of, todo if measure else [], workers),
        "uncertainty",
        len(models),
        len(models) - len(todo),
    ):
        (folder / job.file_name).write_text(json.dumps(result))
    return {
        key: json.loads((folder / job.file_name).read_text())
        for key, job in jobs.items()
        if (folder / job.file_name).exists()
    }


def summary_rows(results: dict[tuple[str, str], dict]) -> list[dict]:
    """The uncertainty table: one row per measured model."""
    return [
        {
            "model": v["model"],
            "mean_entropy": v["mean_entropy"],
            "auroc": v["auroc"],
            "auroc_near": v["auroc_near"],
            "ece": v["ece"],
            "pearson": v["pearson_uncertainty_dice"],
            "spearman": v["spearman_uncertainty_dice"],
        }
        for v in results.values()
    ]


def certainty_pairs(results: dict[tuple[str, str], dict]) -> list[tuple[str, float, float]]:
    """(architecture, mean entropy digitally trained, HWA-trained) where both models are measured."""
    return [
        (arch, results[(arch, "digital")]["mean_entropy"], results[(arch, "hwa")]["mean_entropy"])
        for arch in ARCHITECTURES
        if (arch, "digital") in results and (arch, "hwa") in results
    ]


@dataclass(frozen=True)
class ExampleReading:
    """One model's prediction and entropy on the example slice, with the slice as that model sees it."""

    arch: str
    kind: str
    image: np.ndarray
    stats: SliceStats


@dataclass(frozen=True)
class Example:
    case_id: str
    index: int  # axial slice
    truth: np.ndarray  # the slice's ground truth
    readings: list[ExampleReading]


def example(
    models: dict[tuple[str, str], ModelSpec], cases: CaseCache, mc: int, noise: float, drift: float
) -> Example:
    """Every model on one test slice: the axial slice with most lesion, of the case with most lesion."""
    case = max(cases.cases, key=lambda c: c.truth.sum())
    k = int(np.argmax(case.truth.sum(axis=(0, 1))))
    readings = []
    for (arch, kind), spec in models.items():
        run = RunSettings(
            model=spec.name, mode=Mode.ANALOG, mc_samples=mc, noise_level=noise, drift_s=drift, seed=0
        )
        segmenter = Segmenter(spec, run)
        stack = input_slices(
            normalise_volume(case.volume.data, spec.preprocessing), "axial", k, spec.preprocessing
        )
        image = stack[spec.preprocessing.context]
        readings.append(ExampleReading(arch, kind, image, segment_slice(segmenter, stack, k)))
    return Example(case.case_id, k, get_slice(case.truth, "axial", k), readings)
