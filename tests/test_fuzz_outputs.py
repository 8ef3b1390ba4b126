"""Signals while outputs are written over an earlier result, and two runs on one folder (`make fuzz`).

Whatever moment a run is interrupted at (SIGINT, SIGTERM, SIGKILL), the folder holds the earlier set
or the new one, whole; where SIGKILL lands in the microseconds of moving a committed set into place,
the next run on the folder finishes it first. The user's own file is never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cli.main import main
from engine.files import COMMIT, OutputSet, complete_set
from tests.conftest import REPO
from tests.corpus import tiny_scan

pytestmark = pytest.mark.fuzz
SHAPE = (192, 192, 48)  # large enough that writing the maps takes a moment


def _aimc(scan, out, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "predict", str(scan), "--model", str(kwargs.pop("model")),
         "--mode", "digital", "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )  # fmt: skip


def _scanned(out) -> str:
    files = complete_set(out)
    assert files, f"no complete set in {sorted(p.name for p in out.iterdir())}"
    return json.loads(files["summary.json"].read_text())["scan"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    return [str(tiny_scan(folder / f"scan{k}.nii.gz", SHAPE, seed=k)) for k in (1, 2)]


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.5])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_signal_while_writing_leaves_the_old_set_or_the_new_one_whole(
    small_model, scans, tmp_path, sig, delay
):
    out = tmp_path / "out"
    assert main(["predict", scans[0], "--model", str(small_model.folder), "--mode", "digital",
                 "--out", str(out), "--quiet"]) == 0  # fmt: skip
    (out / "reference_by_dr_x.nii.gz").write_text("a manual segmentation")
    proc = _aimc(scans[1], out, model=small_model.folder)
    try:
        deadline = time.monotonic() + 900  # a loaded machine takes minutes to import torch
        while not any(p.name.startswith(".aimc-staging-") for p in out.iterdir()) and proc.poll() is None:
            assert time.monotonic() < deadline, "the run did not start writing"
            time.sleep(0.005)
        time.sleep(delay)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err, err
    if proc.returncode == 0:  # it finished before the signal
        assert _scanned(out) == scans[1]
    elif not (out / COMMIT).exists():
        assert _scanned(out) in scans  # the earlier set or the new one, whole
    with OutputSet(out):  # what the next run does first
        pass
    assert _scanned(out) in scans
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert (out / "reference_by_dr_x.nii.gz").read_text() == "a manual segmentation"


def test_a_second_run_on_a_folder_in_use_is_refused(small_model, scans, tmp_path):
    out = tmp_path / "out"
    first = _aimc(scans[0], out, model=small_model.folder)
    assert first.stderr is not None
    line = first.stderr.readline()  # the model line: printed holding the folder
    assert line.startswith("aimc: model"), line
    second = _aimc(scans[1], out, model=small_model.folder)
    _, err = second.communicate(timeout=900)
    assert second.returncode == 2 and len(err.strip().splitlines()) == 1 and "another aimc run" in err, err
    first.communicate(timeout=900)
    assert first.returncode == 0 and _scanned(out) == scans[0]
