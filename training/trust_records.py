"""What the trust layer is fitted and judged on: one record per (case, chip programming) of a model's run.

A record holds the case's true Dice, every candidate case score, its lesions' uncertainty, its
out-of-distribution features and, near the lesion, histograms of the per-pixel uncertainty of right
and wrong pixels and of the confidence (enough for AUROC and ECE over many cases without keeping
the maps). Records are saved as JSON beside the report's measurements, with the sha256 of the model's
weights: a replaced model is re-measured, never judged on its predecessor's records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from engine.files import atomic_write_json
from engine.findings import NEAR_MM, lesions
from engine.inference import Segmenter
from engine.metrics import dice_per_label
from engine.model_store import ModelSpec, weights_hash
from engine.pipeline import VolumeResult, segment_volume
from engine.run_settings import Mode, RunSettings
from engine.trust import case_scores, ood_features
from engine.volume import Volume, load_scan
from training.evaluate import cases_of_split

CALIBRATION_RUN = {"mc_samples": 8, "noise_level": 1.0, "drift_s": 86400.0}  # the model table's nominal chips
UNCERTAINTY_BINS = 256  # per-pixel uncertainty in [0, ln C], for AUROC near the lesion
CONFIDENCE_BINS = 15  # the usual ECE binning of the top-class probability
# total entropy of the chip-averaged probabilities; its part from disagreement between chips; and
# the rest, the mean of the chips' own entropies (aleatoric)
PIXEL_MAPS = ("entropy", "mutual_information", "expected_entropy")


@dataclass
class CaseRecord:
    case: str  # "case_id/seedN"
    dice: float
    scores: dict[str, float]
    lesions: list[tuple[float, bool]]  # (mean uncertainty, touches the reference)
    ood: np.ndarray
    pixels: dict[str, list[list[int]]] = field(default_factory=dict)  # `pixel_histograms`

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ood"] = [float(v) for v in self.ood]
        d["scores"] = {k: (float(v) if np.isfinite(v) else None) for k, v in self.scores.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CaseRecord:
        return cls(
            d["case"],
            float(d["dice"]),
            {k: (float("nan") if v is None else float(v)) for k, v in d["scores"].items()},
            [(float(u), bool(t)) for u, t in d["lesions"]],
            np.asarray(d["ood"], np.float64),
            d.get("pixels", {}),
        )


def near_lesion(segmentation: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Voxels within `NEAR_MM` of the true or the predicted lesion: where the errors are. Over a whole
    head, the many trivially right background voxels inflate AUROC and hide miscalibration."""
    seeds = (segmentation > 0) | (truth > 0)
    if not seeds.any():
        return seeds
    return ndimage.distance_transform_edt(~seeds, sampling=spacing) <= NEAR_MM


def pixel_histograms(result: VolumeResult, truth: np.ndarray, classes: int) -> dict[str, list[list[int]]]:
    """Near the lesion: per map, counts of wrong and right pixels by uncertainty bin; and per
    confidence bin, the pixel count, the right ones and the summed confidence (x1e6, as integers)."""
    band = near_lesion(result.segmentation, truth, result.volume.spacing)
    wrong = (result.segmentation != truth)[band]
    out = {}
    edges = np.linspace(0.0, np.log(classes), UNCERTAINTY_BINS + 1)
    maps = {**result.maps, "expected_entropy": result.maps["entropy"] - result.maps["mutual_information"]}
    for name in PIXEL_MAPS:
        values = np.clip(maps[name][band], 0.0, edges[-1])
        out[name] = [
            np.histogram(values[wrong], edges)[0].tolist(),
            np.histogram(values[~wrong], edges)[0].tolist(),
        ]
    confidence = result.probabilities.max(-1)[band]
    which = np.minimum((confidence * CONFIDENCE_BINS).astype(int), CONFIDENCE_BINS - 1)
    out["confidence"] = [
        np.bincount(which, minlength=CONFIDENCE_BINS).tolist(),
        np.bincount(which, weights=~wrong, minlength=CONFIDENCE_BINS).astype(int).tolist(),
        np.rint(np.bincount(which, weights=confidence, minlength=CONFIDENCE_BINS) * 1e6).astype(int).tolist(),
    ]
    return out


def record_of(case_id: str, result: VolumeResult, truth: np.ndarray, spec: ModelSpec) -> CaseRecord:
    """Everything the trust layer reads from one finished result against its reference."""
    dice = float(np.mean(list(dice_per_label(result.segmentation, truth, spec.num_classes).values())))
    components, _ = ndimage.label(result.segmentation > 0, structure=np.ones((3, 3, 3)))
    found = [
        (lesion.mean_uncertainty, bool(truth[components == components[lesion.centre]].any()))
        for lesion in lesions(result)
    ]
    return CaseRecord(
        case_id,
        dice,
        case_scores(result),
        found,
        ood_features(result, spec.preprocessing),
        pixel_histograms(result, truth, spec.num_classes),
    )


def reference(label: Path, layout: str) -> np.ndarray:
    """A case's reference segmentation in its scan's voxel order. A microscopy image is read as the
    viewer reads it (a one-slice volume, `engine.images2d`), so the trust layer is fitted on the
    results a reader sees; its reference numbers each nucleus, and the foreground is what is judged."""
    values = load_scan(label).data
    return (values > 0).astype(np.int64) if layout == "nuclei" else np.rint(values).astype(np.int64)


def run_settings(spec: ModelSpec, mode: Mode, seed: int) -> RunSettings:
    """The chips records are measured on: the nominal ones of the model table, or one digital pass."""
    extra = CALIBRATION_RUN if mode is Mode.ANALOG else {"mc_samples": 1}
    return RunSettings(model=spec.name, mode=mode, seed=seed, **extra)


def measure(
    spec: ModelSpec,
    data: Path,
    mode: Mode,
    split: str,
    programmings: int,
    log=print,
    progress: Path | None = None,
) -> list[CaseRecord]:
    """One record per (case, programming) of `split` (digital: one pass).

    With `progress`, each record is saved there as soon as it is measured and a rerun on the same
    weights, mode and split starts after the last saved one: a calibration on chips takes an hour
    and more on two cores, and a stopped one used to start again from its first case.
    """
    layout, cases = cases_of_split(spec, data, split)
    saved = load(progress, spec) if progress is not None else None
    done = (
        {r.case: r for r in saved["records"]}
        if saved is not None and saved["mode"] == str(mode) and saved["split"] == split
        else {}
    )
    records = []
    for seed in range(programmings if mode is Mode.ANALOG else 1):
        segmenter = None
        for case in cases:
            name = f"{case.case_id}/seed{seed}"
            if name in done:
                records.append(done[name])
                continue
            segmenter = segmenter or Segmenter(spec, run_settings(spec, mode, seed))
            volume, truth = load_scan(case.image), reference(case.label, layout)
            record = record_of(name, segment_volume(segmenter, volume), truth, spec)
            records.append(record)
            if progress is not None:
                save(progress, spec, mode, split, records)
            log(f"{spec.name} {mode} {split} {record.case}: Dice {record.dice:.3f}")
    return records


def progress_path(path: Path) -> Path:
    """Where `measure` keeps the records of an unfinished measurement saved later at `path`."""
    return path.with_name(path.stem + ".partial.json")


def foreign_features(spec: ModelSpec, volumes: dict[str, Volume], mode: Mode) -> dict[str, list[float]]:
    """OOD features of scans the model was not made for (other anatomy, other modality), one pass each."""
    segmenter = Segmenter(spec, run_settings(spec, mode, 0))
    return {
        name: [float(v) for v in ood_features(segment_volume(segmenter, volume), spec.preprocessing)]
        for name, volume in volumes.items()
    }


def save(path: Path, spec: ModelSpec, mode: Mode, split: str, records: list[CaseRecord], **extra) -> None:
    """The finished records at `path`; the progress kept for them by `measure` goes."""
    atomic_write_json(
        {
            "model": spec.name,
            "weights_sha256": weights_hash(spec),
            "mode": str(mode),
            "split": split,
            "run": CALIBRATION_RUN if mode is Mode.ANALOG else {},
            "records": [r.to_dict() for r in records],
            **extra,
        },
        path,
    )
    progress_path(path).unlink(missing_ok=True)


def load(path: Path, spec: ModelSpec) -> dict | None:
    """Saved records of `spec`'s current weights, None if absent or measured on other weights."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("weights_sha256") != weights_hash(spec):
        return None
    saved["records"] = [CaseRecord.from_dict(r) for r in saved["records"]]
    return saved
