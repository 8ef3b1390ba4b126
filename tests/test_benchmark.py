"""`aimc bench` runs end to end and reports every number it promises (timings are not tested)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import cli.benchmark as bench
from engine.model_store import find_model


def test_bench_prints_and_writes_every_number(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "MC", 2)  # the mechanics, not MC 16's minutes
    monkeypatch.setattr(bench, "BATCH_MC", 2)
    monkeypatch.setattr(bench, "BATCH_SLICES", 5)
    lines: list[str] = []
    threads = torch.get_num_threads()
    try:
        report = bench.run_benchmark(
            tmp_path / "bench.json", rounds=1, archs=("unet",), threads=1, echo=lines.append, batch=()
        )
    finally:
        torch.set_num_threads(threads)
    assert set(report["cold_start_s"]) == {
        "aimc --help",
        "aimc models",
        "aimc models --detail",
        'python -c "import torch"',
        'python -c "pass"',
    } and all(v > 0 for v in report["cold_start_s"].values())
    (row,) = report["architectures"]
    shipped = find_model(row["model"])
    assert row["arch"] == "unet" and row["input"] == list(shipped.preprocessing.input_size)
    for key in (
        "digital_ms",
        "aihwkit_ms",
        "ours_ms",
        "noise_ms",
        "mc2_ms_per_slice",
        "program_s_per_chip",
        "fast_chip_mb",
        "peak_rss_mb_so_far",
    ):
        assert row[key] > 0, key
    assert row["floor_ms"] == row["digital_ms"] + row["noise_ms"]
    assert row["noise_draws_per_read"] > 1e5
    volume = report["volume"]
    if "skipped" not in volume:  # the shared LGG data or the bundled sample
        assert volume["slices"] == volume["shape"][2] and volume["mc"] == 2
        assert (
            0
            < volume["slice_on_screen_first_chip_s"]
            < volume["slice_on_screen_all_chips_s"]
            < volume["total_s"]
        )
    batched = report["batched_reads"]
    if "skipped" not in batched:
        assert batched["slices"] == 5 and batched["batch_size"] >= 1 and batched["speed_up"] > 0
        assert batched["program_s_per_chip"] > batched["stored_chip_load_s_per_chip"] > 0
        assert any(line.startswith("batched reads") for line in lines)
    assert "skipped" in report["gpu_volume"] or report["gpu_volume"]["mc"] == 64
    assert json.loads((tmp_path / "bench.json").read_text()) == json.loads(json.dumps(report))
    assert any(line.startswith("unet") for line in lines) and lines[-1].startswith("wrote")


def _state(pid: int) -> str:
    return subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout


def test_a_training_run_is_noted_unless_paused_for_the_bench():
    if bench._training_running():
        pytest.skip("a real training run is going on on this machine")
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "aimc train"])
    try:
        assert bench._training_running()
        fake.send_signal(signal.SIGSTOP)
        for _ in range(100):  # the stop takes effect asynchronously
            if _state(fake.pid).startswith("T"):
                break
            time.sleep(0.05)
        assert not bench._training_running()
    finally:
        fake.kill()
        fake.wait()
