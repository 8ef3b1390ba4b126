"""Run a model on 2D slices, digitally or on simulated analog chips, with Monte-Carlo sampling.

What one Monte-Carlo sample is, in analog mode: sample s is a forward pass through chip s, one of
N chips programmed once per (model, noise level, drift time, seed) and kept (`engine.analog.chips`).
Each sample therefore redraws both sources of device noise: the chip (programming noise, drift
coefficients and 1/f read noise accumulated up to the drift time, which differ from chip to chip)
and the read (per-read output noise of the ADC path, redrawn on every forward). Reads are seeded by
(seed, slice, sample), so a slice gives the same result whichever order the slices are processed in.

A chip is programmed and drifted by aihwkit, then by default read through `engine.analog.fast_layers`
(the same forward as aihwkit's torch tile without its im2col, several times faster; it adds the
optional per-read PCM noise `DeviceSettings.read_noise_per_read`); `simulator="aihwkit"` reads it
through aihwkit's tile instead.

In digital mode the network is exact (floating point, no device): every sample agrees, so one
forward is made. For a hardware-aware model that is its tiles read perfectly (`engine.analog.chips`).
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from engine.analog.chips import ChipKey, ChipSet, read_seed
from engine.analog.device import DeviceSettings
from engine.analog.periphery import seeded_reads
from engine.model_store import ModelSpec
from engine.run_settings import Mode, RunSettings, Simulator


class Cancelled(Exception):
    """The run was cancelled; raised between Monte-Carlo samples."""


class Segmenter:
    """A model ready to segment slices under one `RunSettings`. Build once, call per slice.

    Its networks and chips are a `ChipSet`: its own, or one shared through a `ChipCache` with every
    segmenter of the same `ChipKey` (the same chips, whatever the number of samples).
    """

    def __init__(
        self,
        spec: ModelSpec,
        run: RunSettings,
        simulator: Simulator | str = Simulator.FAST,
        chips: ChipSet | None = None,
    ) -> None:
        try:
            self.simulator = Simulator(simulator)
        except ValueError:
            raise ValueError(f"simulator must be fast or aihwkit, not {simulator!r}") from None
        key = ChipKey.of(spec, run, self.simulator)
        if chips is not None and chips.key != key:
            raise ValueError(f"chips programmed for {chips.key}, not for {key}")
        self.spec = spec
        self.run = run
        self.chip_set = chips if chips is not None else ChipSet(spec, key)

    @property
    def digital(self) -> nn.Module:
        """The exact network (digital mode, and the reference of analog reads)."""
        return self.chip_set.digital

    @property
    def settings(self) -> DeviceSettings:
        return self.chip_set.settings

    @property
    def chips(self) -> list[nn.Module]:
        """The chips programmed so far (shared with every segmenter of the same chip set)."""
        return self.chip_set.chips

    @property
    def samples(self) -> int:
        return self.run.mc_samples if self.run.mode is Mode.ANALOG else 1

    def chip(self, s: int) -> nn.Module:
        """Chip s, programmed on first use."""
        return self.chip_set.chip(s)

    def program_all(self, cancel: threading.Event | None = None) -> None:
        for s in range(self.samples if self.run.mode is Mode.ANALOG else 0):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            self.chip(s)

    @torch.no_grad()
    def predict(
        self, x: torch.Tensor, slice_index: int = 0, cancel: threading.Event | None = None
    ) -> torch.Tensor:
        """(1, C_in, h, w) input -> (S, C, h, w) softmax samples."""
        if self.run.mode is Mode.DIGITAL:
            return torch.softmax(self.digital(x), 1)
        out = []
        for s in range(self.samples):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            out.append(self.read(x, slice_index, s))
        return torch.cat(out)

    @torch.no_grad()
    def read(self, x: torch.Tensor, slice_index: int, s: int) -> torch.Tensor:
        """Sample s of a slice: softmax of one read of chip s (programmed first if need be), seeded by
        (run seed, slice, sample), so a slice's samples are the same in whatever order, and on
        whatever thread, they are read."""
        seed = read_seed(self.run.seed, slice_index, s)
        chip = self.chip(s)
        if self.simulator is Simulator.FAST:
            with seeded_reads(seed):
                return torch.softmax(chip(x), 1)
        torch.manual_seed(seed)  # aihwkit's tile draws from torch's global generator
        return torch.softmax(chip(x), 1)

    @property
    def concurrent_reads(self) -> bool:
        """Whether threads may read slices at once (aihwkit's tile draws from the global generator)."""
        return self.run.mode is Mode.DIGITAL or self.simulator is Simulator.FAST
