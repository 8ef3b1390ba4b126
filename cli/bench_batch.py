"""`aimc bench`'s batch rows: scans per minute of a 10-scan LGG batch, the serial loop against 1 and 2
local Dask workers, side by side in one run.

The scans are 10 different LGG volumes from ../shared/data/lgg when present, else copies of the bundled
sample. Every variant runs the same cases through `engine.batch_run.run_case` into a fresh folder:
the serial loop in this process (`Executor(0)`), then a local cluster of 1 and of 2 workers. A cluster's
start (processes up) is timed apart from the batch; the workers' imports and model loading fall in the
batch, as the serial loop's model loading does.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine.batch import discover
from engine.batch_run import DONE, CaseJob, run_case
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


def _run_variant(executor: Executor, jobs: list[CaseJob]) -> dict:
    t0 = time.perf_counter()
    executor.start()
    t1 = time.perf_counter()
    try:
        rows = [row for _, row in executor.map(run_case, jobs)]
        t2 = time.perf_counter()
    finally:
        executor.close()
    return {
        "start_s": t1 - t0,
        "batch_s": t2 - t1,
        "scans_per_min": 60.0 * len(jobs) / (t2 - t1),
        "slices": sum(r["slices"] or 0 for r in rows),
        "failed": sum(r["status"] != DONE for r in rows),
    }


def bench_batch(
    spec: ModelSpec,
    modes: tuple[str, ...],
    scans: list[Path] | None = None,
    echo: Callable[[str], None] = print,
    variants: dict[str, int] = VARIANTS,
) -> list[dict]:
    """One row per (mode, variant): scans per minute of the batch, the cluster's start apart.
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
            line = []
            for k, (variant, workers) in enumerate(variants.items()):
                out = Path(tmp) / f"{mode}-{k}"
                jobs = [CaseJob(c, str(out / c.name), model, run) for c in cases]
                row = {"mode": mode, "mc": run.mc_samples, "variant": variant, "workers": workers}
                row |= {"scans": len(jobs), "source": source, **_run_variant(Executor(workers), jobs)}
                rows.append(row)
                start = f", start {row['start_s']:.1f}s" if workers else ""
                line.append(f"{variant} {row['scans_per_min']:.1f}/min ({row['batch_s']:.0f}s{start})")
            mc = f" MC {run.mc_samples}" if mode == "analog" else ""
            echo(f"batch of {source}, {spec.name} {mode}{mc}: " + " | ".join(line))
    return rows
