"""Time the viewer's start: seconds from launch to the window, the scan, and the main window with the scan.

    python scripts/viewer_start.py [SCAN] [--runs 3]

Runs `aimc-viewer SCAN --exit-when-shown` in fresh processes (offscreen unless a display is set) and
prints the median of each step over the runs (wall clock from launch, and the CPU time the viewer's
process had used: on a loaded machine the wall clock mostly measures the others), with the machine's
load average: a measurement for the README, not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = ("window", "scan", "main_window", "main_window_scan")


def one_start(scan: str) -> dict[str, tuple[float, float]]:
    env = {**os.environ, "AIMC_LAUNCHED_AT": repr(time.time()), "PYTHONPATH": str(REPO)}
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    out = subprocess.run(
        [sys.executable, "-m", "viewer.app", scan, "--exit-when-shown"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    marks = [line.split() for line in out.stdout.splitlines()]
    return {m[0]: (float(m[1]), float(m[2])) for m in marks if len(m) == 3 and m[0] in STEPS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scan", nargs="?", default=str(REPO / "resources" / "samples" / "lgg_sample.nii.gz"))
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    load = os.getloadavg()[0]
    runs = [one_start(args.scan) for _ in range(args.runs)]
    print(f"viewer start, {args.runs} runs, {os.cpu_count()} CPUs, load average {load:.1f}:")
    for step in STEPS:
        marks = [r[step] for r in runs if step in r]
        if marks:
            wall, cpu = [m[0] for m in marks], [m[1] for m in marks]
            each = ", ".join(f"{t:.2f}" for t in wall)
            print(
                f"  {step:18s} median {statistics.median(wall):6.2f} s wall, "
                f"{statistics.median(cpu):6.2f} s CPU of the process  (wall per run: {each})"
            )


if __name__ == "__main__":
    main()
