"""File > Export from the session: the files `aimc predict` writes, with what the viewer said about
trusting the result in the summary (the gate's fit of the model, the case verdict, the lesions), and the
reader's part (the voxels they added and removed per label, what they reviewed).

The segmentation written is the reader's (the AI's labels with their edits) unless they ask for the AI's
own; the verdict is always the AI result's, as it judges the AI and not the reader."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.export import PROBABILITY, SEGMENTATION, SUMMARY, UNCERTAINTY, write_results
from engine.export_formats import NIFTI, check_formats, file_names
from engine.findings import lesions
from engine.images2d import is_planar
from engine.instances import INSTANCES, NUCLEI_TABLE
from engine.model_store import ModelSpec
from engine.pipeline import VolumeResult
from engine.run_settings import RunSettings
from engine.volume import ScanError, Volume
from viewer.session.edits import Editor
from viewer.session.gate import Gate
from viewer.session.review import Review
from viewer.session.verdicts import Verdicts, lesion_review

if TYPE_CHECKING:
    from viewer.session.session import ReadingSession

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
    written: VolumeResult | None = None,
) -> dict:
    """`engine.export.write_results`' trust arguments for `result`, as the viewer shows them: lesions (of
    the labels `written`, `result`'s by default) only once the run has ended (`settled`), the verdict of
    `result` computed now if it is not there yet (slow)."""
    return {
        "verdict": verdicts.now(result, spec, run) if settled or not result.complete else NOT_FINISHED,
        "fit": gate.fit(spec.name) if gate is not None else None,
        "lesions": (
            lesions(written or result, map_name, review_above=lesion_review(spec, run.mode, map_name)[0])
            if settled and not is_planar(result.volume)  # a 2D image's objects are nuclei, in pixels
            else None
        ),
    }


def edits_record(editor: Editor, review: Review, spec: ModelSpec, applied: bool, voxel_ml: float) -> dict:
    """summary.json's "edits": whether the segmentation written holds the reader's edits (`applied`), the
    voxels they added and removed per label against the AI's labels, and each review item's decision."""
    names = spec.label_names
    return {
        "applied": applied,
        "labels": {
            names.get(c, str(c)): {
                "added_voxels": added,
                "removed_voxels": removed,
                "added_ml": round(added * voxel_ml, 4),
                "removed_ml": round(removed * voxel_ml, 4),
            }
            for c, (added, removed) in editor.counts(spec.num_classes).items()
        },
        "review": {"progress": review.progress(), "items": review.records(names)},
    }


def write_export(
    session: ReadingSession,
    folder: Path,
    map_name: str,
    uncertainty: bool,
    probability: bool,
    edited: bool,
    formats: Sequence[str] = (NIFTI,),
) -> list[Path]:
    """The session's result on screen written to `folder`: the reader's `edited` labels (else the AI's),
    the chosen maps, and the summary with the model and settings of the AI result, trust and edits."""
    result, run, spec = session.result, session.run, session.spec
    if result is None or run is None or spec is None:
        return []
    written = session.editor.applied(result) if edited else result
    settled = session.settled(result)
    trust = trust_record(result, spec, run, map_name, session.gate, session.verdicts, settled, written)
    edits = edits_record(session.editor, session.review, spec, edited, result.volume.voxel_volume_ml)
    paths = write_results(
        written,
        folder,
        spec,
        run,
        map_name,
        uncertainty=uncertainty,
        probability=probability,
        overwrite=True,  # the export dialog asked before replacing any file (`export_would_replace`)
        formats=formats,
        edits=edits,
        **trust,
    )
    return list(paths.values())
