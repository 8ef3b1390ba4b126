"""`aimc bench`: digital, aihwkit's torch tile and the fast analog path, timed side by side in one run.

Per architecture, at the shipped input size: ms per forward (one Monte-Carlo sample) digital,
through aihwkit's tile and through `engine.analog.fast_layers`, measured in interleaved rounds so that
background load hits them alike; MC-16 ms per slice through the `Segmenter`; the programming
cost per chip; the floor under any exact simulation of a read: the digital forward plus drawing the
read's Gaussian noise numbers (`noise_draws_per_read`) and adding them, as aihwkit's tile does too;
after the U-Net, a whole LGG volume at MC 16 from cold, as the viewer runs it (`bench_volume`); the
peak memory of the process (after the U-Net and the volume, then after each other architecture);
the batch rows (`cli.bench_batch`): scans per minute of a 10-scan LGG batch, serial against 1 and 2
local Dask workers, with the U-Net.
First, the cold start of the command line (`bench_cold_start`): `aimc --help`, `aimc models` and
`aimc models --detail` in fresh processes, beside `python -c "import torch"`, the cost they avoid.
Then the per-slice throughput of the U-Net with batched chip reads against one slice per read
(`bench_batched_reads`) and, on a GPU, a whole LGG volume at MC 64 (`bench_gpu_volume`).
An architecture without a shipped model is built with `default_arguments(arch, 1, 2, 128)`,
randomly initialised and calibrated on random inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from cli.bench_batch import bench_batch
from engine.analog.chip_store import DIR_ENV
from engine.analog.conversion import calibrated_analog
from engine.analog.device import DeviceSettings
from engine.analog.periphery import add_gaussian_, noise_draws_per_read
from engine.architectures import ARCHITECTURES, default_arguments
from engine.compute_device import resolve_device
from engine.inference import Segmenter
from engine.model_store import RESOURCES, Label, ModelSpec, list_models, read_spec, save_model
from engine.pipeline import preview_while_programming, run_slices, segment_volume
from engine.preprocessing import Preprocessing, normalise_volume, slice_count
from engine.run_settings import Mode, RunSettings
from engine.volume import load_scan

MC = 16
VOLUMES = (
    RESOURCES.parent.parent / "shared" / "data" / "lgg" / "imagesTr" / "lgg_002.nii.gz",
    RESOURCES / "samples" / "lgg_sample.nii.gz",
)


@contextlib.contextmanager
def _scratch_chip_store(scratch: Path) -> Iterator[None]:
    """Chips programmed during the bench go to an empty store of its own: timings from cold stay cold,
    and the user's store is left as it was."""
    previous = os.environ.get(DIR_ENV)
    os.environ[DIR_ENV] = str(scratch / "chips")
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DIR_ENV, None)
        else:
            os.environ[DIR_ENV] = previous


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _training_running() -> bool:
    """A training run of this project steals a core; say so next to the numbers (one paused with
    SIGSTOP for the bench does not)."""
    pattern = r"training\.train|aimc train|cli(\.main)? train"
    try:
        pids = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
        if not pids:
            return False
        states = subprocess.run(["ps", "-o", "stat=", "-p", ",".join(pids)], capture_output=True, text=True)
    except OSError:
        return False
    return any(not state.startswith("T") for state in states.stdout.split())


def bench_cold_start(rounds: int = 5) -> dict[str, float]:
    """Median wall seconds of each listing command in a fresh Python process (imports included), in
    interleaved rounds, beside importing torch alone (what every command paid before imports were lazy)
    and the bare interpreter (the floor)."""
    python = [sys.executable]
    detail = next(iter(s.name for s in list_models()), "lgg_unet_hwa")
    commands = {
        "aimc --help": [*python, "-m", "cli.main", "--help"],
        "aimc models": [*python, "-m", "cli.main", "models"],
        "aimc models --detail": [*python, "-m", "cli.main", "models", "--detail", detail],
        'python -c "import torch"': [*python, "-c", "import torch"],
        'python -c "pass"': [*python, "-c", "pass"],  # the interpreter alone: the floor
    }
    env = {**os.environ, "PYTHONPATH": str(RESOURCES.parent)}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, cwd=RESOURCES.parent, capture_output=True, check=True)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_spec(arch: str, scratch: Path) -> tuple[ModelSpec, bool]:
    """The shipped model of `arch` (analog weights included) or a calibrated random one; and which.

    A digitally trained model is preferred: its digital mode is the plain network, the baseline. (An HWA
    model's digital mode reads its aihwkit tiles exactly, as slow as aihwkit's analog forward.)"""
    shipped = [s for s in list_models() if s.architecture == arch and s.has_analog]
    if shipped:
        return min(shipped, key=lambda s: ("lgg" not in s.name, s.kind != "digital", s.name)), True
    torch.manual_seed(0)
    spec = ModelSpec(
        f"random_{arch}",
        arch,
        default_arguments(arch, 1, 2, 128),
        Preprocessing(input_size=(128, 128)),
        [Label(0, "background", (0, 0, 0)), Label(1, "foreground", (255, 0, 0))],
        "digital",
        DeviceSettings(),
    )
    net = spec.build().eval()
    analog = calibrated_analog(net, spec.device, torch.rand(8, 1, 128, 128), batch_size=8)
    save_model(spec, scratch / spec.name, net, analog)
    return read_spec(scratch / spec.name), False


def _interleaved_ms(fns: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, float]:
    """Median ms per call of each function, timed in alternating rounds (n calls of each per round)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn, _ in fns.values():
            fn()  # warm-up
        for _ in range(rounds):
            for name, (fn, n) in fns.items():
                for _ in range(n):
                    t0 = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _chip_mb(chip: torch.nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in [*chip.parameters(), *chip.buffers()]) / 2**20


def bench_architecture(spec: ModelSpec, shipped: bool, rounds: int) -> dict:
    h, w = spec.preprocessing.input_size
    x = torch.rand(1, spec.preprocessing.in_channels, h, w)
    run = RunSettings(model=spec.name, mode=Mode.ANALOG, mc_samples=MC)
    fast = Segmenter(spec, run)
    reference = Segmenter(spec, run, simulator="aihwkit")
    t0 = time.perf_counter()
    fast.program_all()
    program_s = (time.perf_counter() - t0) / MC
    digital, aihwkit_chip, fast_chip = fast.digital, reference.chip(0), fast.chip(0)
    draws = torch.empty(noise_draws_per_read(fast_chip, x))
    ms = _interleaved_ms(
        {
            "digital": (lambda: digital(x), 3),
            "aihwkit": (lambda: aihwkit_chip(x), 1),
            "ours": (lambda: fast_chip(x), 3),
            "noise": (lambda: add_gaussian_(draws, 1.0), 3),
        },
        rounds,
    )
    floor = ms["digital"] + ms["noise"]
    mc = _interleaved_ms({"mc": (lambda: fast.predict(x, 0), 1)}, 3)["mc"]
    return {
        "arch": spec.architecture,
        "model": spec.name,
        "shipped": shipped,
        "input": [h, w],
        "digital_ms": ms["digital"],
        "aihwkit_ms": ms["aihwkit"],
        "ours_ms": ms["ours"],
        "ours_over_digital": ms["ours"] / ms["digital"],
        "aihwkit_over_ours": ms["aihwkit"] / ms["ours"],
        "noise_draws_per_read": draws.numel(),
        "noise_ms": ms["noise"],
        "floor_ms": floor,
        "floor_over_digital": floor / ms["digital"],
        "aihwkit_over_floor": ms["aihwkit"] / floor,
        f"mc{MC}_ms_per_slice": mc,
        "program_s_per_chip": program_s,
        "fast_chip_mb": _chip_mb(fast_chip),
        "peak_rss_mb_so_far": _peak_rss_mb(),
    }


def bench_volume(spec: ModelSpec) -> dict:
    """A whole LGG volume at MC 16 from cold, as the viewer runs it: the slice on screen (the middle one)
    is read with each chip as it is programmed, then the pipeline segments every slice."""
    path = next((p for p in VOLUMES if p.exists()), None)
    if path is None:
        return {"skipped": "no LGG volume found"}
    volume = load_scan(path)
    segmenter = Segmenter(spec, RunSettings(model=spec.name, mode=Mode.ANALOG, mc_samples=MC))
    middle = slice_count(volume.shape, spec.preprocessing.slice_axis) // 2
    t0 = time.perf_counter()
    normalised = normalise_volume(volume.data, spec.preprocessing)
    first_sight = 0.0
    for read, _ in preview_while_programming(segmenter, volume, middle, normalised=normalised):
        if read == 1:
            first_sight = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = segment_volume(segmenter, volume, normalised=normalised)
    t2 = time.perf_counter()
    slices = len(result.seconds)
    return {
        "volume": path.name,
        "shape": list(volume.shape),
        "model": spec.name,
        "slices": slices,
        "mc": MC,
        "slice_on_screen_first_chip_s": first_sight,
        "slice_on_screen_all_chips_s": t1 - t0,
        "segment_s": t2 - t1,
        "s_per_slice": (t2 - t1) / slices,
        "total_s": t2 - t0,
        "peak_rss_mb_so_far": _peak_rss_mb(),
    }


BATCH_MC = 8
BATCH_SLICES = 16
BATCH_SEED = 1
GPU_MC = 64


def bench_batched_reads(spec: ModelSpec, rounds: int = 2) -> dict:
    """Slices per second through the pipeline at MC 8 on the compute device, each chip read taking one
    slice against a batch sized for the device, in alternating rounds over the same slices (chips
    programmed first)."""
    path = next((p for p in VOLUMES if p.exists()), None)
    if path is None:
        return {"skipped": "no LGG volume found"}
    volume = load_scan(path)
    # a seed of its own (the others use the default 0): their chips are in the chip store already
    run = RunSettings(model=spec.name, mode=Mode.ANALOG, mc_samples=BATCH_MC, seed=BATCH_SEED)
    start = time.perf_counter()
    Segmenter(spec, run).program_all()  # programmed and stored in the (empty) chip store
    programmed = time.perf_counter()
    segmenter = Segmenter(spec, run)
    segmenter.program_all()  # a reopened scan: the chips from the store
    loaded = time.perf_counter()
    n = slice_count(volume.shape, spec.preprocessing.slice_axis)
    first = max(0, n // 2 - BATCH_SLICES // 2)
    indices = list(range(first, min(n, first + BATCH_SLICES)))
    normalised = normalise_volume(volume.data, spec.preprocessing)
    sizes = {"one_slice_per_read": 1, "batched": segmenter.batch_size}
    seconds: dict[str, list[float]] = {k: [] for k in sizes}
    for _ in range(rounds):
        for name, size in sizes.items():
            t0 = time.perf_counter()
            for _ in run_slices(segmenter, volume, indices=indices, normalised=normalised, batch_size=size):
                pass
            seconds[name].append(time.perf_counter() - t0)
    rates = {k: len(indices) / statistics.median(v) for k, v in seconds.items()}
    return {
        "volume": path.name,
        "model": spec.name,
        "device": str(segmenter.device),
        "mc": BATCH_MC,
        "slices": len(indices),
        "batch_size": sizes["batched"],
        "slices_per_s_one_per_read": rates["one_slice_per_read"],
        "slices_per_s_batched": rates["batched"],
        "speed_up": rates["batched"] / rates["one_slice_per_read"],
        "program_s_per_chip": (programmed - start) / BATCH_MC,
        "stored_chip_load_s_per_chip": (loaded - programmed) / BATCH_MC,
    }


def bench_gpu_volume(spec: ModelSpec) -> dict:
    """A whole LGG volume at MC 64 on the GPU (chips programmed on the CPU first, or loaded from the
    chip store), where the process's device is one."""
    device = resolve_device()
    path = next((p for p in VOLUMES if p.exists()), None)
    if device.type != "cuda" or path is None:
        return {"skipped": "no GPU" if device.type != "cuda" else "no LGG volume found"}
    volume = load_scan(path)
    segmenter = Segmenter(spec, RunSettings(model=spec.name, mode=Mode.ANALOG, mc_samples=GPU_MC))
    t0 = time.perf_counter()
    segmenter.program_all()
    t1 = time.perf_counter()
    result = segment_volume(segmenter, volume)
    torch.cuda.synchronize(device)
    t2 = time.perf_counter()
    return {
        "volume": path.name,
        "model": spec.name,
        "device": torch.cuda.get_device_name(device),
        "mc": GPU_MC,
        "slices": len(result.seconds),
        "chips_s": t1 - t0,
        "segment_s": t2 - t1,
        "slices_per_s": len(result.seconds) / (t2 - t1),
    }


def run_benchmark(
    json_path: Path,
    rounds: int = 5,
    archs: tuple[str, ...] = ARCHITECTURES,
    threads: int | None = None,
    echo: Callable[[str], None] = print,
    cold_start_only: bool = False,
    batch: tuple[str, ...] = ("digital",),
) -> dict:
    if threads is not None:
        torch.set_num_threads(threads)
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "training_running": _training_running(),
        "load_average_1min": os.getloadavg()[0],
    }
    training = ", a training run is using a core" if env["training_running"] else ""
    echo(
        f"aimc bench: torch {env['torch']}, {env['threads']} threads on {env['cpus']} CPUs, load average "
        f"{env['load_average_1min']:.1f}{training}"
    )
    cold = bench_cold_start(rounds)
    echo(
        "cold start, fresh process, median of "
        + f"{rounds}: "
        + ", ".join(f"{k} {v:.2f}s" for k, v in cold.items())
    )
    if cold_start_only:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"environment": env, "cold_start_s": cold}, indent=1))
        return {"environment": env, "cold_start_s": cold}
    echo(
        f"{'arch':10s} {'model':20s} {'input':>8s} {'digital':>8s} {'aihwkit':>8s} {'ours':>7s} "
        f"{'ours/dig':>8s} {'aihw/ours':>9s} {'draws':>6s} {'floor':>7s} {'floor/dig':>9s} "
        f"{'aihw/floor':>10s} {'MC16/slice':>10s} {'prog/chip':>9s} {'chip MB':>7s}"
    )
    rows, volume, batch_rows = [], {"skipped": "U-Net not benchmarked"}, []
    batched = gpu = volume
    with tempfile.TemporaryDirectory(prefix="aimc-bench-") as scratch, _scratch_chip_store(Path(scratch)):
        for arch in archs:
            spec, shipped = bench_spec(arch, Path(scratch))
            row = bench_architecture(spec, shipped, rounds)
            rows.append(row)
            if arch == "unet":  # before the others, so that its peak memory is the product's
                volume = bench_volume(spec)
                batch_rows = bench_batch(spec, batch, echo=echo) if batch else []
                batched, gpu = bench_batched_reads(spec), bench_gpu_volume(spec)
            name = spec.name + ("" if shipped else " *")
            echo(
                f"{arch:10s} {name:20s} {'x'.join(map(str, row['input'])):>8s} "
                f"{row['digital_ms']:6.1f}ms {row['aihwkit_ms']:6.1f}ms {row['ours_ms']:5.1f}ms "
                f"{row['ours_over_digital']:7.2f}x {row['aihwkit_over_ours']:8.1f}x "
                f"{row['noise_draws_per_read'] / 1e6:5.2f}M {row['floor_ms']:5.1f}ms "
                f"{row['floor_over_digital']:8.2f}x "
                f"{row['aihwkit_over_floor']:9.1f}x {row[f'mc{MC}_ms_per_slice']:8.0f}ms "
                f"{row['program_s_per_chip']:8.2f}s {row['fast_chip_mb']:7.1f}"
            )
        echo(
            "draws: Gaussian numbers per read; "
            "floor: digital + drawing them, under any exact simulator of the read"
        )
        if any(not r["shipped"] for r in rows):
            echo("* no shipped model: random weights, input ranges calibrated on random inputs")
    if "skipped" not in batched:
        echo(
            f"batched reads, {batched['model']} on {batched['device']}, MC {batched['mc']}, "
            f"{batched['slices']} slices of {batched['volume']}: one slice per read "
            f"{batched['slices_per_s_one_per_read']:.2f} slices/s, {batched['batch_size']} per read "
            f"{batched['slices_per_s_batched']:.2f} slices/s ({batched['speed_up']:.2f}x); a chip "
            f"programmed {batched['program_s_per_chip']:.2f}s, loaded from the chip store "
            f"{batched['stored_chip_load_s_per_chip']:.3f}s"
        )
    if "skipped" not in gpu:
        echo(
            f"GPU {gpu['device']}: {gpu['volume']} at MC {gpu['mc']}, {gpu['slices']} slices in "
            f"{gpu['segment_s']:.1f}s ({gpu['slices_per_s']:.1f} slices/s), "
            f"after {gpu['chips_s']:.1f}s of chips"
        )
    if "skipped" not in volume:
        echo(
            f"volume {volume['volume']} {'x'.join(map(str, volume['shape']))}, {volume['slices']} slices, "
            f"MC {MC}, {volume['model']}, from cold: slice on screen after "
            f"{volume['slice_on_screen_first_chip_s']:.2f}s (1 chip), "
            f"at MC {MC} after {volume['slice_on_screen_all_chips_s']:.1f}s (every chip programmed); "
            f"then {volume['segment_s']:.1f}s for the volume ({volume['s_per_slice']:.2f}s per slice), "
            f"total {volume['total_s']:.1f}s; peak memory so far {volume['peak_rss_mb_so_far']:.0f} MB"
        )
    env["load_average_1min_at_end"] = os.getloadavg()[0]
    report = {
        "environment": env,
        "cold_start_s": cold,
        "architectures": rows,
        "volume": volume,
        "batch": batch_rows,
        "batched_reads": batched,
        "gpu_volume": gpu,
        "peak_rss_mb": _peak_rss_mb(),
    }
    echo(
        "peak memory (RSS) of the whole run, with the random models' calibration: "
        f"{report['peak_rss_mb']:.0f} MB"
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1))
    echo(f"wrote {json_path}")
    return report
