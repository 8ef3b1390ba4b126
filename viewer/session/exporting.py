"""File > Export from the session: the files `aimc predict` writes, with what the viewer said about
trusting the result in the summary (the gate's fit of the model, the case verdict, the lesions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.export import PROBABILITY, SEGMENTATION, SUMMARY, UNCERTAINTY
from engine.export_formats import NIFTI, check_formats, file_names
from engine.findings import lesions
from engine.images2d import is_planar
from engine.instances import INSTANCES, NUCLEI_TABLE
from engine.model_store import ModelSpec
from engine.pipeline import VolumeResult
from engine.run_settings import RunSettings
from engine.volume import ScanError, Volume
from viewer.session.gate import Gate
from viewer.session.verdicts import Verdicts, lesion_review

NOT_FINISHED = "the run has not finished: no verdict yet"


def would_replace(folder: str | Path, formats: Sequence[str] = (NIFTI,)) -> list[str]:
    """The names of the files an export to `folder` in `formats` would replace."""
    nifti = [SEGMENTATION, UNCERTAINTY, PROBABILITY, INSTANCES, NUCLEI_TABLE] if NIFTI in formats else []
    return [name for name in (*nifti, *file_names(formats), SUMMARY) if (Path(folder) / name).exists()]


def refusal(volume: Volume, formats: Sequence[str]) -> str | None:
    """Why `volume` cannot be exported in `formats` (a DICOM SEG of a scan not read from DICOM), or None."""
    try:
        check_formats(volume, formats)
    except ScanError as exc:
        return str(exc)
    return None


def trust_record(
    result: VolumeResult,
    spec: ModelSpec,
    run: RunSettings,
    map_name: str,
    gate: Gate | None,
    verdicts: Verdicts,
    settled: bool,
) -> dict:
    """`engine.export.write_results`' trust arguments for `result`, as the viewer shows them: lesions only
    once the run has ended (`settled`), the verdict computed now if it is not there yet (slow)."""
    return {
        "verdict": verdicts.now(result, spec, run) if settled or not result.complete else NOT_FINISHED,
        "fit": gate.fit(spec.name) if gate is not None else None,
        "lesions": (
            lesions(result, map_name, review_above=lesion_review(spec, run.mode, map_name)[0])
            if settled and not is_planar(result.volume)  # a 2D image's objects are nuclei, in pixels
            else None
        ),
    }
