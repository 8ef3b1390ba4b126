"""Segmenters kept between runs, so analog chips are programmed once per device configuration.

Building a `Segmenter` loads the network and, in analog mode, each Monte-Carlo sample needs a
programmed chip (seconds each on a CPU). Chips depend on the model, noise level, drift time and
seed, not on how many samples are drawn: moving the MC slider from 8 to 16 reuses the first 8
chips and programs 8 more, and going back to 8 programs nothing.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict

from engine.inference import Segmenter

from engine.run_settings import RunSettings
from engine.model_store import ModelSpec


def chip_key(spec: ModelSpec, run: RunSettings) -> tuple:
    """What the chips of a run depend on (everything in `RunSettings` but the MC count)."""
    model = str(spec.folder) if spec.folder is not None else spec.name
    if run.mode == "digital":
        return (model, "digital")
    return (model, "analog", float(run.noise_level), float(run.drift_s), int(run.seed))


def with_settings(base: Segmenter, run: RunSettings) -> Segmenter:
    """A segmenter for `run` that shares `base`'s network, template and programmed chips.

    A shallow copy shares the chip list and its lock, so chips programmed through either
    segmenter serve both; only `run` (hence the sample count) differs.
    """
    view = copy.copy(base)
    view.run = run
    return view


class SegmenterPool:
    """Thread-safe cache of segmenters by `chip_key`, least recently used dropped beyond `capacity`."""

    def __init__(self, capacity: int = 3) -> None:
        self.capacity = capacity
        self._pool: OrderedDict[tuple, Segmenter] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._pool)

    def get(self, spec: ModelSpec, run: RunSettings) -> Segmenter:
        """A segmenter for `run`, built (slow: call it off the UI thread) only on a pool miss."""
        key = chip_key(spec, run)
        with self._lock:
            base = self._pool.get(key)
            if base is None:
                base = Segmenter(spec, run)
                self._pool[key] = base
                while len(self._pool) > self.capacity:
                    self._pool.popitem(last=False)
            self._pool.move_to_end(key)
        return base if base.run == run else with_settings(base, run)

    def programmed_chips(self, spec: ModelSpec, run: RunSettings) -> int:
        """How many chips are ready for `run`'s device configuration (0 if none built yet)."""
        with self._lock:
            base = self._pool.get(chip_key(spec, run))
        return len(base.chips) if base is not None else 0
