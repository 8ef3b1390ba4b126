"""Opening files: the scan and ground-truth dialogs, Open recent, drag and drop, and reading in a worker
thread so that a large scan or a slow disk never freezes the window. What was read goes to the session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox
from superqt.utils import create_worker

from engine.dicom_series import DicomSeries
from engine.volume import SCAN_SUFFIXES, list_dicom_series
from viewer.session.ground_truth import load_ground_truth
from viewer.session.session import ReadingSession
from viewer.widgets.series_dialog import SeriesDialog

if TYPE_CHECKING:
    from viewer.widgets.main_window import MainWindow

SCAN_FILTER = (
    "Scans (*.nii *.nii.gz *.mha *.mhd *.nrrd *.nhdr *.dcm);;"
    "2D images (*.png *.tif *.tiff *.jpg *.jpeg);;All files (*)"
)


class Opener:
    """Asks for files on behalf of `window` and reads them into `session` in the background."""

    def __init__(self, window: MainWindow, session: ReadingSession) -> None:
        self.window, self.session = window, session
        self._workers: set = set()  # kept alive until they report
        self.series_dialog: SeriesDialog | None = None  # open while the reader chooses a DICOM series

    def _in_background(
        self, func: Callable, arg: str, done: Callable, failed: Callable[[str], object]
    ) -> None:
        """Run `func(arg)` in a worker thread; `done(result)` or `failed(message)` on the UI thread."""
        worker = create_worker(func, arg, _start_thread=False, _ignore_errors=True)
        self._workers.add(worker)
        worker.returned.connect(done)
        worker.errored.connect(lambda exc: failed(str(exc)))
        worker.finished.connect(lambda: self._workers.discard(worker))
        worker.start()

    # -- scans --------------------------------------------------------------------------------
    def choose_scan(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.window, "Open scan", self.session.recent.last_folder(), SCAN_FILTER
        )
        if path:
            self.open_path(path)

    def choose_dicom_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(
            self.window, "Open DICOM folder", self.session.recent.last_folder()
        )
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path) -> None:
        """Read a scan in the background; the session opens it, or a message box and `openFailed` say why.

        A DICOM folder (or file) is first listed; if it holds several series the reader chooses one.
        Edits of the scan on screen no export holds are never dropped unasked (`may_leave`).
        """
        if not self.window.editing.may_leave("open another scan"):
            self.window.statusBar().showMessage("Nothing opened: your edits are still here", 5000)
            return
        path = str(path)
        self.window.statusBar().showMessage(f"Opening {path}…")
        if Path(path).is_dir() or path.lower().endswith(".dcm"):
            self._in_background(
                list_dicom_series, path, lambda found: self._choose(path, found), self._open_failed
            )
        else:
            self._read(path, None)

    def _choose(self, path: str, found: list[DicomSeries]) -> None:
        """One series (or none: reading says why) is read at once; several are offered in the browser."""
        if len(found) < 2:
            self._read(path, None)
            return
        self.window.statusBar().showMessage(f"{path} holds {len(found)} DICOM series: choose one")
        dialog = self.series_dialog = SeriesDialog(path, found, self.window)
        dialog.accepted.connect(lambda: self._read(path, dialog.chosen().uid))
        dialog.rejected.connect(lambda: self.window.statusBar().showMessage("Nothing opened", 5000))
        dialog.finished.connect(lambda _: setattr(self, "series_dialog", None))
        dialog.open()

    def _read(self, path: str, series: str | None) -> None:
        self._in_background(  # reading and the model gate: both slow on a large scan
            lambda p: self.session.read(p, series),
            path,
            lambda read: self.session.open(read[0], path, read[1]),
            self._open_failed,
        )

    def _open_failed(self, message: str) -> None:
        self.window.statusBar().showMessage("Could not open the scan", 5000)
        QMessageBox.critical(self.window, "Cannot open scan", message)
        self.window.openFailed.emit(message)

    def fill_recent_menu(self, menu: QMenu) -> None:
        menu.clear()
        recent = self.session.recent.paths()
        if not recent:
            menu.addAction("(none)").setEnabled(False)
        for path in recent:
            menu.addAction(path, lambda p=path: self.open_path(p))

    def drop(self, event: QDropEvent) -> None:
        """Open the first scan or folder dropped, else the first file (it will say why it cannot be read)."""
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            scans = [p for p in paths if p.lower().endswith(SCAN_SUFFIXES) or Path(p).is_dir()]
            self.open_path((scans or paths)[0])

    # -- ground truth -------------------------------------------------------------------------
    def choose_ground_truth(self) -> None:
        if self.session.volume is None:
            QMessageBox.information(self.window, "Ground truth", "Open a scan first.")
            return
        path, _ = QFileDialog.getOpenFileName(
            self.window, "Load ground-truth labels", self.session.recent.last_folder(), SCAN_FILTER
        )
        if path:
            self.load_ground_truth(path)

    def load_ground_truth(self, path: str | Path) -> None:
        """Read a label file in the background; the session compares it with the result as slices finish."""
        volume = self.session.volume
        if volume is None:
            return
        self._in_background(
            lambda p: load_ground_truth(p, volume),
            str(path),
            lambda truth: self.session.set_truth(truth, Path(path).name, volume),
            lambda message: QMessageBox.warning(self.window, "Cannot load ground truth", message),
        )
