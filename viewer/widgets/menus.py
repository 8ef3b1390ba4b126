"""The main window's menus and keys; `help_dialogs.SHORTCUTS` lists the same keys for the reader.

Every action is also added to the window itself, so its key works whichever widget has the focus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu

from engine.export_formats import DICOM_SEG, NIFTI, SEG_NRRD
from viewer.session.display import CT_PRESETS, MR_AUTO, VIEWS
from viewer.widgets.help_dialogs import show_about, show_shortcuts
from viewer.widgets.screenshot import ask_and_save

if TYPE_CHECKING:
    from viewer.widgets.main_window import MainWindow


EXPORT_FORMATS = {
    NIFTI: "NIfTI (.nii.gz)",
    DICOM_SEG: "DICOM SEG + parametric map (scans read from a DICOM series)",
    SEG_NRRD: "3D Slicer segmentation (.seg.nrrd)",
}


@dataclass(frozen=True)
class Menus:
    """The actions the window reads or updates later."""

    recent: QMenu
    export_uncertainty: QAction
    export_probability: QAction
    export_formats: dict[str, QAction]  # engine.export_formats.FORMATS -> its toggle
    large_views: dict[str, QAction]


def _action(
    window: MainWindow,
    text: str,
    slot: Callable[[], object],
    shortcut: str | None = None,
    menu: QMenu | None = None,
    checkable: bool = False,
) -> QAction:
    action = QAction(text, window)
    if shortcut:
        action.setShortcut(QKeySequence(shortcut))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    action.setCheckable(checkable)
    action.triggered.connect(lambda *_: slot())
    window.addAction(action)
    if menu is not None:
        menu.addAction(action)
    return action


def build_menus(window: MainWindow) -> Menus:
    """File, View, Inference and Help, bound to the window's slots and the session's presets."""
    session, overlay, bar = window.session, window.overlay_panel, window.menuBar()
    file = bar.addMenu("&File")
    _action(window, "&Open scan…", window.files.choose_scan, "Ctrl+O", file)
    _action(window, "Open &DICOM folder…", window.files.choose_dicom_folder, "Ctrl+Shift+O", file)
    recent = file.addMenu("Open &recent")
    file.addSeparator()
    _action(window, "Load &ground truth…", window.files.choose_ground_truth, "Ctrl+G", file)
    file.addSeparator()
    _action(window, "&Export results…", window.exporter.export_results, "Ctrl+E", file)
    export_uncertainty = _action(
        window, "Export includes the uncertainty map", lambda: None, None, file, True
    )
    export_probability = _action(
        window, "Export includes the probability map", lambda: None, None, file, True
    )
    export_uncertainty.setChecked(True)
    formats = file.addMenu("Export &formats")
    export_formats = {
        name: _action(window, text, lambda: None, None, formats, True)
        for name, text in EXPORT_FORMATS.items()
    }
    export_formats[NIFTI].setChecked(True)
    file.addSeparator()
    _action(
        window, "Save screenshot of the &views…", lambda: ask_and_save(window, "views"), "Ctrl+Shift+S", file
    )
    _action(window, "Save screenshot of the &window…", lambda: ask_and_save(window, "window"), None, file)
    file.addSeparator()
    _action(window, "&Quit", window.close, "Ctrl+Q", file)

    view = bar.addMenu("&View")
    group = QActionGroup(window)
    large_views = {}
    for number, name in enumerate(VIEWS, start=1):
        action = _action(
            window, f"Large view: {name}", lambda n=name: window.set_large_view(n), str(number), view, True
        )
        group.addAction(action)
        large_views[name] = action
    large_views[window.grid.large].setChecked(True)
    view.addSeparator()
    wl = view.addMenu("&Window / level")
    for name in (MR_AUTO, *CT_PRESETS):
        _action(window, name, lambda n=name: session.apply_preset(n), None, wl)
    view.addSeparator()
    _action(window, "Show/hide &segmentation", overlay.toggle_segmentation, "S", view)
    _action(window, "Show/hide &uncertainty", overlay.toggle_heatmap, "U", view)
    _action(window, "Segmentation fill/&outline", overlay.toggle_outline, "O", view)
    _action(window, "Show/hide &ground truth", overlay.toggle_truth, "G", view)
    view.addSeparator()
    _action(window, "Next slice", lambda: window.step_slice(1), "PgUp")
    _action(window, "Previous slice", lambda: window.step_slice(-1), "PgDown")
    _action(window, "&Reset zoom", window.grid.reset_zoom, "Home", view)

    infer = bar.addMenu("&Inference")
    _action(window, "&Run / resume", lambda: window.request_run(deliberate=True), "Ctrl+R", infer)
    _action(window, "&Cancel", window.runner.cancel, "Esc", infer)
    _action(window, "Switch digital / analog", window.model_panel.toggle_mode, "M", infer)

    helpm = bar.addMenu("&Help")
    _action(window, "&Keyboard and mouse…", lambda: show_shortcuts(window), "F1", helpm)
    _action(window, "&About…", lambda: show_about(window), None, helpm)
    return Menus(recent, export_uncertainty, export_probability, export_formats, large_views)
