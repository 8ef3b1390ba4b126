"""Reading fixes in the real window (pytest-qt, offscreen): the readout after a scan change, a map change and
the mouse leaving; every control reachable at 1280x800; typed window/level and "Custom"; label colours
apart from the heatmap, drawn above the reference; screenshots; the layout kept across starts (the digital
preview of a cold analog run: test_viewer_preview.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QEvent, QPoint, QPointF, QSettings, Qt, QThreadPool  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QAbstractButton,
    QAbstractItemView,
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QGroupBox,
    QMessageBox,
    QScrollArea,
    QWidget,
)

from engine.findings import Lesion  # noqa: E402
from engine.model_store import Label, list_models  # noqa: E402
from engine.uncertainty import MAP_TITLES  # noqa: E402
from viewer.session import display  # noqa: E402
from viewer.session.findings_table import Findings, LabelFinding  # noqa: E402
from viewer.widgets.inference_worker import InferenceRunner  # noqa: E402
from viewer.widgets.main_window import MainWindow  # noqa: E402

CONTROLS = (QAbstractButton, QComboBox, QAbstractSlider, QAbstractSpinBox, QGroupBox, QAbstractItemView)


@pytest.fixture
def make_window(qtbot, tmp_path):
    """Windows with their own settings file (never the user's); every worker has ended when a test ends."""
    windows: list[MainWindow] = []

    def make(specs=None, pool=None, mode="digital", mc=2, ini=None, size=(1280, 800)) -> MainWindow:
        settings = QSettings(str(ini or tmp_path / "viewer.ini"), QSettings.Format.IniFormat)
        window = MainWindow(specs if specs is not None else [], settings, InferenceRunner(pool))
        qtbot.addWidget(window)
        window.model_panel.set_mode(mode)
        window.model_panel.mc_slider.setValue(mc)
        if size is not None:  # None: as the settings left it
            window.resize(*size)
        window.show()
        qtbot.waitExposed(window)
        windows.append(window)
        return window

    yield make
    qtbot.wait(20)  # a run the last scan asked for on the next event-loop turn starts, to be cancelled
    for window in windows:
        window.runner.cancel()
    assert QThreadPool.globalInstance().waitForDone(120_000), "a worker thread is still running"
    qtbot.waitUntil(lambda: not any(w.runner.busy for w in windows), timeout=60_000)
    assert not [t for t in threading.enumerate() if t.name.startswith("pipeline-")], "pipeline threads left"


def open_scan(qtbot, window: MainWindow, path: Path):
    with qtbot.waitSignal(window.scanLoaded, timeout=60_000) as blocker:
        window.files.open_path(path)
    return blocker.args[0]


def wait_run(qtbot, window: MainWindow) -> None:
    qtbot.waitUntil(
        lambda: (
            window.session.result is not None and window.session.result.complete and not window.runner.busy
        ),
        timeout=300_000,
    )


def _brighter_copy(tmp_path: Path, like: Path, offset: float) -> Path:
    """`like` with `offset` added to every voxel: the same geometry, other intensities."""
    img = nib.load(str(like))
    path = tmp_path / "brighter.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj).astype(np.float32) + offset, img.affine), path)
    return path


def _hover(qtbot, window: MainWindow, view: str, row: int, col: int) -> None:
    """Move the real mouse over pixel (row, col) of `view`."""
    box = window.grid.views[view]
    scene = box.box.mapViewToScene(QPointF((col + 0.5) * box._pixel[1], (row + 0.5) * box._pixel[0]))
    pos = box.canvas.mapFromScene(scene)
    qtbot.mouseMove(box.canvas.viewport(), pos + QPoint(2, 2))
    qtbot.mouseMove(box.canvas.viewport(), pos)


# -- readout ----------------------------------------------------------------------------------------
def test_readout_after_a_new_scan_a_new_map_and_the_mouse_leaving(
    qtbot, make_window, small_model, lgg_case, tmp_path
) -> None:
    window = make_window([small_model])
    volume = open_scan(qtbot, window, lgg_case[0])
    wait_run(qtbot, window)
    _hover(qtbot, window, "axial", 128, 100)
    qtbot.waitUntil(lambda: window.readout.text().startswith("mouse"))
    ijk = window.session.voxel_shown(*window.session.pointer.over)  # the pixel under the mouse
    assert f"voxel ({ijk[0]}, {ijk[1]}, {ijk[2]})" in window.readout.text()
    assert f"intensity {volume.data[ijk]:.5g}" in window.readout.text()

    # another map: its name and its value at once, nothing of the old one
    window.overlay_panel.map_combo.setCurrentIndex(window.overlay_panel.map_combo.findData("std"))
    std = float(window.session.result.maps["std"][ijk])
    assert f"{MAP_TITLES['std']} {std:.4f}" in window.readout.text()
    assert MAP_TITLES["entropy"] not in window.readout.text()

    # the mouse leaves the image: back to the crosshair
    QApplication.sendEvent(window.grid.views["axial"].canvas.viewport(), QEvent(QEvent.Type.Leave))
    assert window.readout.text().startswith("crosshair")

    # a new scan while the mouse is over the view: the new scan's value, at the new crosshair
    _hover(qtbot, window, "axial", 128, 100)
    qtbot.waitUntil(lambda: window.readout.text().startswith("mouse"))
    brighter = open_scan(qtbot, window, _brighter_copy(tmp_path, lgg_case[0], 1000.0))
    centre = window.session.crosshair
    assert centre == tuple(n // 2 for n in brighter.shape)
    assert window.readout.text().startswith(f"crosshair  voxel ({centre[0]}, {centre[1]}, {centre[2]})")
    assert f"intensity {brighter.data[centre]:.5g}" in window.readout.text()
    assert brighter.data[centre] == volume.data[centre] + 1000
    wait_run(qtbot, window)


# -- the panels at 1280x800 -------------------------------------------------------------------------
def _reachable(window: MainWindow, widget: QWidget) -> bool:
    """Visible, or brought into view by its scroll area, and not cut at the window's right edge."""
    scroll = widget.parent()
    while scroll is not None and not isinstance(scroll, QScrollArea):
        scroll = scroll.parent()
    if scroll is not None:
        scroll.ensureWidgetVisible(widget, 0, 0)
    QApplication.processEvents()
    shown = widget.viewport() if isinstance(widget, QAbstractScrollArea) else widget  # it covers its frame
    region = shown.visibleRegion()
    right = widget.mapTo(window, QPoint(widget.width(), 0)).x()
    return widget.isVisible() and not region.isEmpty() and right <= window.width()


def test_every_control_is_reachable_and_no_header_is_cut_at_1280x800(qtbot, make_window) -> None:
    specs = list_models()
    window = make_window(specs or None)
    assert (window.width(), window.height()) == (1280, 800), "the window must fit a 1280x800 screen"
    most_labels = max(specs, key=lambda s: len(s.labels)) if specs else None
    window.overlay_panel.set_labels(
        most_labels.labels
        if most_labels
        else [Label(0, "background", (0, 0, 0)), Label(1, "a", (1, 1, 1)), Label(2, "b", (2, 2, 2))]
    )
    docks = window.findChildren(QDockWidget)
    assert {"model", "display", "editing", "findings"} <= {d.objectName() for d in docks}
    tabs = set(window.tabifiedDockWidgets(window.docks["model"]))  # three tabs above the findings
    assert tabs == {window.docks["display"], window.docks["editing"]}
    checked = 0
    for dock in docks:
        dock.raise_()  # a tab of the right-hand docks
        QApplication.processEvents()
        for widget in dock.widget().findChildren(QWidget):
            if isinstance(widget, CONTROLS) and widget.isVisibleTo(dock) and widget.window() is window:
                assert _reachable(window, widget), (
                    f"{type(widget).__name__} {widget.objectName()!r} in {dock.objectName()}"
                )
                checked += 1
    groups = {g.title() for g in window.findChildren(QGroupBox)}
    assert {"Model", "Window", "Segmentation", "Uncertainty", "Ground truth", "Review", "Edit"} <= groups
    assert checked > 20

    # the findings' headers read in full beside long label names
    names = {1: "posterior hippocampus", 2: "anterior hippocampus"}
    lesion = Lesion(1, 10, 1.79, 18.0, 10, 32, (1, 1, 1), 0.192, True)
    window.findings.show_findings(
        Findings(
            "axial",
            "entropy",
            "38 of 38 axial slices segmented; Dice over those 38",
            [LabelFinding(n, 1.7, 0.1856, 0.902) for n in names.values()],
            "Slices",
            [(3, 0.2)],
            [lesion, lesion],
            "",
            names,
        )
    )
    window.docks["findings"].raise_()
    QApplication.processEvents()
    for table in (window.findings.table, window.findings.lesions):
        header = table.horizontalHeader()
        metrics = header.fontMetrics()
        for col in range(table.columnCount()):
            text = table.horizontalHeaderItem(col).text()
            assert header.sectionSize(col) >= metrics.horizontalAdvance(text) + 6, f"header {text!r} is cut"
        assert header.length() <= table.viewport().width() + 1, "the columns fit without scrolling"
    assert window.findings.table.rowCount() == 2 and window.findings.table.height() >= 3 * 20


# -- window / level ---------------------------------------------------------------------------------
def test_window_level_can_be_typed_and_says_custom(qtbot, make_window, lgg_case) -> None:
    window = make_window()
    open_scan(qtbot, window, lgg_case[0])
    panel, axial = window.overlay_panel, window.grid.views["axial"]
    assert panel.preset_combo.currentText() == display.MR_AUTO
    window.docks["display"].raise_()
    panel.width_box.lineEdit().selectAll()
    qtbot.keyClicks(panel.width_box, "200")
    qtbot.keyClick(panel.width_box, Qt.Key.Key_Return)
    level = window.session.window_level.level
    assert window.session.window_level.width == pytest.approx(200.0)
    assert panel.preset_combo.currentText() == display.CUSTOM
    assert list(axial.image.levels) == pytest.approx([level - 100, level + 100])
    panel.level_box.setValue(50.0)  # arrows or typing: the same
    assert window.session.window_level == display.WindowLevel(200.0, 50.0)

    window.session.apply_preset("CT brain")
    assert panel.preset_combo.currentText() == "CT brain" and panel.width_box.value() == pytest.approx(80.0)
    axial.windowDragged.emit(20.0, 0.0)  # a right-drag
    assert panel.preset_combo.currentText() == display.CUSTOM
    assert panel.width_box.value() == pytest.approx(window.session.window_level.width, abs=0.01)
    assert panel.width_box.value() > 80.0
    panel.preset_combo.setCurrentText(display.CUSTOM)
    panel.preset_combo.activated.emit(panel.preset_combo.currentIndex())  # choosing "Custom" changes nothing
    assert panel.width_box.value() > 80.0


# -- overlays ---------------------------------------------------------------------------------------
def test_label_colours_ignore_the_heatmap_and_sit_above_the_reference(qtbot, make_window) -> None:
    window = make_window()
    panel = window.overlay_panel
    yellow, blue = (255, 200, 0), (0, 160, 255)  # the hippocampus model's own colours, lost on viridis
    panel.set_labels(
        [Label(0, "background", (0, 0, 0)), Label(1, "anterior", yellow), Label(2, "posterior", blue)]
    )
    lut = panel.label_lut()
    assert tuple(lut[1, :3]) == display.LABEL_PALETTE[0] and tuple(lut[2, :3]) == display.LABEL_PALETTE[1]
    for name in display.HEATMAP_COLORMAPS:
        panel.cmap_combo.setCurrentColormap(name)
        assert np.array_equal(panel.label_lut(), lut), f"label colours changed with {name}"
    assert [panel.cmap_combo.itemText(i) for i in range(panel.cmap_combo.count())][:1] == ["viridis"]
    view = window.grid.views["axial"]
    assert view.labels.zValue() > view.truth.zValue() > view.heatmap.zValue(), (
        "AI outline above the reference"
    )
    assert panel.outline and panel.segmentation_opacity == 1.0  # an outline is opaque
    panel.toggle_outline()
    assert 0.2 <= panel.segmentation_opacity <= 0.5, "a fill leaves the anatomy visible"


# -- screenshot and layout --------------------------------------------------------------------------
def test_screenshot_of_the_views_and_of_the_window(
    qtbot, make_window, lgg_case, tmp_path, monkeypatch
) -> None:
    window = make_window()
    open_scan(qtbot, window, lgg_case[0])
    answer = [str(tmp_path / "shot")]  # no suffix: .png is added
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (answer[0], "PNG (*.png)"))
    next(a for a in window.actions() if a.text().startswith("Save screenshot of the &views")).trigger()
    image = QImage(str(tmp_path / "shot.png"))
    assert not image.isNull() and (image.width(), image.height()) == (
        window.view_area.width() * image.devicePixelRatio(),
        window.view_area.height() * image.devicePixelRatio(),
    )
    answer[0] = str(tmp_path / "whole.png")
    next(a for a in window.actions() if a.text().startswith("Save screenshot of the &window")).trigger()
    assert QImage(answer[0]).width() == window.width() * QImage(answer[0]).devicePixelRatio()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["shot.png", "whole.png"]
    # a refusing disk: one message, nothing half-written, the window keeps going
    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a: warnings.append(text))
    blocked = tmp_path / "file"
    blocked.write_text("")
    answer[0] = str(blocked / "shot.png")  # a folder that is a file
    next(a for a in window.actions() if a.text().startswith("Save screenshot of the &views")).trigger()
    assert len(warnings) == 1 and not list(tmp_path.glob(".tmp-*"))


def test_layout_and_window_are_restored_at_the_next_start(qtbot, make_window, lgg_case, tmp_path) -> None:
    ini = tmp_path / "kept.ini"
    first = make_window(ini=ini, size=(780, 720))  # within the offscreen screen (800x800): restored as is
    assert not first.layout_restored
    first.set_large_view("coronal")
    first.resizeDocks([first.docks["findings"]], [420], Qt.Orientation.Horizontal)
    first.docks["display"].raise_()
    QApplication.processEvents()
    width, size = first.docks["findings"].width(), (first.width(), first.height())
    ct = tmp_path / "ct.nii.gz"
    data = np.full((20, 20, 6), -1000.0, np.float32)
    data[5:15, 5:15, :] = 40.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), ct)
    open_scan(qtbot, first, ct)
    first.session.type_window(350.0, 40.0)  # a CT window by hand (Hounsfield units)
    first.close()

    second = make_window(ini=ini, size=None)
    assert second.layout_restored and second.grid.large == "coronal"
    assert second.menus.large_views["coronal"].isChecked()
    assert (second.width(), second.height()) == size
    assert abs(second.docks["findings"].width() - width) <= 10
    assert not second.docks["display"].visibleRegion().isEmpty()  # the tab last shown
    open_scan(qtbot, second, ct)
    assert second.session.window_level == display.WindowLevel(350.0, 40.0)
    assert second.overlay_panel.preset_combo.currentText() == display.CUSTOM
    open_scan(qtbot, second, lgg_case[0])  # an MR: its own (percentile) window
    assert second.session.preset == display.MR_AUTO
