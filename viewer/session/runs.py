"""What the reading session hands out and answers about runs: reading a scan safely, the `Runner` that
segments off the UI thread (the Qt worker in the app, a fake in tests), and what a run request did."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from engine.model_store import ModelSpec
from engine.pipeline import VolumeResult
from engine.run_settings import RunSettings
from engine.volume import ScanError, Volume, load_scan


def read_scan(path: str, series: str | None = None) -> Volume:
    """`load_scan` with every failure as a `ScanError` the user can read (slow: call it off the UI thread);
    `series` chooses a DICOM folder's series."""
    try:
        return load_scan(path, series=series)
    except ScanError:
        raise
    except Exception as exc:  # noqa: BLE001 (a reader bug must not pass silently or kill the app)
        raise ScanError(f"{path}: could not be read ({type(exc).__name__}: {exc})") from exc


class Runner(Protocol):
    """Runs inference off the UI thread: fills `result` with `order`'s slices, one request at a time."""

    def start(
        self, spec: ModelSpec, run: RunSettings, volume: Volume, result: VolumeResult, order: list[int]
    ) -> object: ...

    def cancel(self) -> None: ...

    def is_computing(self, result: VolumeResult) -> bool: ...


class RunOutcome(StrEnum):
    """What `request_run` did, for the status line."""

    NOTHING = "nothing"  # no scan or no model
    BLOCKED = "blocked"  # the model does not fit the scan and the reader did not ask for it: nothing runs
    RUNNING = "running"  # this result is already being computed
    CACHED = "cached"  # complete from the cache: nothing to compute
    STARTED = "started"  # the missing slices were handed to the runner
    ASK_EDITS = "ask edits"  # another result would replace the edited one: keep the edits on top, or not?
