"""File > Export from the session: the files `aimc predict` writes, with what the viewer said about
trusting the result in the summary (the gate's fit of the model, the case verdict, the lesions)."""

from __future__ import annotations

from pathlib import Path

from engine.export import PROBABILITY, SEGMENTATION, SUMMARY, UNCERTAINTY
from engine.findings import lesions
from engine.model_store import ModelSpec
from engine.pipeline import VolumeResult
from engine.run_settings import RunSettings
from viewer.session.gate import Gate
from viewer.session.verdicts import Verdicts, lesion_review

NOT_FINISHED = "the run has not finished: no verdict yet"


def would_replace(folder: str | Path) -> list[str]:
    """The names of the files an export to `folder` would replace."""
    return [
        name for name in (SEGMENTATION, UNCERTAINTY, PROBABILITY, SUMMARY) if (Path(folder) / name).exists()
    ]


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
            if settled
            else None
        ),
    }
