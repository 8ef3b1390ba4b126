"""Editing and review in the real window, driven headless with pytest-qt on the bundled LGG sample, digital:
the brush with the mouse and its ring, Ctrl+Z / Ctrl+Shift+Z, the Review panel and the findings' marks, the
question before a re-run replaces an edited result, and File > Export of the edited and the AI's labels."""

from __future__ import annotations

import dataclasses
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QPointF, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox  # noqa: E402

from tests import test_viewer_window as window_tests  # noqa: E402
from tests.test_viewer_window import SCAN, open_scan, wait_complete  # noqa: E402
from viewer.session.display import display_position  # noqa: E402
from viewer.session.edits import Tool  # noqa: E402
from viewer.session.review import Kind  # noqa: E402
from viewer.widgets.edit_tools import CANCEL, DISCARD, EXPORT, TOOLS, ask_unsaved_edits  # noqa: E402
from viewer.widgets.main_window import MainWindow  # noqa: E402

MOVE_MS = 40  # pyqtgraph drops mouse moves that follow each other faster than its rate limit
make_window, spec = window_tests.make_window, window_tests.spec  # their fixtures: a window, the model


def _viewport_point(window: MainWindow, view: str, ijk: tuple[int, int, int]):
    """Where voxel `ijk` is drawn in `view`'s canvas (the view shows its slice)."""
    shown = window.grid.views[view]
    row, col = display_position(window.session.volume.shape, view, ijk)
    pixel = shown._pixel  # (row, col) size in mm
    scene = shown.box.mapViewToScene(QPointF((col + 0.5) * pixel[1], (row + 0.5) * pixel[0]))
    return shown.canvas.mapFromScene(scene)


def _choose(qtbot, window: MainWindow, tool: Tool) -> None:
    qtbot.mouseClick(window.editing.panel.tools.button(list(TOOLS).index(tool)), Qt.MouseButton.LeftButton)
    assert window.session.editor.tool == tool


@pytest.mark.slow
def test_paint_undo_review_rerun_and_export_in_the_window(
    qtbot,
    make_window,
    spec,
    tmp_path,
    monkeypatch,
) -> None:
    window = make_window([spec], mode="digital")
    volume = open_scan(qtbot, window)
    wait_complete(qtbot, window)
    session, axial = window.session, window.grid.views["axial"]
    ai = session.result.segmentation.copy()
    window.set_large_view("axial")
    window.session.set_cursor((40, 128, 13))

    # paint with the mouse: a drag in the axial view, the ring of the brush under it
    _choose(qtbot, window, Tool.PAINT)
    window.editing.panel.brush.setValue(6.0)
    assert axial.box.edit_mode and axial._brush_mm == 6.0
    start, end = (
        _viewport_point(window, "axial", (40, 128, 13)),
        _viewport_point(window, "axial", (60, 128, 13)),
    )
    viewport = axial.canvas.viewport()
    qtbot.wait(MOVE_MS)
    qtbot.mouseMove(viewport, start)
    assert axial.ring.isVisible() and axial.ring.rect().width() == pytest.approx(6.0)
    qtbot.mousePress(viewport, Qt.MouseButton.LeftButton, pos=start)
    for t in np.linspace(0, 1, 6):
        qtbot.wait(MOVE_MS)
        qtbot.mouseMove(viewport, start + (end - start) * float(t))
    qtbot.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=end)
    edited = session.editor.edited()
    assert (edited[40:61, 128, 13] == 1).all() and np.array_equal(session.result.segmentation, ai)
    assert len(session.editor.history()) == 1 and axial.edits.isVisible()
    assert session.crosshair == (40, 128, 13)  # editing does not move the crosshair
    assert "+" in window.editing.panel.counts.text()

    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not session.editor.has_edits() and not axial.edits.isVisible()
    qtbot.keyClick(
        window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    )
    assert np.array_equal(session.editor.edited(), edited)
    _choose(qtbot, window, Tool.NAVIGATE)
    assert not axial.box.edit_mode and not axial.ring.isVisible()

    # review: the most uncertain first, the views centred on each, progress and marks
    panel = window.editing.review
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    review = session.review
    total = len(review.items)
    assert total >= 2 and panel.progress.text() == f"0 of {total} reviewed"
    assert session.crosshair == review.items[0].centre
    uncertainty = [item.mean_uncertainty for item in review.items]
    assert uncertainty == sorted(uncertainty, reverse=True)
    lesion = next(i for i, item in enumerate(review.items) if item.kind == Kind.COMPONENT)
    while review.current != lesion:
        qtbot.mouseClick(panel.accept_button, Qt.MouseButton.LeftButton)
    assert panel.progress.text() == f"{lesion} of {total} reviewed" and panel.remove_button.isEnabled()
    arrived: list = []
    session.events.findings_ready.connect(arrived.append)
    qtbot.mouseClick(panel.accept_button, Qt.MouseButton.LeftButton)
    window._update_findings()
    qtbot.waitUntil(lambda: bool(arrived), timeout=60_000)
    assert f"{lesion + 1} of {total} reviewed" == panel.progress.text()
    marks = [window.findings.lesions.item(r, 5).text() for r in range(window.findings.lesions.rowCount())]
    assert any("✓ accepted" in mark for mark in marks)

    # export: the edited labels with the review, and the AI's on demand
    folder, raw = tmp_path / "edited", tmp_path / "ai"
    assert window.exporter.export_to(folder)
    monkeypatch.setattr("viewer.widgets.edit_tools.ask_export_folder", lambda *a: str(raw))
    assert window.editing.export_ai_result()
    written = np.asarray(nib.load(folder / "seg.nii.gz").dataobj)
    assert np.array_equal(written, volume.to_source_order(session.editor.edited()))
    assert np.array_equal(np.asarray(nib.load(raw / "seg.nii.gz").dataobj), volume.to_source_order(ai))
    assert np.allclose(nib.load(folder / "seg.nii.gz").affine, nib.load(SCAN).affine)
    summary = json.loads((folder / "summary.json").read_text())
    added = summary["edits"]["labels"]["FLAIR abnormality"]["added_voxels"]
    assert added == int(((session.editor.edited() == 1) & (ai != 1)).sum()) > 0
    assert summary["edits"]["review"]["progress"] == f"{lesion + 1} of {total} reviewed"
    assert json.loads((raw / "summary.json").read_text())["edits"]["applied"] is False

    # a re-run asks first; keeping puts the edits on top of the new result, and starts a new review
    asked: list[bool] = []
    monkeypatch.setattr(
        "viewer.widgets.main_window.ask_keep_edits", lambda parent: asked.append(True) or True
    )
    digital, other = session.result, dataclasses.replace(spec, name=spec.name + "_again")
    monkeypatch.setattr(window.model_panel, "spec", lambda: other)
    monkeypatch.setattr(window.runner, "start", lambda *args: None)  # the new result need not be computed
    window.request_run(deliberate=True)
    assert asked and session.result is not digital and session.editor.edited()[50, 128, 13] == 1
    assert review.items == [] and panel.progress.text() == ""
    monkeypatch.setattr(
        "viewer.widgets.main_window.ask_keep_edits", lambda parent: asked.append(False) or False
    )
    monkeypatch.setattr(window.model_panel, "spec", lambda: spec)
    window.request_run()
    assert session.result is digital and len(asked) == 2 and not session.editor.has_edits()


def _click_in_dialog(button_text: str) -> None:
    """Once the next modal dialog shows, click its button whose text starts with `button_text`."""

    def click() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, click)
            return
        next(b for b in box.buttons() if b.text().startswith(button_text)).click()

    QTimer.singleShot(20, click)


def _paint_once(window: MainWindow, ijk: tuple[int, int, int]) -> None:
    """A hand-made AI result (nothing segmented, every slice done) and one brush stroke at `ijk`."""
    session = window.session
    session.result.finished[:] = True
    editor = session.editor
    editor.tool, editor.label, editor.brush_mm = Tool.PAINT, 1, 4.0
    session.move_slice("axial", ijk[2])
    row, col = display_position(session.volume.shape, "axial", ijk)
    for phase in ("press", "release"):
        assert session.edit("axial", phase, row, col) == ""
    assert editor.unsaved()


def test_unsaved_edits_are_never_dropped_by_opening_another_scan_or_closing(
    qtbot, make_window, spec, tmp_path, monkeypatch
) -> None:
    window = make_window([spec], mode="digital")
    monkeypatch.setattr(window.runner, "start", lambda *args: None)  # the AI's labels are made by hand
    first = open_scan(qtbot, window)
    qtbot.waitUntil(lambda: window.session.result is not None)
    session = window.session
    _paint_once(window, (128, 128, 13))

    # the real question: Cancel (the default) and Discard are what they say
    _click_in_dialog("Cancel")
    assert ask_unsaved_edits(window, "open another scan") == CANCEL
    _click_in_dialog("Discard")
    assert ask_unsaved_edits(window, "open another scan") == DISCARD

    answers: list[str] = []
    asked: list[str] = []
    monkeypatch.setattr(
        "viewer.widgets.edit_tools.ask_unsaved_edits",
        lambda parent, leaving: asked.append(leaving) or answers.pop(0),
    )
    other = tmp_path / "other.nii.gz"  # another file of the same kind: the model runs on it too
    shutil.copy(SCAN, other)

    # Cancel: nothing opens, nothing closes, the edits stay
    answers[:] = [CANCEL, CANCEL]
    with qtbot.assertNotEmitted(window.scanLoaded, wait=300):
        window.files.open_path(other)
    assert not window.close() and window.isVisible()
    assert asked == ["open another scan", "close the viewer"]
    assert session.volume is first and session.editor.unsaved()

    # Export: the edited segmentation is written, then the other scan opens
    folder = tmp_path / "edited"
    monkeypatch.setattr("viewer.widgets.edit_tools.ask_export_folder", lambda *args: str(folder))
    edited = session.editor.edited()
    answers[:] = [EXPORT]
    with qtbot.waitSignal(window.scanLoaded, timeout=30_000):
        window.files.open_path(other)
    written = np.asarray(nib.load(folder / "seg.nii.gz").dataobj)
    assert np.array_equal(written, first.to_source_order(edited)) and written.any()
    assert session.volume is not first and session.volume.source == str(other)
    assert not session.editor.has_edits()

    # an export refused (the reader cancels the folder): the scan stays
    qtbot.waitUntil(lambda: session.result is not None and session.result.volume is session.volume)
    _paint_once(window, (10, 10, 2))
    monkeypatch.setattr("viewer.widgets.edit_tools.ask_export_folder", lambda *args: None)
    answers[:] = [EXPORT]
    assert not window.close() and session.editor.unsaved()

    # Discard: the window closes
    answers[:] = [DISCARD]
    assert window.close() and not window.isVisible()
    assert not answers
