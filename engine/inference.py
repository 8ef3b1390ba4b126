"""Run a model on 2D slices, digitally or on simulated analog chips, with Monte-Carlo sampling.

What one Monte-Carlo sample is, in analog mode: sample s is a forward pass through chip s, one of
N chips programmed once per (model, noise level, drift time, seed) and kept (`engine.analog.chips`).
Each sample therefore redraws both sources of device noise: the chip (programming noise, drift
coefficients and 1/f read noise accumulated up to the drift time, which differ from chip to chip)
and the read (per-read output noise of the ADC path, redrawn on every forward). Reads are seeded by
(seed, slice, sample), so a slice gives the same result whichever order the slices are processed in,
and whichever batch it is read in: `predict_batch` reads several slices per chip read, each slice's
noise drawn from its own generator (`engine.analog.periphery.seeded_reads`).

Networks and chips compute on a device (`engine.compute_device`: the CPU or a GPU); inputs go there and
the samples come back to the CPU.

A chip is programmed and drifted by aihwkit, then by default read through `engine.analog.fast_layers`
(the same forward as aihwkit's torch tile without its im2col, several times faster; it adds the
optional per-read PCM noise `DeviceSettings.read_noise_per_read`); `simulator="aihwkit"` reads it
through aihwkit's tile instead.

In digital mode the network is exact (floating point, no device): every sample agrees, so one
forward is made. For a hardware-aware model that is its tiles read perfectly (`engine.analog.chips`).

A model trained on patches smaller than its slices may read better patch by patch: with
`ModelSpec.sliding_window` (chosen on validation in `training.postprocessing`) each slice is read as
overlapping windows of that size, MONAI's sliding-window inference blending their logits. On a chip
the windows of one slice are read in one batch, window w with a seed of its own (`window_seed`), so the
result still depends only on (seed, slice, sample).

A model whose validation Dice gained from it (`ModelSpec.flip_average`, chosen in
`training.postprocessing`) reads every slice twice, as it is and mirrored left-right, in one batch;
a sample is the mean of the two softmaxes, the mirror's flipped back. On a chip the mirror's read has
noise of its own (seeded by the slice's mirror index, `mirror_index`).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

from engine.analog.chips import ChipKey, ChipSet, read_seed
from engine.analog.device import DeviceSettings
from engine.analog.periphery import seeded_reads
from engine.compute_device import read_batch_size
from engine.model_store import ModelSpec
from engine.run_settings import Mode, RunSettings, Simulator


def mirror_index(slice_index: int) -> int:
    """The index whose read seed the left-right mirror of slice `slice_index` takes: one no slice has."""
    return -1 - slice_index


# Overlap of neighbouring windows (MONAI's default): a 256 slice is read as 3 x 3 windows of 128.
WINDOW_OVERLAP = 0.25
# Windows read in one batch: all of a slice's but for tiny windows (MONAI then reads the rest in further
# batches, each window keeping its own seed).
WINDOWS_PER_READ = 100

# A read of a batch: (N, C_in, h, w) inputs, one read seed each -> (N, C, h, w) logits.
Read = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]


def window_seed(seed: int, window: int) -> int:
    """The seed of window `window` of a slice read with seed `seed`; the first window keeps the slice's
    own, so a window the size of the slice reads exactly as the whole slice."""
    return seed if window == 0 else hash((seed, window)) & 0x7FFF_FFFF


def windowed(read: Read, x: torch.Tensor, seeds: Sequence[int], window: tuple[int, int]) -> torch.Tensor:
    """Logits of `read` over overlapping `window`s of each slice of `x`, blended by MONAI's sliding-window
    inference; window w of the slice of seed k is read with `window_seed(k, w)`."""
    out: list[torch.Tensor] = []
    for one, seed in zip(x.split(1), seeds, strict=True):
        count = itertools.count()

        def predictor(
            windows: torch.Tensor, seed: int = seed, count: itertools.count[int] = count
        ) -> torch.Tensor:
            return read(windows, [window_seed(seed, next(count)) for _ in range(len(windows))])

        blended = sliding_window_inference(one, window, WINDOWS_PER_READ, predictor, overlap=WINDOW_OVERLAP)
        assert isinstance(blended, torch.Tensor)  # a tensor predictor gives a tensor
        out.append(blended)
    return torch.cat(out)


def flip_averaged(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Softmax of `forward` on a batch and on its left-right mirror (the last axis: the patient's
    left-right in `engine.preprocessing.get_slice`'s slices), averaged. `forward` gets both halves in one
    batch, the mirrors second."""
    both = torch.softmax(forward(torch.cat([x, x.flip(-1)])), 1)
    plain, mirrored = both.chunk(2)
    return (plain + mirrored.flip(-1)) / 2


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
        device: str | torch.device | None = None,
    ) -> None:
        """`device`: where to compute, as `engine.compute_device.resolve_device` takes it (None: the
        process default); `chips` must have been made for the same key and device."""
        try:
            self.simulator = Simulator(simulator)
        except ValueError:
            raise ValueError(f"simulator must be fast or aihwkit, not {simulator!r}") from None
        key = ChipKey.of(spec, run, self.simulator, device)
        if chips is not None and chips.key != key:
            raise ValueError(f"chips programmed for {chips.key}, not for {key}")
        self.spec = spec
        self.run = run
        self.chip_set = chips if chips is not None else ChipSet(spec, key)
        self.device = torch.device(self.chip_set.key.device)

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

    @property
    def batch_size(self) -> int:
        """Slices per chip read: sized for the device; one on aihwkit's tile, whose reads draw from the
        global generator in the order of the batch's elements."""
        return read_batch_size(self.device) if self.concurrent_reads else 1

    @torch.no_grad()
    def predict(
        self, x: torch.Tensor, slice_index: int = 0, cancel: threading.Event | None = None
    ) -> torch.Tensor:
        """(1, C_in, h, w) input -> (S, C, h, w) softmax samples."""
        return self.predict_batch(x, [slice_index], cancel)[0]

    @torch.no_grad()
    def predict_batch(
        self, x: torch.Tensor, slice_indices: Sequence[int], cancel: threading.Event | None = None
    ) -> torch.Tensor:
        """(B, C_in, h, w) inputs of slices `slice_indices` -> (B, S, C, h, w) softmax samples, on the CPU.

        Sample s of every slice is one read of chip s over the whole batch; each slice's result is the
        one it gets read alone. A cancel stops it between samples (digitally, between slices).
        """
        if len(slice_indices) != x.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs but {len(slice_indices)} slice indices")
        x = x.to(self.device)
        if self.run.mode is Mode.DIGITAL:  # slice by slice: an exact read of a wide HWA model takes seconds
            reads = []
            for one in x.split(1):
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                reads.append(self.digital_read(one))
            return torch.cat(reads).cpu()[:, None]
        out = []
        for s in range(self.samples):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            out.append(self.read_batch(x, slice_indices, s))
        return torch.stack(out, 1).cpu()

    @torch.no_grad()
    def read(self, x: torch.Tensor, slice_index: int, s: int) -> torch.Tensor:
        """Sample s of a slice: softmax of one read of chip s (programmed first if need be), seeded by
        (run seed, slice, sample), so a slice's samples are the same in whatever order, and on
        whatever thread, they are read. (1, C, h, w) on the CPU."""
        return self.read_batch(x.to(self.device), [slice_index], s).cpu()

    @torch.no_grad()
    def digital_read(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax of the exact network on a batch on the device (by windows, mirror-averaged, if the
        model says so)."""
        return self._softmax(lambda batch, _seeds: self.digital(batch), x, [0] * (2 * len(x)))

    def read_batch(self, x: torch.Tensor, slice_indices: Sequence[int], s: int) -> torch.Tensor:
        """Sample s of several slices at once: one read of chip s over the batch (inputs on the device),
        each slice's noise from its own seed (run seed, slice, sample)."""
        indices = list(slice_indices)
        if self.spec.flip_average:
            indices += [mirror_index(k) for k in slice_indices]
        seeds = [read_seed(self.run.seed, k, s) for k in indices]
        chip = self.chip(s)

        def read(batch: torch.Tensor, batch_seeds: Sequence[int]) -> torch.Tensor:
            if self.simulator is Simulator.FAST:
                with seeded_reads(batch_seeds, self.device):
                    return chip(batch)
            parts = []
            for seed, xi in zip(batch_seeds, batch.split(1), strict=True):
                torch.manual_seed(seed)  # aihwkit's tile draws from torch's global generator
                parts.append(chip(xi))
            return torch.cat(parts)

        return self._softmax(read, x, seeds)

    def _softmax(self, read: Read, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Softmax of `read` on a batch, by windows and averaged with the mirror where the model says so.
        `seeds`: one per slice, then one per mirror (the mirrors are read second, in the same batch)."""

        def forward(batch: torch.Tensor) -> torch.Tensor:
            batch_seeds = seeds[: len(batch)]
            if self.spec.sliding_window is None:
                return read(batch, batch_seeds)
            return windowed(read, batch, batch_seeds, self.spec.sliding_window)

        if self.spec.flip_average:
            return flip_averaged(forward, x)
        return torch.softmax(forward(x), 1)

    @property
    def concurrent_reads(self) -> bool:
        """Whether threads may read slices at once (aihwkit's tile draws from the global generator)."""
        return self.run.mode is Mode.DIGITAL or self.simulator is Simulator.FAST
