"""File > Save screenshot: the view area (the three planes with their colour bar) or the whole window, as
PNG, written atomically so that a failing disk leaves no half-written picture."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from engine.files import atomic_write

if TYPE_CHECKING:
    from viewer.widgets.main_window import MainWindow


def save_png(widget: QWidget, path: str | Path) -> Path:
    """`widget` as it is on screen, into `path` (.png added if missing); OSError if it cannot be written."""
    out = Path(path)
    out = out if out.suffix.lower() == ".png" else out.with_name(out.name + ".png")
    picture = widget.grab()

    def write(tmp: str) -> None:
        if not picture.save(tmp, "PNG"):
            raise OSError(f"{out}: the picture could not be written")

    return atomic_write(out, write, ".png")


def default_name(window: MainWindow, what: str) -> str:
    """`<scan>_axial22_views.png` beside the last export: the scan, the large view and its slice."""
    session, large = window.session, window.grid.large
    stem = Path(session.volume.source).name.split(".")[0] if session.volume is not None else "aimc"
    index = window.grid.views[large].slider.value()
    return str(Path(session.export_folder()) / f"{stem}_{large}{index}_{what}.png")


def ask_and_save(window: MainWindow, what: str) -> Path | None:
    """Ask where, then save the view area (`what` "views") or the window ("window"); a refusal: a message."""
    widget = window.view_area if what == "views" else window
    path, _ = QFileDialog.getSaveFileName(
        window, "Save screenshot", default_name(window, what), "PNG (*.png)"
    )
    if not path:
        return None
    try:
        saved = save_png(widget, path)
    except OSError as exc:
        QMessageBox.warning(window, "Screenshot not saved", f"{path}: {exc.strerror or exc}")
        return None
    window.statusBar().showMessage(f"Saved {saved}", 8000)
    return saved
