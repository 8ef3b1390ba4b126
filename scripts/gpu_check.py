"""`make gpu-check`: on a machine with a CUDA GPU, check that it computes what the CPU does; time both.

On the bundled LGG sample with the shipped LGG U-Nets, the whole volume is segmented on the CPU and on
the GPU (chips programmed once on the CPU by aihwkit, read on each device) and compared:
- digital: mean foreground probabilities within 1e-3 everywhere, at most 0.1 % of labels differ;
- analog at noise 0 (quantisation, no noise: the same reads up to float rounding, a rare ADC level
  apart): mean absolute probability difference under 1e-3, at most 0.5 % of labels differ;
- analog at noise 1, MC 8 (the GPU draws other noise numbers from the same seeds: same statistics,
  other samples): Dice between the two segmentations at least 0.95, mean entropy within 10 %;
- hardware-aware training: one step of the fast HWA forward and backward from the same weights
  (injected noise off) gives the same loss within 1e-3 and the same input-range gradients within 1 %.
Prints a line per check with its timings; exit status 0 if all pass, 1 if any fails, 2 without a GPU.

`--against cpu` is a dry run for a machine without a GPU: every check runs, the CPU against itself
(the same code path, so the script itself is checked; the tolerances are then trivially met).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.analog.device import DeviceSettings  # noqa: E402
from engine.inference import Segmenter  # noqa: E402
from engine.model_store import find_model  # noqa: E402
from engine.pipeline import VolumeResult, segment_volume  # noqa: E402
from engine.run_settings import RunSettings  # noqa: E402
from engine.volume import load_scan  # noqa: E402

SAMPLE = REPO / "resources" / "samples" / "lgg_sample.nii.gz"


def _timed(fn: Callable[[], VolumeResult], device: torch.device) -> tuple[VolumeResult, float]:
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


def check_volume(model: str, run: RunSettings, gpu: torch.device) -> tuple[bool, str]:
    spec = find_model(model)
    volume = load_scan(SAMPLE)
    results, seconds = {}, {}
    for side, device in (("cpu", torch.device("cpu")), ("cuda", gpu)):  # a dry run: the CPU twice
        segmenter = Segmenter(spec, run, device=device)
        segmenter.program_all()  # programmed (or loaded from the chip store) before the clock starts
        results[side], seconds[side] = _timed(lambda s=segmenter: segment_volume(s, volume), device)
    cpu, cuda = results["cpu"], results["cuda"]
    prob = np.abs(cpu.foreground_probability() - cuda.foreground_probability())
    flipped = float((cpu.segmentation != cuda.segmentation).mean())
    dice = _dice(cpu.segmentation, cuda.segmentation)
    entropy = (float(cpu.maps["entropy"].mean()), float(cuda.maps["entropy"].mean()))
    if run.mode == "digital":
        ok = prob.max() <= 1e-3 and flipped <= 1e-3
    elif run.noise_level == 0:
        ok = prob.mean() <= 1e-3 and flipped <= 5e-3
    else:
        ok = dice >= 0.95 and abs(entropy[1] - entropy[0]) <= 0.1 * max(entropy[0], 1e-6)
    what = f"{model} {run.mode}" + (
        "" if run.mode == "digital" else f" noise {run.noise_level:g} MC {run.mc_samples}"
    )
    return ok, (
        f"{what:45s} CPU {seconds['cpu']:6.2f}s  GPU {seconds['cuda']:6.2f}s  "
        f"max|dp| {prob.max():.2e} mean|dp| {prob.mean():.2e} labels differ {flipped:.2%} "
        f"Dice {dice:.4f} entropy {entropy[0]:.4f}/{entropy[1]:.4f}"
    )


def check_hwa_step(gpu: torch.device) -> tuple[bool, str]:
    from monai.losses import DiceCELoss

    from training.train import hwa_start

    base = find_model("lgg_unet_digital")
    settings = DeviceSettings(train_weight_noise=0.0, out_noise=0.0)
    torch.manual_seed(0)
    x = torch.rand(4, 1, 128, 128)
    y = (x > 0.7).long()
    out = {}
    for side, device in (("cpu", torch.device("cpu")), ("cuda", gpu)):  # a dry run: the CPU twice
        model = hwa_start(base, settings).to(device).train()
        t0 = time.perf_counter()
        loss = DiceCELoss(to_onehot_y=True, softmax=True)(model(x.to(device)), y.to(device))
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        grads = torch.stack(
            [t.input_range.grad.detach().cpu().reshape(()) for _, t in model.named_analog_tiles()]
        )
        out[side] = (float(loss.detach()), grads, time.perf_counter() - t0)
    (l_cpu, g_cpu, t_cpu), (l_gpu, g_gpu, t_gpu) = out["cpu"], out["cuda"]
    rel = float((g_cpu - g_gpu).norm() / g_cpu.norm().clamp_min(1e-12))
    ok = abs(l_cpu - l_gpu) <= 1e-3 and rel <= 0.01
    return ok, (
        f"{'HWA training step, lgg_unet_digital':45s} CPU {t_cpu:6.2f}s  GPU {t_gpu:6.2f}s  "
        f"loss {l_cpu:.5f}/{l_gpu:.5f} input-range gradients differ {rel:.2%}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", default="cuda:0", help="the device to check against the CPU (cpu: a dry run)")
    against = p.parse_args(argv).against
    if against != "cpu" and not torch.cuda.is_available():
        print("gpu-check: torch sees no CUDA GPU on this machine (--against cpu: a dry run)", file=sys.stderr)
        return 2
    gpu = torch.device(against)
    name = torch.cuda.get_device_name(gpu) if gpu.type == "cuda" else "dry run, the CPU against itself"
    print(f"gpu-check: {name}, torch {torch.__version__}, sample {SAMPLE.name}")
    checks = [
        lambda: check_volume("lgg_unet_digital", RunSettings(model="x", mode="digital"), gpu),
        lambda: check_volume("lgg_unet_hwa", RunSettings(model="x", mode="digital"), gpu),
        lambda: check_volume(
            "lgg_unet_digital", RunSettings(model="x", mode="analog", mc_samples=2, noise_level=0.0), gpu
        ),
        lambda: check_volume(
            "lgg_unet_hwa", RunSettings(model="x", mode="analog", mc_samples=8, noise_level=1.0), gpu
        ),
        lambda: check_hwa_step(gpu),
    ]
    failed = 0
    for check in checks:
        ok, line = check()
        failed += not ok
        print(("PASS " if ok else "FAIL ") + line, flush=True)
    print(f"gpu-check: {len(checks) - failed} of {len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
