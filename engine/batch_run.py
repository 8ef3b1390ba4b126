"""One case of a batch, run where a worker runs it; and the table of all cases.

A `CaseJob` is what crosses the wire: the case, its output folder, the model's name (or none: the
model gate chooses per case, as `aimc predict` does for one scan) and the run settings. `run_case`
builds the model and chips on the worker (kept across cases by `engine.executor`), refuses a model that
does not fit the scan unless `force`, segments the scan through the slice pipeline, adds the gate's fit
and the case verdict where the model has a trust calibration, and writes the case's folder as one
output set (`engine.files.OutputSet`, through `engine.export.write_results`). It never raises: a bad
case is a "failed" row with one line saying why.

Resuming: a case folder whose output set is complete (every file its manifest lists, with the hash the
manifest records) and whose summary.json records the same model and settings is skipped unless
`overwrite`. The folder is locked while the case runs, and a run that dies (a killed worker) leaves the
earlier set as it was: the next run finishes or clears what it left and writes the set whole.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine.batch import BatchCase
from engine.files import atomic_write, atomic_write_json, complete_set
from engine.model_store import ModelError
from engine.run_settings import RunSettings
from engine.volume import ScanError

if TYPE_CHECKING:
    from engine.compatibility import Fit
    from engine.model_store import ModelSpec
    from engine.volume import Volume

TABLE_CSV, TABLE_JSON = "cases.csv", "cases.json"
DONE, SKIPPED, FAILED, PENDING = "done", "skipped", "failed", "not run"
# What `run_case` imports when it first runs (torch, MONAI and aihwkit with them): a cluster's workers
# can import them ahead, all at once (`Executor.preload`).
CASE_MODULES = (
    "engine.pipeline",
    "engine.analog.chips",
    "engine.compatibility",
    "engine.export",
    "engine.export_formats",
    "engine.trust",
)
_FIXED = ("case", "status", "scan", "series_uid", "output", "model", "mode", "slices")
_TAIL = ("mean_uncertainty", "verdict", "review", "expected_dice", "fits_model", "seconds", "error")


@dataclass(frozen=True)
class CaseJob:
    """One case as a unit of work: plain data, built into a model and chips on the worker.

    `model`: a model name or folder, or None for the gate's choice per case; `force` runs a named model
    on a scan it does not fit; `formats`: the output formats (`engine.export_formats`)."""

    case: BatchCase
    out_dir: str
    model: str | None
    run: RunSettings
    channel: int | None = None
    overwrite: bool = False
    force: bool = False
    formats: tuple[str, ...] = ("nifti",)


def settings_entry(run: RunSettings) -> dict:
    """The settings as summary.json records them (`engine.export.summary`)."""
    return {
        "mode": str(run.mode),
        "mc_samples": run.mc_samples,
        "noise_level": run.noise_level,
        "drift_s": run.drift_s,
        "seed": run.seed,
    }


def finished_summary(job: CaseJob, model_name: str) -> dict | None:
    """The case's summary.json if its folder holds a complete output set (every file its manifest lists,
    unchanged) of these formats, written by this model with these settings; else None."""
    from engine.export import SUMMARY
    from engine.export_formats import NIFTI, file_names

    files = complete_set(job.out_dir)
    wanted = [SUMMARY, *file_names(job.formats)]
    if NIFTI in job.formats:
        from engine.export import RESULT_FILES

        wanted += RESULT_FILES
    if not all(name in files for name in wanted):
        return None
    try:
        written = json.loads(files[SUMMARY].read_text())
    except (OSError, ValueError):
        return None
    same = written.get("model") == model_name and written.get("settings") == settings_entry(job.run)
    return written if same else None


def row_of(job: CaseJob, status: str, seconds: float, summary: dict | None = None, error: str = "") -> dict:
    """The table's row of a case: its volumes, uncertainty and verdict from its summary where it has one."""
    row: dict = {
        "case": job.case.name,
        "status": status,
        "scan": job.case.source,
        "series_uid": job.case.series_uid,
        "output": job.out_dir,
        "model": summary.get("model") if summary else None,
        "mode": str(job.run.mode),
        "slices": summary.get("slices") if summary else None,
        "volume_ml": {},
        "mean_uncertainty": None,
        "verdict": None,
        "review": None,
        "expected_dice": None,
        "fits_model": None,
        "seconds": round(seconds, 2),
        "error": error,
    }
    if summary:
        row["volume_ml"] = {name: entry["volume_ml"] for name, entry in summary.get("labels", {}).items()}
        row["mean_uncertainty"] = summary.get("mean_uncertainty_in_segmentation")
        verdict = summary.get("verdict") or {}
        if verdict.get("available"):
            row.update(
                verdict=verdict.get("message"),
                review=verdict.get("review"),
                expected_dice=verdict.get("expected_dice"),
            )
        elif verdict:
            row["verdict"] = verdict.get("reason")
        if "gate" in summary:
            row["fits_model"] = summary["gate"].get("fits")
    return row


def pending_row(job: CaseJob) -> dict:
    """A case the batch did not reach (interrupted)."""
    return row_of(job, PENDING, 0.0)


def run_case(job: CaseJob, progress: Callable[[dict], None] | None = None) -> dict:
    """Segment one case and write its outputs, or skip it if they are complete; its table row.

    `progress` receives {"case", "done", "total"} after each slice."""
    t0 = time.perf_counter()
    try:
        return _run(job, progress, t0)
    except (ScanError, ModelError, ValueError, OSError) as exc:
        return row_of(job, FAILED, time.perf_counter() - t0, error=_one_line(str(exc) or type(exc).__name__))
    except Exception as exc:  # one bad case never stops the batch
        return row_of(job, FAILED, time.perf_counter() - t0, error=_one_line(f"{type(exc).__name__}: {exc}"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _model(job: CaseJob, volume: Volume) -> tuple[ModelSpec, Fit]:
    """The case's model and the gate's fit (`engine.compatibility.model_for_scan`), read once per worker."""
    from engine.compatibility import model_for_scan
    from engine.executor import installed_models, local_model

    named = local_model(job.model) if job.model else None
    spec, fit = model_for_scan(volume, named, job.force, [] if named else list(installed_models()))
    return (spec if named or spec.folder is None else local_model(str(spec.folder))), fit


def _run(job: CaseJob, progress: Callable[[dict], None] | None, t0: float) -> dict:
    from engine.executor import local_chips, local_model
    from engine.export import RESULT_FILES, SUMMARY, write_results
    from engine.export_formats import NIFTI, check_formats, file_names
    from engine.files import OutputSet
    from engine.pipeline import VolumeResult, run_slices
    from engine.trust import calibration_for, verdict

    if job.model and not job.overwrite:  # a named model: complete cases are skipped unread
        if (done := finished_summary(job, local_model(job.model).name)) is not None:
            return row_of(job, SKIPPED, time.perf_counter() - t0, done)
    volume = job.case.load(job.channel)
    spec, fit = _model(job, volume)
    check_formats(volume, job.formats)
    with OutputSet(job.out_dir, overwrite=job.overwrite, protect=[job.case.source]) as outputs:
        # under the folder's lock: a case another run completed meanwhile is not redone
        if not job.overwrite and (done := finished_summary(job, spec.name)) is not None:
            return row_of(job, SKIPPED, time.perf_counter() - t0, done)
        outputs.check([*(RESULT_FILES if NIFTI in job.formats else (SUMMARY,)), *file_names(job.formats)])
        # Chips are programmed by the pipeline's inference threads, on one torch thread each: a case's
        # result is then the same whatever share of cores its worker has.
        run = replace(job.run, model=spec.name)
        segmenter = local_chips().segmenter(spec, run)
        result = VolumeResult.for_model(volume, spec)

        def slice_done(done: int, total: int) -> None:
            if progress is not None:
                progress({"case": job.case.name, "done": done, "total": total})

        for r in run_slices(segmenter, volume, result.axis, progress=slice_done):
            result.add(r)
        result.finalise()
        calibration = calibration_for(spec, run.mode)
        judged = (
            verdict(result, spec.preprocessing, calibration)
            if calibration is not None
            else f"no trust calibration for {spec.name} in {run.mode} mode"
        )
        paths = write_results(
            result,
            Path(job.out_dir),
            spec,
            run,
            verdict=judged,
            fit=fit,
            outputs=outputs,
            formats=job.formats,
        )
    return row_of(job, DONE, time.perf_counter() - t0, json.loads(paths["summary"].read_text()))


def _labels(rows: list[dict]) -> list[str]:
    names: list[str] = []
    for row in rows:
        names += [n for n in row["volume_ml"] if n not in names]
    return names


def table_csv(rows: list[dict]) -> str:
    """The table as CSV: one column per label's volume (mL)."""
    labels = _labels(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*_FIXED, *(f"volume_ml_{n}" for n in labels), *_TAIL])
    for row in rows:
        cells = [row[k] for k in _FIXED] + [row["volume_ml"].get(n) for n in labels] + [row[k] for k in _TAIL]
        writer.writerow(["" if c is None else c for c in cells])
    return out.getvalue()


def write_table(rows: list[dict], folder: Path) -> tuple[Path, Path]:
    """cases.csv and cases.json in `folder`, written atomically."""
    text = table_csv(rows)
    csv_path = atomic_write(
        folder / TABLE_CSV, lambda tmp: Path(tmp).write_text(text, errors="backslashreplace"), ".csv"
    )
    return csv_path, atomic_write_json(rows, folder / TABLE_JSON)
