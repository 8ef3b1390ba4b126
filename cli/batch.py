"""`aimc predict` over many scans, and the executor options shared by predict, evaluate and report.

Inputs are found by `engine.batch.discover`; each case runs as one unit through `engine.executor`
(`engine.batch_run.run_case`) and gets its own folder under --out; the table of all cases is
OUT/cases.csv and OUT/cases.json, written when the batch ends (also when it is interrupted).

Exit status of a batch: 0 when every case is done or skipped; otherwise the number of failed cases
(at most 100). Problems before any case runs (no scans found, an unknown model, an unreachable
scheduler) are one line on stderr and exit status 2, as for a single scan.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.executor import Executor

MAX_EXIT_FAILED = 100


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """--workers and --scheduler: where the independent units of a command run."""
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local Dask workers, one process and one thread each (default: one per core; "
        "0: run everything in this process)",
    )
    p.add_argument("--scheduler", help="an existing Dask cluster to run on, tcp://HOST:PORT")


def add_batch_options(p: argparse.ArgumentParser) -> None:
    """A batch's own options (`--overwrite` is predict's: it also redoes a batch's complete cases)."""
    add_executor_options(p)


def executor_of(args: argparse.Namespace) -> Executor:
    from engine.executor import Executor

    return Executor(args.workers, args.scheduler)


def is_batch(args: argparse.Namespace) -> bool:
    """More than one scan, or an input that names several (a folder, a pattern, a list, a dataset)."""
    from engine.batch import is_single_scan

    return not is_single_scan(args.scan)


class _Bars:
    """Two progress bars: cases, and the slices of the cases running (wherever they run)."""

    def __init__(self, cases: int, disable: bool) -> None:
        from tqdm import tqdm

        self.cases = tqdm(total=cases, unit="case", desc="cases", position=0, disable=disable)
        self.slices = tqdm(total=0, unit="slice", desc="slices", position=1, disable=disable)
        self._done: dict[str, int] = {}

    def progress(self, message: dict) -> None:
        case, done, total = message["case"], int(message["done"]), int(message["total"])
        if case not in self._done:
            self._done[case] = 0
            self.slices.total += total
            self.slices.refresh()
        if done > self._done[case]:  # a case redone after a worker died counts once
            self.slices.update(done - self._done[case])
            self._done[case] = done

    def close(self) -> None:
        self.slices.close()
        self.cases.close()


def predict_batch(args: argparse.Namespace) -> int:
    from cli.main import predict_settings
    from engine.batch import discover
    from engine.batch_run import FAILED, CaseJob, pending_row, row_of, run_case, write_table
    from engine.export_formats import NIFTI, parse_formats
    from engine.model_store import find_model

    formats = parse_formats(args.format or [NIFTI])  # a ValueError: one line, before any case
    spec = find_model(args.model) if args.model else None  # None: the model gate chooses per case
    run = predict_settings(args, spec.name if spec is not None else "chosen per case")
    out = Path(args.out)
    cases = discover(args.scan, exclude=out)
    model = None if spec is None else str(spec.folder) if spec.folder is not None else spec.name
    jobs = [
        CaseJob(c, str(out / c.name), model, run, args.channel, args.overwrite, args.force, formats)
        for c in cases
    ]
    rows = {job.case.name: pending_row(job) for job in jobs}
    bars = _Bars(len(jobs), disable=args.quiet or not sys.stderr.isatty())
    executor = executor_of(args)
    try:
        with executor:
            if not args.quiet:
                which = spec.name if spec is not None else "the model the gate chooses per case"
                print(f"{len(jobs)} cases, {which}, {run.mode}, {executor.describe()}", file=sys.stderr)
            for job, row in executor.map(run_case, jobs, bars.progress, return_exceptions=True):
                if isinstance(row, BaseException):  # the unit itself was lost (workers kept dying)
                    row = row_of(job, FAILED, 0.0, error=f"{type(row).__name__}: {row}")
                rows[job.case.name] = row
                bars.cases.update(1)
                if row["status"] == FAILED:
                    print(f"aimc: {job.case.name} failed: {row['error']}", file=sys.stderr)
    finally:
        bars.close()
        table = list(rows.values())
        csv_path, _ = write_table(table, out)
    counts = {s: sum(r["status"] == s for r in table) for s in ("done", "skipped", "failed")}
    if not args.quiet:
        print(
            f"{len(table)} cases: {counts['done']} done, {counts['skipped']} skipped, "
            f"{counts['failed']} failed; table {csv_path}"
        )
    return min(counts["failed"], MAX_EXIT_FAILED)
