"""The export formats beyond NIfTI, behind one call for `engine.export.write_results`: a DICOM SEG with
its Parametric Map and FRACTIONAL SEG for PACS (needs a scan read from DICOM), and Slicer's seg.nrrd.

Everything that can be refused is refused before a file is written: a format nobody knows, a DICOM SEG
for a scan not read from DICOM, a source series that can no longer be read. The DICOM objects are
built in memory first; each file is written atomically, and if one write fails those already written
by this call are removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from engine.dicom_source import is_dicom, why_not_dicom
from engine.files import atomic_write
from engine.volume import ScanError, Volume

if TYPE_CHECKING:  # the command line checks formats before torch loads
    from engine.model_store import ModelSpec
    from engine.pipeline import VolumeResult
    from engine.run_settings import RunSettings

NIFTI, DICOM_SEG, SEG_NRRD = "nifti", "dicom-seg", "seg-nrrd"
FORMATS = (NIFTI, DICOM_SEG, SEG_NRRD)
# File names, by format and by what they hold (the keys of write_results' answer).
DICOM_FILES = {
    "dicom_segmentation": "seg.dcm",
    "dicom_uncertainty": "uncertainty.dcm",
    "dicom_probability": "probability.dcm",
}
SEG_NRRD_FILE = "seg.seg.nrrd"


def parse_formats(values: Iterable[str]) -> tuple[str, ...]:
    """Formats from repeated or comma-separated choices ("nifti,dicom-seg"), in FORMATS order;
    a `ValueError` names an unknown one."""
    chosen = {v.strip().lower() for value in values for v in value.split(",") if v.strip()}
    if unknown := sorted(chosen - set(FORMATS)):
        raise ValueError(f"unknown export format {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if not chosen:
        raise ValueError(f"no export format chosen; choose from {', '.join(FORMATS)}")
    return tuple(f for f in FORMATS if f in chosen)


def check_formats(volume: Volume, formats: Sequence[str]) -> None:
    """Raise `ScanError` (one line for the user) when `volume` cannot be exported in `formats`."""
    try:
        parse_formats(formats)
    except ValueError as exc:
        raise ScanError(str(exc)) from None
    if DICOM_SEG in formats and not is_dicom(volume):
        raise ScanError(f"{volume.source}: {why_not_dicom(volume)}")


def file_names(formats: Sequence[str]) -> list[str]:
    """The names the extra formats write (at most; maps the caller leaves out are not written)."""
    return (list(DICOM_FILES.values()) if DICOM_SEG in formats else []) + (
        [SEG_NRRD_FILE] if SEG_NRRD in formats else []
    )


def write_formats(
    result: VolumeResult,
    out_dir: Path,
    spec: ModelSpec,
    run: RunSettings,
    formats: Sequence[str],
    uncertainty_map: str = "entropy",
    *,
    uncertainty: bool = True,
    probability: bool = True,
) -> dict[str, Path]:
    """Write the DICOM and seg.nrrd exports of `formats` (NIfTI is `write_results`' own) into `out_dir`;
    the paths, keyed as in `DICOM_FILES` and "seg_nrrd". Raises `ScanError`, leaving none of them."""
    check_formats(result.volume, formats)
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    try:
        if DICOM_SEG in formats:
            from engine.dicom_export import dicom_objects  # highdicom loads in seconds: only when asked

            objects = dicom_objects(
                result, spec, run, uncertainty_map, uncertainty=uncertainty, probability=probability
            )
            for what, dataset in objects.items():
                path = out_dir / DICOM_FILES[f"dicom_{what}"]
                atomic_write(path, partial(dataset.save_as, enforce_file_format=True), ".dcm")
                written[f"dicom_{what}"] = path
        if SEG_NRRD in formats:
            from engine.segnrrd import save_seg_nrrd

            written["seg_nrrd"] = save_seg_nrrd(
                result.volume, result.segmentation, spec, out_dir / SEG_NRRD_FILE
            )
    except OSError as exc:
        _remove(written.values())
        raise ScanError(f"{out_dir}: could not write ({exc.strerror or exc})") from None
    except ScanError:
        _remove(written.values())
        raise
    return written


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
