"""Batch prediction on a local Dask cluster of 2 workers, on real scans (slices of the bundled LGG
sample): the same outputs as a serial run, digital and analog; models and chips built once per
worker, torch pinned to each worker's share of the cores; and a worker killed mid-case loses nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.batch import discover
from engine.batch_run import DONE, CaseJob, run_case
from engine.executor import Executor, local_chips, usable_cores
from engine.files import TMP_PREFIX, complete_set
from engine.run_settings import RunSettings

pytestmark = pytest.mark.slow

MAPS = ("seg.nii.gz", "uncertainty.nii.gz", "probability.nii.gz")
RUNS = {
    "digital": RunSettings(model="lgg_unet_digital", mode="digital", mc_samples=1),
    "analog": RunSettings(model="lgg_unet_hwa", mode="analog", mc_samples=2, noise_level=1.0, seed=5),
}


@pytest.fixture(scope="module")
def scans(lgg_case, tmp_path_factory) -> Path:
    """Three real scans: slabs of 3 slices of the LGG sample, through the lesion (labels in labels/)."""
    folder = tmp_path_factory.mktemp("scans")
    (folder / "labels").mkdir()
    image, label = nib.load(str(lgg_case[0])), nib.load(str(lgg_case[1]))
    data, truth = np.asanyarray(image.dataobj), np.asanyarray(label.dataobj)
    for k, first in enumerate((12, 13, 14)):
        for array, path in (
            (data, folder / f"slab{k}.nii.gz"),
            (truth, folder / "labels" / f"slab{k}.nii.gz"),
        ):
            nib.save(nib.Nifti1Image(array[:, :, first : first + 3], image.affine), path)
    return folder


@pytest.fixture(scope="module")
def cluster():
    with Executor(2) as executor:
        yield executor


def _jobs(scans: Path, out: Path, run: RunSettings) -> list[CaseJob]:
    from engine.model_store import find_model

    model = str(find_model(run.model).folder)
    cases = discover([str(scans / "slab*.nii.gz")])
    # force: a 3-slice slab is outside the LGG models' training domain (20..88 slices), so the gate refuses it
    return [CaseJob(c, str(out / c.name), model, run, force=True) for c in cases]


def _serial(jobs: list[CaseJob]) -> None:
    assert [r["status"] for _, r in Executor(0).map(run_case, jobs)] == [DONE] * len(jobs)


def _same_outputs(a: Path, b: Path) -> None:
    for name in MAPS:
        x, y = nib.load(str(a / name)), nib.load(str(b / name))
        assert np.array_equal(np.asanyarray(x.dataobj), np.asanyarray(y.dataobj)), (a.name, name)
        assert np.array_equal(x.affine, y.affine)
    assert not list(b.glob(f"{TMP_PREFIX}*")) and not list(b.glob(".aimc-*"))  # no temporary, staging, commit
    assert complete_set(b), b  # the output set is whole: every file has its manifest's hash


def _worker_state() -> tuple[int, int, int, int]:
    import torch

    chips = local_chips()
    return os.getpid(), torch.get_num_threads(), len(chips), sum(len(s) for s in chips._sets.values())


@pytest.mark.parametrize("mode", list(RUNS))
def test_two_workers_write_what_a_serial_run_writes(mode, scans, cluster, tmp_path):
    run = RUNS[mode]
    _serial(_jobs(scans, tmp_path / "serial", run))
    jobs = _jobs(scans, tmp_path / "dask", run)
    seen: list[dict] = []
    rows = dict(cluster.map(run_case, jobs, seen.append))
    assert [rows[j]["status"] for j in jobs] == [DONE] * 3
    assert {m["case"] for m in seen} == {j.case.name for j in jobs}  # slice progress reached the client
    for job in jobs:
        _same_outputs(tmp_path / "serial" / job.case.name, Path(job.out_dir))
    states = cluster.client.run(_worker_state).values()
    share = max(1, usable_cores() // 2)
    assert all(threads == share for _, threads, _, _ in states)
    # each worker built the model once, and read its chips (MC 2 analog) from one cached chip set
    if mode == "analog":
        assert all(sets <= 2 and chips <= 2 * sets for _, _, sets, chips in states)


def test_evaluation_on_two_workers_equals_the_serial_one(scans, cluster):
    from engine.model_store import find_model
    from training.data import Case
    from training.evaluate import evaluate_runs

    spec = find_model("lgg_unet_hwa")
    cases = [Case(p.stem, p, scans / "labels" / p.name, p.stem) for p in sorted(scans.glob("slab*.nii.gz"))]
    runs = [RUNS["analog"], RunSettings(model=spec.name, mode="analog", mc_samples=2, seed=6)]
    serial = evaluate_runs(spec, cases, "msd", runs, progress=False)
    assert evaluate_runs(spec, cases, "msd", runs, progress=False, executor=cluster) == serial
    assert serial[0] != serial[1]


def test_a_worker_killed_mid_case_loses_nothing(scans, cluster, tmp_path):
    run = RUNS["digital"]
    _serial(_jobs(scans, tmp_path / "serial", run))
    jobs = _jobs(scans, tmp_path / "dask", run)
    started, killed = threading.Event(), []

    def kill_a_busy_worker() -> None:
        started.wait(120)
        for _ in range(400):
            busy = [address for address, keys in cluster.client.processing().items() if keys]
            if busy:
                pid = cluster.pids()[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    rows = dict(cluster.map(run_case, jobs, lambda message: started.set(), return_exceptions=True))
    killer.join()
    assert killed, "no worker was busy to be killed"
    assert [rows[j]["status"] for j in jobs] == [DONE] * 3, rows
    for job in jobs:
        _same_outputs(tmp_path / "serial" / job.case.name, Path(job.out_dir))
    assert killed[0] not in cluster.pids().values()  # that worker was replaced


def _imported(module: str) -> bool:
    import sys

    return module in sys.modules


def test_preload_imports_the_engine_on_every_worker(cluster):
    from engine.batch_run import CASE_MODULES

    module = "engine.dicom_export"  # no case of this file's tests imports the DICOM writer
    assert set(cluster.client.run(_imported, module).values()) == {False}
    cluster.preload((module, *CASE_MODULES))
    assert set(cluster.client.run(_imported, module).values()) == {True}
    assert len(cluster.client.run(_imported, module)) == 2
