"""Write a volume's results as NIfTI aligned with the scan, plus a JSON summary: one naming scheme for
`aimc predict` and the viewer's File > Export, so that a folder reads the same whoever wrote it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.compatibility import Fit
from engine.files import atomic_write_json
from engine.findings import Lesion
from engine.model_store import ModelSpec
from engine.pipeline import VolumeResult
from engine.run_settings import RunSettings
from engine.trust import Verdict
from engine.uncertainty import MAP_TITLES, MAP_UNITS
from engine.volume import ScanError, save_nifti

SEGMENTATION = "seg.nii.gz"
UNCERTAINTY = "uncertainty.nii.gz"
PROBABILITY = "probability.nii.gz"
SUMMARY = "summary.json"


def probability_map(result: VolumeResult) -> np.ndarray:
    """Foreground probability for a two-class model; all class probabilities (I, J, K, C) otherwise."""
    return result.foreground_probability() if result.num_classes == 2 else result.probabilities


def _finite(value: float) -> float | None:
    """JSON has no NaN: a value that could not be computed is null."""
    return round(float(value), 4) if np.isfinite(value) else None


def verdict_entry(verdict: Verdict | str) -> dict:
    """The case verdict as summary.json records it; a string says why there is none."""
    if isinstance(verdict, str):
        return {"available": False, "reason": verdict}
    entry = {k: (_finite(v) if isinstance(v, float) else v) for k, v in verdict.to_dict().items()}
    return {"available": True, **entry}


def gate_entry(fit: Fit) -> dict:
    """Whether the model fits the scan (the compatibility gate), and why."""
    return {
        "model": fit.model,
        "fits": fit.fits,
        "outside_training_domain": not fit.fits,
        "by_metadata": fit.by_metadata,
        "reasons": list(fit.reasons),
    }


def lesion_entries(lesions: list[Lesion], label_names: dict[int, str], uncertainty_map: str) -> list[dict]:
    """One entry per lesion, most uncertain first; slices are numbered from 1 as the viewer shows them,
    the centre is a 0-based voxel index in canonical order as the viewer's readout gives it."""
    return [
        {
            "label": label_names.get(lesion.label, str(lesion.label)),
            "volume_ml": round(lesion.volume_ml, 4),
            "largest_diameter_mm": round(lesion.diameter_mm, 2),
            "first_slice": lesion.first_slice + 1,
            "last_slice": lesion.last_slice + 1,
            "centre_voxel": list(lesion.centre),
            f"mean_{uncertainty_map}": round(lesion.mean_uncertainty, 6),
            "review": lesion.review,
        }
        for lesion in lesions
    ]


def summary(
    result: VolumeResult,
    spec: ModelSpec,
    run: RunSettings,
    uncertainty_map: str = "entropy",
    *,
    verdict: Verdict | str | None = None,
    fit: Fit | None = None,
    lesions: list[Lesion] | None = None,
    edits: dict | None = None,
) -> dict:
    """The run's settings, volumes and uncertainty; with the trust results where the caller has them:
    the case `verdict` (or why there is none), the gate's `fit` of the model to the scan, and the
    `lesions` (found with `engine.findings.lesions` on the `uncertainty_map`); `edits`, the viewer's
    record of a reader's corrections of the labels written, as it is."""
    names = spec.label_names
    volumes = result.label_volumes_ml()
    inside = result.mean_uncertainty_in_labels("entropy")
    trust: dict = {}
    if fit is not None:
        trust["gate"] = gate_entry(fit)
    if verdict is not None:
        trust["verdict"] = verdict_entry(verdict)
    if lesions is not None:
        trust["lesions"] = lesion_entries(lesions, names, uncertainty_map)
    if edits is not None:
        trust["edits"] = edits
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
        **trust,
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
    verdict: Verdict | str | None = None,
    fit: Fit | None = None,
    lesions: list[Lesion] | None = None,
    edits: dict | None = None,
) -> dict[str, Path]:
    """seg (uint8), the `uncertainty_map` and the probability map (float32) as NIfTI, and summary.json, in
    `out_dir`; the viewer may leave out either map. `verdict`, `fit`, `lesions` and `edits` go into the
    summary (see `summary`). A refused write is a `ScanError`."""
    out_dir = Path(out_dir)
    vol = result.volume
    paths = {"segmentation": save_nifti(vol, result.segmentation, out_dir / SEGMENTATION, np.uint8)}
    if uncertainty:
        paths["uncertainty"] = save_nifti(
            vol, result.maps[uncertainty_map], out_dir / UNCERTAINTY, np.float32
        )
    if probability:
        paths["probability"] = save_nifti(vol, probability_map(result), out_dir / PROBABILITY, np.float32)
    write_json(
        summary(result, spec, run, uncertainty_map, verdict=verdict, fit=fit, lesions=lesions, edits=edits),
        out_dir / SUMMARY,
    )
    paths["summary"] = out_dir / SUMMARY
    return paths
