"""Run a model on 2D slices, digitally or on simulated analog chips, with Monte-Carlo sampling.

What one Monte-Carlo sample is, in analog mode: sample s is a forward pass through chip s, one of
N chips programmed once per (model, noise level, drift time, seed) and cached. Each sample therefore
redraws both sources of device noise: the chip (programming noise, drift coefficients and 1/f read
noise accumulated up to the drift time, which differ from chip to chip) and the read (per-read
output noise of the ADC path, redrawn on every forward). Reads are seeded by (seed, slice, sample),
so a slice gives the same result whichever order the slices are processed in.

A chip is programmed and drifted by aihwkit, then by default read through `engine.analog.fast_layers`
(the same forward as aihwkit's torch tile without its im2col, several times faster; it adds the
optional per-read PCM noise `DeviceSettings.read_noise_per_read`); `simulator="aihwkit"` reads it
through aihwkit's tile instead.

In digital mode the network is exact (floating point, no device): every sample agrees, so one
forward is made. For a hardware-aware model that is its tiles read perfectly (see `_exact_network`).
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from engine.analog.conversion import load_analog, program_chip
from engine.analog.fast_layers import fast_chip
from engine.analog.periphery import per_read_pcm_noise, seeded_reads
from engine.model_store import ANALOG_WEIGHTS, ModelError, ModelSpec, load_digital, load_tensors
from engine.run_settings import Mode, RunSettings, Simulator



class Cancelled(Exception):
    """The run was cancelled; raised between Monte-Carlo samples."""


class Segmenter:
    """A model ready to segment slices under one `RunSettings`. Build once, call per slice."""

    def __init__(self, spec: ModelSpec, run: RunSettings, simulator: Simulator | str = Simulator.FAST) -> None:
        try:
            self.simulator = Simulator(simulator)
        except ValueError:
            raise ValueError(f"simulator must be fast or aihwkit, not {simulator!r}") from None
        self.spec = spec
        self.run = run
        self.digital = self._exact_network(spec)
        self.chips: list[nn.Module] = []
        self._lock = threading.Lock()
        if run.mode is Mode.ANALOG:
            if not spec.has_analog:
                raise ModelError(f"model {spec.name} has no {ANALOG_WEIGHTS}; it cannot run in analog mode")
            self.settings = spec.device.with_(noise_level=run.noise_level, drift_s=run.drift_s)
            self._analog_state = load_tensors(spec.folder / ANALOG_WEIGHTS)
            self._template = load_analog(spec.build(), self._analog_state, self.settings)
        else:
            self.settings = spec.device

    @staticmethod
    def _exact_network(spec: ModelSpec) -> nn.Module:
        """Digital mode: the network in floating point. A hardware-aware model learned its input
        clipping and output scales on the tiles, so its exact form keeps them (perfect tile reads);
        its plain digital conversion, without the clipping, segments far worse."""
        if spec.kind == "hwa" and spec.has_analog:
            return load_analog(spec.build(), load_tensors(spec.folder / ANALOG_WEIGHTS), spec.device, exact=True)
        return load_digital(spec)

    @property
    def samples(self) -> int:
        return self.run.mc_samples if self.run.mode is Mode.ANALOG else 1

    def chip(self, s: int) -> nn.Module:
        """Chip s, programmed on first use (about a quarter of a second for a U-Net)."""
        with self._lock:
            while len(self.chips) <= s:
                k = len(self.chips)
                seed = self.run.seed * 100_003 + k
                if self.simulator is Simulator.FAST:  # the template is programmed in place, the fast chip is a copy
                    chip = fast_chip(program_chip(self._template, self.settings, seed, in_place=True),
                                     per_read_pcm_noise(self.settings))
                else:
                    chip = program_chip(self._template, self.settings, seed)
                self.chips.append(chip)
            return self.chips[s]

    def program_all(self, cancel: threading.Event | None = None) -> None:
        for s in range(self.samples if self.run.mode is Mode.ANALOG else 0):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            self.chip(s)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, slice_index: int = 0, cancel: threading.Event | None = None) -> torch.Tensor:
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
        seed = hash((self.run.seed, slice_index, s)) & 0x7FFF_FFFF
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
