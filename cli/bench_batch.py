"""`aimc bench`'s batch rows: scans per minute of a 10-scan LGG batch, the serial loop against 1 and 2
local Dask workers, side by side in one run.

The scans are 10 different LGG volumes from ../shared/data/lgg when present, else copies of the bundled
sample. Every variant runs the same cases through `engine.batch_run.run_case` into a fresh folder:
the serial loop in this process (`Executor(0)`), then a local cluster of 1 and of 2 workers, in
interleaved rounds (the median is kept: this machine's timings swing). The start is timed apart from
the batch: for a cluster, its processes up and the engine imported in each (torch, MONAI, aihwkit:
seconds); for the serial loop, the same imports in a fresh process, which `aimc predict --workers 0`
pays before its first scan (this process has them already). Model loading falls in the batch.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine.batch import discover
from engine.batch_run import CASE_MODULES, DONE, CaseJob, run_case
from engine.executor import Executor
from engine.model_store import RESOURCES, ModelSpec
from engine.run_settings import RunSettings

BATCH_SCANS = 10
BATCH_MC = 4  # the analog rows: a small Monte-Carlo count
VARIANTS = {"serial": 0, "1 worker": 1, "2 workers": 2}
LGG_IMAGES = RESOURCES.parent.parent / "shared" / "data" / "lgg" / "imagesTr"
SAMPLE = RESOURCES / "samples" / "lgg_sample.nii.gz"


def batch_scans(n: int = BATCH_SCANS) -> tuple[list[Path], str]:
    """n different LGG scans when the shared data is here, else the bundled sample n times; and which."""
    found = sorted(LGG_IMAGES.glob("*.nii.gz"))[:n] if LGG_IMAGES.is_dir() else []
    if len(found) == n:
        return found, f"{n} LGG scans of ../shared/data/lgg"
    return [SAMPLE] * n, f"the bundled LGG sample {n} times"


def _import_seconds() -> float:
    """The engine's imports in a fresh process: what the serial loop of a command pays at its start."""
    code = f"import {', '.join(CASE_MODULES)}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=RESOURCES.parent, capture_output=True, check=True)
    return time.perf_counter() - t0


def _run_variant(executor: Executor, jobs: list[CaseJob]) -> dict:
    t0 = time.perf_counter()
    executor.start()
    executor.preload(CASE_MODULES)
    t1 = time.perf_counter()
    try:
        rows = [row for _, row in executor.map(run_case, jobs)]
        t2 = time.perf_counter()
    finally:
        executor.close()
    return {
        "start_s": t1 - t0 if executor.requested else _import_seconds(),
        "batch_s": t2 - t1,
        "slices": sum(r["slices"] or 0 for r in rows),
        "failed": sum(r["status"] != DONE for r in rows),
    }


def _median_row(runs: list[dict], scans: int) -> dict:
    batch_s = statistics.median(r["batch_s"] for r in runs)
    return {
        "start_s": statistics.median(r["start_s"] for r in runs),
        "batch_s": batch_s,
        "batch_s_each_round": [r["batch_s"] for r in runs],
        "scans_per_min": 60.0 * scans / batch_s,
        "slices": runs[0]["slices"],
        "failed": max(r["failed"] for r in runs),
    }


def bench_batch(
    spec: ModelSpec,
    modes: tuple[str, ...],
    scans: list[Path] | None = None,
    echo: Callable[[str], None] = print,
    variants: dict[str, int] = VARIANTS,
    rounds: int = 2,
) -> list[dict]:
    """One row per (mode, variant): scans per minute of the batch (median of `rounds`), the start apart.
    `variants`: name -> local Dask workers (0: the serial loop in this process)."""
    scans, source = batch_scans() if scans is None else (scans, f"{len(scans)} given scans")
    model = str(spec.folder) if spec.folder is not None else spec.name
    rows = []
    with tempfile.TemporaryDirectory(prefix="aimc-bench-batch-") as tmp:
        inputs = Path(tmp) / "scans"
        inputs.mkdir()
        for k, scan in enumerate(scans):  # copies: the same file named twice would be one case
            shutil.copy(scan, inputs / f"scan{k:02d}_{scan.name}")
        cases = discover([str(inputs)])
        for mode in modes:
            run = RunSettings(model=spec.name, mode=mode, mc_samples=BATCH_MC if mode == "analog" else 1)
            runs: dict[str, list[dict]] = {variant: [] for variant in variants}
            for r in range(rounds):  # interleaved, each into a fresh folder
                for variant, workers in variants.items():
                    out = Path(tmp) / f"{mode}-{variant.replace(' ', '_')}-{r}"
                    jobs = [CaseJob(c, str(out / c.name), model, run) for c in cases]
                    runs[variant].append(_run_variant(Executor(workers), jobs))
            line = []
            for variant, workers in variants.items():
                row = {"mode": mode, "mc": run.mc_samples, "variant": variant, "workers": workers}
                row |= {"scans": len(cases), "source": source, **_median_row(runs[variant], len(cases))}
                rows.append(row)
                timing = f"{row['batch_s']:.0f}s, start {row['start_s']:.1f}s"
                line.append(f"{variant} {row['scans_per_min']:.1f}/min ({timing})")
            mc = f" MC {run.mc_samples}" if mode == "analog" else ""
            echo(f"batch of {source}, {spec.name} {mode}{mc}: " + " | ".join(line))
    return rows
