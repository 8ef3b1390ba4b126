"""The chip lifecycle: programming and drift, the chips of one device configuration, and one cache of them.

What a chip is: `program_chip` programs an analog model's tiles once (programming noise and drift
coefficients drawn from the PCM model), lets them drift to the inference time with accumulated 1/f
read noise and applies global drift compensation. Every forward through that chip then reads it
again, redrawing the per-read noise.

What chips depend on is a `ChipKey`: the model, the mode, the noise level, the drift time, the seed
and the simulator that reads them, but not the number of Monte-Carlo samples. A `ChipSet` holds one
key's chips and grows lazily: a run at MC 16 after one at MC 8 programs 8 more chips, and going back
to MC 8 programs nothing. The `ChipCache` keeps the chip sets of the last few keys for whoever runs
models repeatedly (the viewer, batch runs), so each chip is programmed once.

Seeds live here too: chip k of a run is programmed with `chip_seed`, and sample s of a slice is read
with `read_seed`, so a slice's samples are the same in whatever order, and on whatever thread, they
are read.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from engine.analog.conversion import load_analog
from engine.analog.device import DeviceSettings, noise_model
from engine.analog.fast_layers import fast_chip
from engine.analog.periphery import per_read_pcm_noise
from engine.model_store import ANALOG_WEIGHTS, ModelError, ModelSpec, load_digital, load_tensors
from engine.run_settings import Mode, RunSettings, Simulator

if TYPE_CHECKING:
    from engine.inference import Segmenter


def chip_seed(run_seed: int, k: int) -> int:
    """The torch seed that programs chip k of a run with seed `run_seed`: the chips of one run differ,
    and those of runs with nearby seeds do not overlap while k < 100 003."""
    return run_seed * 100_003 + k


def read_seed(run_seed: int, slice_index: int, sample: int) -> int:
    """The seed of one read: sample `sample` of slice `slice_index` in a run with seed `run_seed`.

    CPython hashes a tuple of ints the same in every process (only str and bytes hashing is salted),
    so the reads, and the results, are reproducible between runs.
    """
    return hash((run_seed, slice_index, sample)) & 0x7FFF_FFFF


def program_chip(
    analog_model: nn.Module, settings: DeviceSettings, seed: int, in_place: bool = False
) -> nn.Module:
    """A programmed, drifted and drift-compensated copy of `analog_model`: one simulated chip.

    `analog_model` must have been built with the same `settings` (its per-read noise and
    quantisation come from them); `seed` makes the chip reproducible. `in_place` programs
    `analog_model` itself instead of a copy, for a caller that copies what it keeps (as `fast_chip`
    does): aihwkit programs every time from the weights the tiles held when first programmed, so
    the chip is the same, and the deep copy of an aihwkit model, a large part of a chip's cost, is saved.
    """
    chip: Any = (analog_model if in_place else copy.deepcopy(analog_model)).eval()  # an aihwkit model
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        chip.program_analog_weights(noise_model(settings))
        chip.drift_analog_weights(settings.drift_s)
    finally:
        torch.random.set_rng_state(gen_state)
    return chip


@dataclass(frozen=True)
class ChipKey:
    """What the chips of a run depend on: everything in `RunSettings` but the MC count, and the simulator.

    A digital run has no chips, only the exact network: its key is the model and the mode, the other
    fields keep their defaults.
    """

    model: str  # the model's folder, or its name for a model without one
    mode: Mode
    noise_level: float = 0.0
    drift_s: float = 0.0
    seed: int = 0
    simulator: Simulator = Simulator.FAST

    @classmethod
    def of(cls, spec: ModelSpec, run: RunSettings, simulator: Simulator = Simulator.FAST) -> ChipKey:
        model = str(spec.folder) if spec.folder is not None else spec.name
        if run.mode is Mode.DIGITAL:
            return cls(model, Mode.DIGITAL)
        noise, drift = float(run.noise_level), float(run.drift_s)
        return cls(model, Mode.ANALOG, noise, drift, int(run.seed), Simulator(simulator))


def _analog_path(spec: ModelSpec) -> Path:
    if spec.folder is None or not spec.has_analog:
        raise ModelError(f"model {spec.name} has no {ANALOG_WEIGHTS}; it cannot run in analog mode")
    return spec.folder / ANALOG_WEIGHTS


def _analog_state(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The model's stored tiles (weights, input ranges, output scales)."""
    return load_tensors(_analog_path(spec))


def _exact_network(spec: ModelSpec) -> nn.Module:
    """The network in floating point. A hardware-aware model learned its input clipping and output
    scales on the tiles, so its exact form keeps them (perfect tile reads); its plain digital
    conversion, without the clipping, segments far worse."""
    if spec.kind == "hwa" and spec.has_analog:
        return load_analog(
            spec.build(), _analog_state(spec), spec.device, exact=True, source=_analog_path(spec)
        )
    return load_digital(spec)


class ChipSet:
    """A model loaded for one `ChipKey`: its exact network and, in analog mode, the chips programmed so far.

    Chips are programmed on first use, one at a time under a lock, so threads that ask for the same
    chip at once get one chip. `chips` is the list of programmed chips; only `chip` adds to it.
    """

    def __init__(self, spec: ModelSpec, key: ChipKey) -> None:
        self.key = key
        self.digital = _exact_network(spec)
        self.chips: list[nn.Module] = []
        self._lock = threading.Lock()
        if key.mode is Mode.ANALOG:
            state = _analog_state(spec)
            self.settings = spec.device.with_(noise_level=key.noise_level, drift_s=key.drift_s)
            self._template = load_analog(spec.build(), state, self.settings, source=_analog_path(spec))
        else:
            self.settings = spec.device

    def __len__(self) -> int:
        return len(self.chips)

    def chip(self, k: int) -> nn.Module:
        """Chip k, programming it (and any before it) first if need be."""
        with self._lock:
            while len(self.chips) <= k:
                seed = chip_seed(self.key.seed, len(self.chips))
                if self.key.simulator is Simulator.FAST:
                    # the template is programmed in place: the fast chip is a copy
                    chip = fast_chip(
                        program_chip(self._template, self.settings, seed, in_place=True),
                        per_read_pcm_noise(self.settings),
                    )
                else:
                    chip = program_chip(self._template, self.settings, seed)
                self.chips.append(chip)
            return self.chips[k]


class ChipCache:
    """Thread-safe cache of chip sets by `ChipKey`; the least recently used is dropped beyond `capacity`."""

    def __init__(self, capacity: int = 3) -> None:
        if capacity < 1:
            raise ValueError(f"a chip cache holds at least one chip set, not {capacity}")
        self.capacity = capacity
        self._sets: OrderedDict[ChipKey, ChipSet] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sets)

    def chip_set(self, spec: ModelSpec, run: RunSettings, simulator: Simulator = Simulator.FAST) -> ChipSet:
        """The chip set for `run`, loaded (slow: call it off the UI thread) only on a miss."""
        key = ChipKey.of(spec, run, simulator)
        with self._lock:
            found = self._sets.get(key)
            if found is None:
                found = self._sets[key] = ChipSet(spec, key)
                while len(self._sets) > self.capacity:
                    self._sets.popitem(last=False)
            self._sets.move_to_end(key)
        return found

    def segmenter(
        self, spec: ModelSpec, run: RunSettings, simulator: Simulator = Simulator.FAST
    ) -> Segmenter:
        """A `Segmenter` for `run` on the cached chips of its key (slow on a miss: not on the UI thread)."""
        # engine.inference builds on this module: imported here so that imports go one way
        from engine.inference import Segmenter

        return Segmenter(spec, run, simulator, chips=self.chip_set(spec, run, simulator))

    def programmed_chips(
        self, spec: ModelSpec, run: RunSettings, simulator: Simulator = Simulator.FAST
    ) -> int:
        """How many chips are ready for `run`'s key (0 if none are cached); loads nothing."""
        with self._lock:
            found = self._sets.get(ChipKey.of(spec, run, simulator))
        return len(found) if found is not None else 0
