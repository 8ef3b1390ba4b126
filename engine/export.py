"""Write a volume's results as NIfTI aligned with the scan, plus a JSON summary: one naming scheme for
`aimc predict` and the viewer's File > Export, so that a folder reads the same whoever wrote it.

The files are one output set (`engine.files.OutputSet`): written whole or not at all, with a manifest
that tells our files from the user's, one writer at a time per folder."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.export_formats import NIFTI, file_names, write_formats
from engine.files import OutputSet, atomic_write_json
from engine.volume import ScanError, save_nifti

if TYPE_CHECKING:  # the command line opens the output set before torch loads: import only what writing needs
    from engine.compatibility import Fit
    from engine.findings import Lesion
    from engine.model_store import ModelSpec
    from engine.pipeline import VolumeResult
    from engine.run_settings import RunSettings
    from engine.trust import Verdict

SEGMENTATION = "seg.nii.gz"
UNCERTAINTY = "uncertainty.nii.gz"
PROBABILITY = "probability.nii.gz"
SUMMARY = "summary.json"
RESULT_FILES = (SEGMENTATION, UNCERTAINTY, PROBABILITY, SUMMARY)


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
    from engine.uncertainty import MAP_TITLES, MAP_UNITS

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
    report = {
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
    from engine.images2d import in_image_units

    return in_image_units(report, result.volume, result.segmentation)


def case_trust(result: VolumeResult, spec: ModelSpec, run: RunSettings) -> dict:
    """`write_results`' `verdict` and `lesions` for a finished result, computed here (the viewer keeps
    its own, computed in the background): the case verdict under the model's calibration for the run's
    mode (or why there is none), and the lesions on the predictive entropy, flagged above the
    calibrated threshold (the map `training/trust_calibration.py` fits it on). A 2D image has no lesions
    (volumes in mL, diameters in mm), as in the viewer: its objects are nuclei, in pixels."""
    from engine.findings import lesions
    from engine.images2d import is_planar
    from engine.trust import NO_CALIBRATION, calibration_for, verdict

    calibration = calibration_for(spec, run.mode)
    return {
        "verdict": verdict(result, spec.preprocessing, calibration, run) if calibration else NO_CALIBRATION,
        "lesions": None
        if is_planar(result.volume)
        else lesions(
            result, "entropy", review_above=calibration.lesion_review_above if calibration else None
        ),
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
    extra: Mapping[str, object] | None = None,
    extra_files: Mapping[str, Callable[[Path], object]] | None = None,
    overwrite: bool = False,
    outputs: OutputSet | None = None,
    formats: Sequence[str] = (NIFTI,),
    edits: dict | None = None,
) -> dict[str, Path]:
    """seg (uint8), the `uncertainty_map` and the probability map (float32) as NIfTI, and summary.json, in
    `out_dir`, as one output set; the viewer may leave out either map. `verdict`, `fit` and `lesions` go
    into the summary (see `summary`) with `edits`, the reader's corrections; `extra` entries are added to
    it as they are; `extra_files` writes
    further files of the set (name -> a function that writes the file at the path it is given).

    `outputs` is a set the caller opened already (to hold the folder's lock and refuse early, before the
    work); otherwise one is opened here, refusing to replace files aimc did not write unless `overwrite`.
    A refused or failed write raises `ScanError` or `engine.files.OutputError` and leaves the folder as
    it was. Returns the final paths by kind (segmentation, uncertainty, probability, summary, and the
    names of `extra_files`). `formats` chooses NIfTI, DICOM SEG and seg.nrrd (`engine.export_formats`).
    """
    if outputs is None:
        with OutputSet(out_dir, overwrite=overwrite, protect=[result.volume.source]) as opened:
            return write_results(
                result,
                out_dir,
                spec,
                run,
                uncertainty_map,
                uncertainty=uncertainty,
                probability=probability,
                verdict=verdict,
                fit=fit,
                lesions=lesions,
                extra=extra,
                extra_files=extra_files,
                outputs=opened,
                formats=formats,
                edits=edits,
            )
    vol = result.volume
    arrays: dict[str, tuple[str, np.ndarray, type]] = {}
    if NIFTI in formats:
        arrays["segmentation"] = (SEGMENTATION, result.segmentation, np.uint8)
        if uncertainty:
            arrays["uncertainty"] = (UNCERTAINTY, result.maps[uncertainty_map], np.float32)
        if probability:
            arrays["probability"] = (PROBABILITY, probability_map(result), np.float32)
    names = {kind: name for kind, (name, _, _) in arrays.items()}
    names.update({"summary": SUMMARY, **{name: name for name in extra_files or {}}})
    outputs.check([*names.values(), *file_names(formats)])
    staging = outputs.path(SUMMARY).parent  # the other formats are written beside, into the same set
    for kind, path in write_formats(
        result, staging, spec, run, formats, uncertainty_map, uncertainty=uncertainty, probability=probability
    ).items():
        names[kind] = outputs.path(path.name).name
    for name, array, dtype in arrays.values():
        save_nifti(vol, array, outputs.path(name), dtype)
    from engine.instances import write_instances

    nuclei_paths, nuclei_entry = write_instances(result, spec, staging, uncertainty_map)
    for kind, path in nuclei_paths.items():
        names[kind] = outputs.path(path.name).name
    record = summary(
        result, spec, run, uncertainty_map, verdict=verdict, fit=fit, lesions=lesions, edits=edits
    )
    write_json({**record, **nuclei_entry, **(extra or {})}, outputs.path(SUMMARY))
    for name, write in (extra_files or {}).items():
        write(outputs.path(name))
    written = outputs.commit()
    return {kind: written[name] for kind, name in names.items()}
