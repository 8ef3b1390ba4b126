"""The status bar's account of inference: what the worker does, a progress bar (chips while they are
programmed, then slices) with a Cancel button, how a run ended, and a message when one fails.

Only the run of the result on screen is reported; a superseded run finishes quietly.
"""

from __future__ import annotations

import time

from PySide6.QtWidgets import QMainWindow, QMessageBox, QProgressBar, QPushButton

from engine.pipeline import VolumeResult
from viewer.session.readout import RemainingTime, describe_run
from viewer.session.session import ReadingSession
from viewer.widgets.inference_worker import InferenceRunner, Job, Status

SLICE_FORMAT = "%v / %m slices"
CHIP_FORMAT = "chip %v / %m"


class RunStatus:
    """Reports `runner`'s jobs for `session`'s result in `window`'s status bar."""

    def __init__(self, window: QMainWindow, runner: InferenceRunner, session: ReadingSession) -> None:
        self.window, self.runner, self.session = window, runner, session
        self._started = 0.0
        self._left = RemainingTime()
        self._text = ""  # the worker's last status line, to which the time left is added
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(220)
        self.bar.setFormat(SLICE_FORMAT)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop inference (Esc); finished slices are kept")
        window.statusBar().addPermanentWidget(self.bar)
        window.statusBar().addPermanentWidget(self.cancel_button)
        self._set_visible(False)
        self.cancel_button.clicked.connect(runner.cancel)
        runner.started.connect(self._on_started)
        runner.status.connect(self._on_status)
        runner.sliceFinished.connect(self._on_slice_finished)
        runner.finished.connect(self._on_finished)
        runner.failed.connect(self._on_failed)

    def _set_visible(self, visible: bool) -> None:
        self.bar.setVisible(visible)
        self.cancel_button.setVisible(visible)

    def _count_slices(self, result: VolumeResult) -> None:
        self.bar.setFormat(SLICE_FORMAT)
        self.bar.setRange(0, int(result.finished.size))
        self.bar.setValue(int(result.finished.sum()))

    def _on_started(self, job: Job) -> None:
        self._started = time.perf_counter()
        self._left = RemainingTime()
        if self.session.is_shown(job.result):
            self._set_visible(True)
            self._count_slices(job.result)

    def _on_status(self, job: Job, status: Status) -> None:
        """Status text; while chips are programmed the progress bar counts chips, then slices."""
        if not self.session.is_shown(job.result):
            return
        self._text = status.text
        if status.chips_total:
            self.bar.setFormat(CHIP_FORMAT)
            self.bar.setRange(0, status.chips_total)
            self.bar.setValue(status.chips_ready)
            self._show_left("chips", status.chips_ready, status.chips_total)
        else:
            self._count_slices(job.result)
            self.window.statusBar().showMessage(status.text)

    def _on_slice_finished(self, job: Job, index: int) -> None:
        if self.session.is_shown(job.result):
            done, total = int(job.result.finished.sum()), int(job.result.finished.size)
            self.bar.setValue(done)
            self._show_left("slices", done, total)

    def _show_left(self, phase: str, done: int, total: int) -> None:
        """The worker's status and the time its phase has left, at the pace it went so far."""
        left = self._left.update(phase, done, total)
        self.window.statusBar().showMessage(f"{self._text}   {left}" if left else self._text)

    def _on_finished(self, job: Job, complete: bool) -> None:
        if not self.runner.busy:
            self._set_visible(False)
        if not self.session.is_shown(job.result):
            return
        done, total = int(job.result.finished.sum()), int(job.result.finished.size)
        if complete:
            self.window.statusBar().showMessage(
                f"Segmented {total} slices in {time.perf_counter() - self._started:.1f}"
                f" s ({describe_run(job.run)})",
                10000,
            )
        elif not self.runner.busy:
            self.window.statusBar().showMessage(
                f"Stopped with {done} of {total} slices segmented; Ctrl+R resumes"
            )

    def _on_failed(self, job: Job, message: str) -> None:
        self.window.statusBar().showMessage("Inference failed", 5000)
        QMessageBox.warning(self.window, "Inference failed", f"{describe_run(job.run)}\n\n{message}")
