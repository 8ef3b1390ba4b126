"""Plain-Python notifications from the session to whatever renders it (napari's event emitters, without Qt).

The session never knows who listens: widgets connect callbacks, tests connect lists.
"""

from __future__ import annotations

from collections.abc import Callable


class Emitter:
    """Callbacks called in the order they connected, with the arguments of `emit`."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., object]] = []

    def connect(self, callback: Callable[..., object]) -> None:
        self._callbacks.append(callback)

    def disconnect(self, callback: Callable[..., object]) -> None:
        self._callbacks.remove(callback)

    def emit(self, *args: object) -> None:
        for callback in list(self._callbacks):  # a callback may disconnect itself
            callback(*args)


class SessionEvents:
    """What a `ReadingSession` announces; the arguments of each are listed beside it."""

    def __init__(self) -> None:
        self.model_changed = Emitter()  # ModelSpec: its labels are the ones shown from now on
        self.scan_opened = Emitter()  # Volume, path: everything was reset for it
        self.cursor_moved = Emitter()  # views whose slice changed (the others only move their crosshair)
        self.centred = Emitter()  # the views should bring the crosshair to their centre (a lesion chosen)
        self.window_changed = Emitter()  # WindowLevel
        self.result_shown = Emitter()  # VolumeResult now on screen (cached, partial or new); None: refused
        self.trust_changed = Emitter()  # the gate's or the verdict's notice may have changed
        self.findings_ready = Emitter()  # Findings of the result on screen, computed in the background
        self.slice_updated = Emitter()  # views showing the slice, finished (False: a preview)
        self.run_ended = Emitter()  # VolumeResult on screen whose run ended (complete, stopped or failed)
        self.truth_loaded = Emitter()  # name of the reference label file
