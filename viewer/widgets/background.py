"""The session's `Background` in the app: each piece of work in a superqt worker thread, its answer
delivered on the UI thread (the case verdict's distance transforms, the findings of a volume)."""

from __future__ import annotations

from PySide6.QtCore import QObject
from superqt.utils import create_worker

from viewer.session.background import Done, Failed, Work


class ThreadBackground(QObject):
    """Runs each submitted work in a thread of Qt's global pool; keeps the workers alive until they end."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._workers: set = set()
        self._stopped = False

    def stop(self) -> None:
        """The window closes: answers that arrive later would reach widgets that are gone; drop them."""
        self._stopped = True

    def submit(self, work: Work, done: Done, failed: Failed) -> None:
        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        self._workers.add(worker)
        worker.returned.connect(lambda answer: None if self._stopped else done(answer))
        worker.errored.connect(lambda exc: None if self._stopped else failed(f"{type(exc).__name__}: {exc}"))
        worker.finished.connect(lambda: self._workers.discard(worker))
        worker.start()

    @property
    def busy(self) -> bool:
        return bool(self._workers)
