"""Where networks compute: the CPU or a CUDA GPU (`auto`: a GPU when torch sees one).

Not the analog device (the simulated PCM chip, `engine.analog.device`): this is the hardware that runs
the simulation. Chips are programmed by aihwkit on the CPU and then read on the compute device; digital
networks, fast analog reads and hardware-aware training run there.

The process default is the environment variable `AIMC_DEVICE` (`auto` when unset), so processes started
by this one (a report's pool, a local Dask cluster's workers) compute where it does; `use_device` sets
it. Parsing a choice needs no torch, so the command line can check `--device` before importing it.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "AIMC_DEVICE"
CHOICES = "auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")

# Slices read together per chip read. On a CPU a batch only saves per-call overhead (small layers);
# larger ones stop fitting in cache. On a GPU a 128x128 U-Net read is launch-bound below tens of slices.
CPU_READ_BATCH = 4
GPU_READ_BATCH = 32


class DeviceError(ValueError):
    """A device choice that is malformed or not present on this machine (one line for the user)."""


def parse_device(text: str) -> str:
    """A checked device choice (`auto`, `cpu`, `cuda`, `cuda:N`), lower-cased; torch is not imported."""
    choice = text.strip().lower()
    if not _PATTERN.fullmatch(choice):
        raise DeviceError(f"device must be {CHOICES}, not {text!r}")
    return choice


def use_device(choice: str | None) -> None:
    """Make `choice` the default device of this process and of the processes it starts (None: keep)."""
    if choice is not None:
        os.environ[DEVICE_ENV] = parse_device(choice)


def default_choice() -> str:
    """The process default: `AIMC_DEVICE`, or `auto`."""
    return parse_device(os.environ.get(DEVICE_ENV) or "auto")


def resolve_device(choice: str | None = None) -> torch.device:
    """The torch device for `choice` (None: the process default). `auto` is the first GPU torch sees,
    else the CPU; asking for a GPU that is not there is a `DeviceError`, never a silent fallback."""
    import torch

    name = default_choice() if choice is None else parse_device(choice)
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name} asked for, but torch sees no CUDA GPU on this machine")
    index = int(name.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {name} asked for, but torch sees {torch.cuda.device_count()} GPU(s)")
    return torch.device("cuda", index)


def available_devices() -> list[str]:
    """Every device this machine offers: `cpu`, then `cuda:0`, `cuda:1`, ... (tests run on each)."""
    import torch

    return [
        "cpu",
        *(f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)),
    ]


def read_batch_size(device: torch.device) -> int:
    """How many slices one chip read takes on `device`."""
    return CPU_READ_BATCH if device.type == "cpu" else GPU_READ_BATCH
