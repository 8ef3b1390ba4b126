"""One case of a batch, run where a worker runs it; and the table of all cases.

A `CaseJob` is what crosses the wire: the case, its output folder, the model's name and the run
settings. `run_case` builds the model and chips on the worker (kept across cases by
`engine.executor`), segments the scan through the slice pipeline, adds the gate's fit and the case
verdict where the model has a trust calibration, and writes the outputs with
`engine.export.write_results`. It never raises: a bad case is a "failed" row with one line saying why.

Resuming: a case folder whose summary.json records the same model and settings is complete (the
summary is written last, after the maps), and is skipped unless `overwrite`. Before a case is run
its summary is removed first, so a run that dies half-way never leaves a folder that reads complete,
and the temporary files a killed writer left there are cleared.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.batch import BatchCase
from engine.files import TMP_PREFIX, atomic_write, atomic_write_json
from engine.model_store import ModelError
from engine.run_settings import RunSettings
from engine.volume import ScanError

TABLE_CSV, TABLE_JSON = "cases.csv", "cases.json"
DONE, SKIPPED, FAILED, PENDING = "done", "skipped", "failed", "not run"
_FIXED = ("case", "status", "scan", "output", "model", "mode", "slices")
_TAIL = ("mean_uncertainty", "verdict", "review", "expected_dice", "fits_model", "seconds", "error")


@dataclass(frozen=True)
class CaseJob:
    """One case as a unit of work: plain data, built into a model and chips on the worker."""

    case: BatchCase
    out_dir: str
    model: str  # a model name or folder
    run: RunSettings
    channel: int | None = None
    overwrite: bool = False


def settings_entry(run: RunSettings) -> dict:
    """The settings as summary.json records them (`engine.export.summary`)."""
    return {
        "mode": str(run.mode),
        "mc_samples": run.mc_samples,
        "noise_level": run.noise_level,
        "drift_s": run.drift_s,
        "seed": run.seed,
    }


def _summary_path(out_dir: str | Path) -> Path:
    from engine.export import SUMMARY

    return Path(out_dir) / SUMMARY


def finished_summary(job: CaseJob, model_name: str) -> dict | None:
    """The case's summary.json if its outputs are complete for this model and these settings."""
    from engine.export import PROBABILITY, SEGMENTATION, UNCERTAINTY

    path = _summary_path(job.out_dir)
    try:
        written = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = written.get("model") == model_name and written.get("settings") == settings_entry(job.run)
    maps = all((path.parent / name).is_file() for name in (SEGMENTATION, UNCERTAINTY, PROBABILITY))
    return written if same and maps else None


def row_of(job: CaseJob, status: str, seconds: float, summary: dict | None = None, error: str = "") -> dict:
    """The table's row of a case: its volumes, uncertainty and verdict from its summary where it has one."""
    row: dict = {
        "case": job.case.name,
        "status": status,
        "scan": job.case.source,
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
        return row_of(job, FAILED, time.perf_counter() - t0, error=str(exc) or type(exc).__name__)
    except Exception as exc:  # one bad case never stops the batch
        return row_of(job, FAILED, time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")


def _run(job: CaseJob, progress: Callable[[dict], None] | None, t0: float) -> dict:
    from engine.compatibility import assess
    from engine.executor import local_chips, local_model
    from engine.export import write_results
    from engine.pipeline import VolumeResult, run_slices
    from engine.trust import calibration_for, verdict

    spec = local_model(job.model)
    if not job.overwrite and (done := finished_summary(job, spec.name)) is not None:
        return row_of(job, SKIPPED, time.perf_counter() - t0, done)
    _summary_path(job.out_dir).unlink(missing_ok=True)  # the mark of a complete folder goes first
    for stale in Path(job.out_dir).glob(f"{TMP_PREFIX}*"):  # a killed writer's (one writer per case)
        stale.unlink(missing_ok=True)
    volume = job.case.load(job.channel)
    # Chips are programmed by the pipeline's inference threads, on one torch thread each: a case's
    # result is then the same whatever share of cores its worker has.
    segmenter = local_chips().segmenter(spec, job.run)
    result = VolumeResult.for_model(volume, spec)

    def slice_done(done: int, total: int) -> None:
        if progress is not None:
            progress({"case": job.case.name, "done": done, "total": total})

    for r in run_slices(segmenter, volume, result.axis, progress=slice_done):
        result.add(r)
    result.finalise()
    calibration = calibration_for(spec, job.run.mode)
    judged = (
        verdict(result, spec.preprocessing, calibration)
        if calibration is not None
        else f"no trust calibration for {spec.name} in {job.run.mode} mode"
    )
    fit = assess(volume, spec)
    paths = write_results(
        result, Path(job.out_dir), spec, job.run, verdict=judged, fit=fit, overwrite=job.overwrite
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
