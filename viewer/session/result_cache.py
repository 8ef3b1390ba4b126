"""Results of one scan kept per `RunSettings`, so that switching back to earlier settings is instant.

A result may be partial (the run was cancelled or superseded); running those settings again
only segments the slices still missing, current slice first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from engine.pipeline import VolumeResult, fan_out_order
from engine.run_settings import Mode, RunSettings


def result_key(run: RunSettings) -> RunSettings:
    """The settings that determine a result: a digital network ignores the device settings.

    Digital inference is exact, so MC count, noise and drift do not change its output; they are
    reset to fixed values so that moving those sliders in digital mode finds the cached result.
    """
    if run.mode == Mode.DIGITAL:
        return RunSettings(
            model=run.model, mode=Mode.DIGITAL, mc_samples=1, noise_level=0.0, drift_s=1.0, seed=run.seed
        )
    return run


def result_nbytes(result: VolumeResult) -> int:
    return int(
        result.probabilities.nbytes + result.segmentation.nbytes + sum(m.nbytes for m in result.maps.values())
    )


class ResultCache:
    """`VolumeResult`s of the open scan by settings, least recently used dropped beyond `max_bytes`."""

    def __init__(self, max_bytes: int = 2 * 1024**3) -> None:
        self.max_bytes = max_bytes
        self._results: OrderedDict[RunSettings, VolumeResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, run: RunSettings) -> bool:
        return result_key(run) in self._results

    def get(self, run: RunSettings) -> VolumeResult | None:
        key = result_key(run)
        result = self._results.get(key)
        if result is not None:
            self._results.move_to_end(key)
        return result

    def put(self, run: RunSettings, result: VolumeResult) -> None:
        key = result_key(run)
        self._results[key] = result
        self._results.move_to_end(key)
        while len(self._results) > 1 and sum(map(result_nbytes, self._results.values())) > self.max_bytes:
            self._results.popitem(last=False)

    def get_or_create(self, run: RunSettings, create: Callable[[], VolumeResult]) -> VolumeResult:
        """The cached result of `run`, or a new empty one from `create()` stored under it."""
        result = self.get(run)
        if result is None:
            result = create()
            self.put(run, result)
        return result

    def clear(self) -> None:
        self._results.clear()


def missing_slices(result: VolumeResult, start: int | None) -> list[int]:
    """Slices not segmented yet, in fan-out order from `start` (the slice on screen first)."""
    return [k for k in fan_out_order(len(result.finished), start) if not result.finished[k]]
