"""File > Export: the questions asked before writing (a partial result? which folder? replace files?)."""

from __future__ import annotations

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from viewer.session.session import ReadingSession


def ask_export_folder(parent: QWidget, session: ReadingSession) -> str | None:
    """The folder to export the result on screen to, or None when there is nothing to export or the
    reader changes their mind. The files inside have fixed names (those of `aimc predict`)."""
    done, total = session.segmented()
    if not done:
        QMessageBox.information(parent, "Export", "There is no segmentation to export yet.")
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
    replaced = session.export_would_replace(folder)
    if (
        replaced
        and QMessageBox.question(
            parent, "Replace the files?", f"{folder} already holds {', '.join(replaced)}; replace them?"
        )
        != yes
    ):
        return None
    return folder
