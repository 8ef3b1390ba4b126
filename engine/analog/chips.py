"""The chip lifecycle: programming and drift, the chips of one device configuration, and one cache of them.

What a chip is: `program_chip` programs an analog model's tiles once (programming noise and drift
coefficients drawn from the PCM model), lets them drift to the inference time with accumulated 1/f
read noise and applies global drift compensation. Every forward through that chip then reads it
again, redrawing the per-read noise.

What chips depend on is a `ChipKey`: the model, the mode, the noise level, the drift time, the seed
and the simulator that reads them, but not the number of Monte-Carlo samples. A `ChipSet` holds one
key's chips and grows lazily: a run at MC 16 after one at MC 8 programs 8 more chips, and going back
to MC 8 programs nothing. The `ChipCache` keeps the chip sets of the last few keys for whoever runs
models repeatedly (the viewer, batch runs), so each chip is programmed once; fast chips are also kept
on disk between runs (`engine.analog.chip_store`), so a second run with the same settings loads them.

Chips are programmed by aihwkit on the CPU, then moved to the key's compute device
(`engine.compute_device`), where they are read; the exact network runs there too.

Seeds live here too: chip k of a run is programmed with `chip_seed`, and sample s of a slice is read
with `read_seed`, so a slice's samples are the same in whatever order, and on whatever thread, they
are read.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from engine.analog.chip_store import ChipStore, default_store, file_digest
from engine.analog.conversion import load_analog
from engine.analog.device import DeviceSettings, noise_model
from engine.analog.fast_layers import fast_chip
from engine.analog.periphery import per_read_pcm_noise
from engine.compute_device import resolve_device
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
    """What the chips of a run depend on: everything in `RunSettings` but the MC count, the simulator, and
    the compute device they are read on (`cpu`, `cuda:0`).

    A digital run has no chips, only the exact network: its key is the model, the mode and the device,
    the other fields keep their defaults.
    """

    model: str  # the model's folder, or its name for a model without one
    mode: Mode
    noise_level: float = 0.0
    drift_s: float = 0.0
    seed: int = 0
    simulator: Simulator = Simulator.FAST
    device: str = "cpu"

    @classmethod
    def of(
        cls,
        spec: ModelSpec,
        run: RunSettings,
        simulator: Simulator = Simulator.FAST,
        device: str | torch.device | None = None,
    ) -> ChipKey:
        """The key of `run`; `device` a choice as `resolve_device` takes it (None: the process default)."""
        model = str(spec.folder) if spec.folder is not None else spec.name
        where = str(device if isinstance(device, torch.device) else resolve_device(device))
        if run.mode is Mode.DIGITAL:
            return cls(model, Mode.DIGITAL, device=where)
        noise, drift = float(run.noise_level), float(run.drift_s)
        return cls(model, Mode.ANALOG, noise, drift, int(run.seed), Simulator(simulator), where)


def _analog_path(spec: ModelSpec) -> Path:
    if spec.folder is None or not spec.has_analog:
        raise ModelError(f"model {spec.name} has no {ANALOG_WEIGHTS}; it cannot run in analog mode")
    return spec.folder / ANALOG_WEIGHTS


def _analog_state(spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The model's stored tiles (weights, input ranges, output scales)."""
    return load_tensors(_analog_path(spec))


def _exact_network(spec: ModelSpec) -> nn.Module:
    """The network in floating point. A hardware-aware model learned its input clipping and output
    scales on the tiles, so its exact form keeps them (perfect tile reads, through the fast layers:
    aihwkit's own tile forward unfolds every convolution); its plain digital conversion, without the
    clipping, segments far worse."""
    if spec.kind == "hwa" and spec.has_analog:
        return fast_chip(
            load_analog(spec.build(), _analog_state(spec), spec.device, exact=True, source=_analog_path(spec))
        )
    return load_digital(spec)


def _chip_key(spec: ModelSpec, settings: DeviceSettings, key: ChipKey, k: int) -> dict[str, Any]:
    """What chip k of `key` depends on, as the chip store files it: the stored tiles' content (not the
    model's path), the device settings, the seed, the index, and the code that programs chips."""
    assert spec.folder is not None  # an analog model has stored tiles
    return {
        "format": "fast-chip",
        "tiles_sha256": file_digest(spec.folder / ANALOG_WEIGHTS),
        "architecture": spec.architecture,
        "settings": settings.to_dict(),
        "seed": key.seed,
        "chip": k,
        "aihwkit": version("aihwkit"),
        "torch": torch.__version__.split("+")[0],
    }


class ChipSet:
    """A model loaded for one `ChipKey`: its exact network and, in analog mode, the chips programmed so far.

    Chips are made on first use, one at a time under a lock, so threads that ask for the same chip at
    once get one chip: loaded from the chip store where it holds that chip, else programmed (and
    stored). `chips` is the list of chips ready, on the key's device; only `chip` adds to it.
    `store`: the chip store to use ("user": the user's, `default_store()`; None: none).
    """

    def __init__(
        self, spec: ModelSpec, key: ChipKey, store: ChipStore | None | Literal["user"] = "user"
    ) -> None:
        self.key = key
        self.device = torch.device(key.device)
        self.digital = _exact_network(spec).to(self.device)
        self.chips: list[nn.Module] = []
        self.programmed = 0  # chips programmed here (the others came from the store)
        self._lock = threading.Lock()
        self._spec = spec
        self._template: nn.Module | None = None  # the unprogrammed analog model, built when first needed
        self._skeleton: nn.Module | None = None  # a fast chip to load stored chips into
        self.store = default_store() if store == "user" else store
        if key.mode is Mode.ANALOG:
            self._state = _analog_state(spec)
            self.settings = spec.device.with_(noise_level=key.noise_level, drift_s=key.drift_s)
        else:
            self.settings = spec.device
        if key.simulator is not Simulator.FAST or key.mode is not Mode.ANALOG:
            self.store = None  # only fast chips are plain tensors to store

    def __len__(self) -> int:
        return len(self.chips)

    def _analog_template(self) -> nn.Module:
        if self._template is None:
            self._template = load_analog(
                self._spec.build(), self._state, self.settings, source=_analog_path(self._spec)
            )
        return self._template

    def _stored(self, k: int) -> nn.Module | None:
        """Chip k from the store, or None where it holds no valid chip k."""
        if self.store is None:
            return None
        tensors = self.store.load(_chip_key(self._spec, self.settings, self.key, k))
        if tensors is None:
            return None
        if self._skeleton is None:
            self._skeleton = fast_chip(self._analog_template(), per_read_pcm_noise(self.settings))
        chip = copy.deepcopy(self._skeleton)
        try:
            chip.load_state_dict(tensors, strict=True)
        except RuntimeError:
            return None  # tensors that do not fit this network: programmed again
        return chip

    def _program(self, k: int) -> nn.Module:
        seed = chip_seed(self.key.seed, k)
        self.programmed += 1
        if self.key.simulator is not Simulator.FAST:
            return program_chip(self._analog_template(), self.settings, seed)
        # the template is programmed in place: the fast chip is a copy
        chip = fast_chip(
            program_chip(self._analog_template(), self.settings, seed, in_place=True),
            per_read_pcm_noise(self.settings),
        )
        if self.store is not None:
            self.store.save(_chip_key(self._spec, self.settings, self.key, k), chip.state_dict())
        return chip

    def chip(self, k: int) -> nn.Module:
        """Chip k, made (and any before it) first if need be."""
        with self._lock:
            while len(self.chips) <= k:
                n = len(self.chips)
                chip = self._stored(n)
                self.chips.append((chip if chip is not None else self._program(n)).to(self.device))
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

    def chip_set(
        self,
        spec: ModelSpec,
        run: RunSettings,
        simulator: Simulator = Simulator.FAST,
        device: str | torch.device | None = None,
    ) -> ChipSet:
        """The chip set for `run` on `device` (default: the process's), loaded (slow: call it off the
        UI thread) only on a miss."""
        key = ChipKey.of(spec, run, simulator, device)
        with self._lock:
            found = self._sets.get(key)
            if found is None:
                found = self._sets[key] = ChipSet(spec, key)
                while len(self._sets) > self.capacity:
                    self._sets.popitem(last=False)
            self._sets.move_to_end(key)
        return found

    def segmenter(
        self,
        spec: ModelSpec,
        run: RunSettings,
        simulator: Simulator = Simulator.FAST,
        device: str | torch.device | None = None,
    ) -> Segmenter:
        """A `Segmenter` for `run` on the cached chips of its key (slow on a miss: not on the UI thread)."""
        # engine.inference builds on this module: imported here so that imports go one way
        from engine.inference import Segmenter

        chips = self.chip_set(spec, run, simulator, device)
        return Segmenter(spec, run, simulator, chips=chips, device=chips.key.device)

    def programmed_chips(
        self,
        spec: ModelSpec,
        run: RunSettings,
        simulator: Simulator = Simulator.FAST,
        device: str | torch.device | None = None,
    ) -> int:
        """How many chips are ready for `run`'s key (0 if none are cached); loads nothing."""
        with self._lock:
            found = self._sets.get(ChipKey.of(spec, run, simulator, device))
        return len(found) if found is not None else 0
