"""File > Export: the questions asked before writing (a partial result? which folder? replace files?),
the writing itself through the session, and what the reader is told afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from engine.export_formats import NIFTI
from engine.volume import ScanError
from viewer.session.session import ReadingSession

if TYPE_CHECKING:
    from viewer.widgets.main_window import MainWindow


def ask_export_folder(
    parent: QWidget, session: ReadingSession, formats: tuple[str, ...] = (NIFTI,)
) -> str | None:
    """The folder to export the result on screen to in `formats`, or None when there is nothing to
    export, the scan cannot be exported so (a DICOM SEG of a scan not read from DICOM), or the reader
    changes their mind. The files inside have fixed names (those of `aimc predict`)."""
    done, total = session.segmented()
    if not done:
        QMessageBox.information(parent, "Export", "There is no segmentation to export yet.")
        return None
    if not formats:
        QMessageBox.information(parent, "Export", "Choose a format in File > Export formats.")
        return None
    if problem := session.export_refusal(formats):
        QMessageBox.warning(parent, "Export", f"{problem}\n\nChoose another format in File > Export formats.")
        return None
    yes = QMessageBox.StandardButton.Yes
    if (
        done < total
        and QMessageBox.question(
            parent,
            "Export a partial result?",
            f"Only {done} of {total} slices are segmented; the others would be exported as background.",
        )
        != yes
    ):
        return None
    folder = QFileDialog.getExistingDirectory(parent, "Export results to a folder", session.export_folder())
    if not folder:
        return None
    replaced = session.export_would_replace(folder, formats)
    if (
        replaced
        and QMessageBox.question(
            parent, "Replace the files?", f"{folder} already holds {', '.join(replaced)}; replace them?"
        )
        != yes
    ):
        return None
    return folder


class Exporter:
    """Exports `window`'s result on screen with the maps chosen in its File menu."""

    def __init__(self, window: MainWindow, session: ReadingSession) -> None:
        self.window, self.session = window, session

    def formats(self) -> tuple[str, ...]:
        """The formats checked in File > Export formats."""
        return tuple(name for name, action in self.window.menus.export_formats.items() if action.isChecked())

    def export_results(self) -> None:
        """Ask for a folder, then write the segmentation (and the chosen maps) aligned with the scan."""
        folder = ask_export_folder(self.window, self.session, self.formats())
        if folder:
            self.export_to(folder)

    def export_to(self, folder: str | Path, edited: bool = True) -> list[Path]:
        """Write the files (the reader's `edited` segmentation, else the AI's); on failure say why. The
        result stays open either way, nothing is lost."""
        window, menus = self.window, self.window.menus
        try:
            written = self.session.export(
                folder,
                window.overlay_panel.map_name,
                menus.export_uncertainty.isChecked(),
                menus.export_probability.isChecked(),
                self.formats(),
                edited,
            )
        except (ScanError, OSError) as exc:
            QMessageBox.critical(
                window,
                "Export failed",
                f"{exc}\n\nThe results are still open; nothing was lost. Choose another place.",
            )
            return []
        if written:
            window.statusBar().showMessage(
                f"Exported {', '.join(p.name for p in written)} to {folder}", 10000
            )
            window.exported.emit(written)
        return written
