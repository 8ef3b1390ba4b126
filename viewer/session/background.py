"""Slow analysis off the UI thread, without Qt: the session hands work to a `Background` and is called
back with the answer. The app's background runs a worker thread; tests and scripts run it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Work = Callable[[], Any]
Done = Callable[[Any], object]
Failed = Callable[[str], object]


class Background(Protocol):
    """Runs `work()` elsewhere, then `done(answer)` or `failed(message)` on the session's thread."""

    def submit(self, work: Work, done: Done, failed: Failed) -> None: ...


class Immediate:
    """Runs the work at once on the calling thread (tests, scripts without an event loop)."""

    def submit(self, work: Work, done: Done, failed: Failed) -> None:
        try:
            answer = work()
        except Exception as exc:  # noqa: BLE001 (reported like a worker's failure)
            failed(f"{type(exc).__name__}: {exc}")
            return
        done(answer)


class Latest:
    """At most one piece of work in flight; what is asked meanwhile replaces what was waiting, so a
    burst of requests (a slice finishing every 100 ms) costs two computations, not one per request."""

    def __init__(self, background: Background) -> None:
        self.background = background
        self._busy = False
        self._waiting: tuple[Work, Done, Failed] | None = None

    def submit(self, work: Work, done: Done, failed: Failed) -> None:
        if self._busy:
            self._waiting = (work, done, failed)
            return
        self._busy = True
        self.background.submit(
            work, lambda answer: self._finish(done, answer), lambda message: self._finish(failed, message)
        )

    def _finish(self, callback: Callable[[Any], object], value: object) -> None:
        self._busy = False
        callback(value)
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self.submit(*waiting)
