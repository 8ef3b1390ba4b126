"""Write a volume's results as NIfTI aligned with the scan, plus a JSON summary: one naming scheme for
`aimc predict` and the viewer's File > Export, so that a folder reads the same whoever wrote it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.files import atomic_write_json
from engine.model_store import ModelSpec
from engine.pipeline import VolumeResult
from engine.run_settings import RunSettings
from engine.uncertainty import MAP_TITLES, MAP_UNITS
from engine.volume import ScanError, save_nifti

SEGMENTATION = "seg.nii.gz"
UNCERTAINTY = "uncertainty.nii.gz"
PROBABILITY = "probability.nii.gz"
SUMMARY = "summary.json"


def probability_map(result: VolumeResult) -> np.ndarray:
    """Foreground probability for a two-class model; all class probabilities (I, J, K, C) otherwise."""
    return result.foreground_probability() if result.num_classes == 2 else result.probabilities


def summary(
    result: VolumeResult, spec: ModelSpec, run: RunSettings, uncertainty_map: str = "entropy"
) -> dict:
    names = spec.label_names
    volumes = result.label_volumes_ml()
    inside = result.mean_uncertainty_in_labels("entropy")
    return {
        "scan": result.volume.source,
        "model": spec.name,
        "model_kind": spec.kind,
        "architecture": spec.architecture,
        "settings": {
            "mode": run.mode,
            "mc_samples": run.mc_samples,
            "noise_level": run.noise_level,
            "drift_s": run.drift_s,
            "seed": run.seed,
        },
        "slice_axis": result.axis,
        "slices": int(result.finished.sum()),
        "labels": {
            names.get(c, str(c)): {
                "value": c,
                "volume_ml": round(volumes[c], 4),
                "mean_entropy_inside": round(inside[c], 6),
            }
            for c in volumes
        },
        "mean_uncertainty_in_segmentation": round(
            float(np.mean(list(inside.values()))) if inside else 0.0, 6
        ),
        "uncertainty_map": f"{MAP_TITLES[uncertainty_map]} ({MAP_UNITS[uncertainty_map]})",
        "seconds_per_slice": round(float(np.mean(result.seconds)), 4) if result.seconds else None,
        "voxel_volume_ml": result.volume.voxel_volume_ml,
    }


def write_json(data: dict, path: Path) -> None:
    """Atomic JSON write; a refused write is a `ScanError` for the user."""
    try:
        atomic_write_json(data, path)
    except OSError as exc:
        raise ScanError(f"{path}: could not write ({exc.strerror or exc})") from None


def write_results(
    result: VolumeResult,
    out_dir: Path,
    spec: ModelSpec,
    run: RunSettings,
    uncertainty_map: str = "entropy",
    *,
    uncertainty: bool = True,
    probability: bool = True,
) -> dict[str, Path]:
    """seg (uint8), the `uncertainty_map` and the probability map (float32) as NIfTI, and summary.json, in
    `out_dir`; the viewer may leave out either map. A refused write is a `ScanError`."""
    out_dir = Path(out_dir)
    vol = result.volume
    paths = {"segmentation": save_nifti(vol, result.segmentation, out_dir / SEGMENTATION, np.uint8)}
    if uncertainty:
        paths["uncertainty"] = save_nifti(
            vol, result.maps[uncertainty_map], out_dir / UNCERTAINTY, np.float32
        )
    if probability:
        paths["probability"] = save_nifti(vol, probability_map(result), out_dir / PROBABILITY, np.float32)
    write_json(summary(result, spec, run, uncertainty_map), out_dir / SUMMARY)
    paths["summary"] = out_dir / SUMMARY
    return paths
