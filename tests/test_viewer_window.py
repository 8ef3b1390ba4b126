"""The real viewer window, driven headless with pytest-qt on the bundled LGG sample and the installed model.

Analog inference is slow on a CPU, so runs are kept small (the 27-slice sample, 1-2 MC samples) and
the programmed chips are shared between tests through one `ChipCache`.
Every test ends with no worker thread left running.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt, QThreadPool, QTimer, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent, QKeySequence  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from engine.analog.chips import ChipCache  # noqa: E402
from engine.findings import slice_ranking  # noqa: E402
from engine.model_store import ModelError, ModelSpec, default_model  # noqa: E402
from engine.postprocessing import keep_largest_component  # noqa: E402
from engine.preprocessing import get_slice  # noqa: E402
from engine.run_settings import RunSettings  # noqa: E402
from engine.volume import Volume, load_scan  # noqa: E402
from viewer.session.display import display_position, outline  # noqa: E402
from viewer.session.readout import DIGITAL_PREVIEW_NOTE  # noqa: E402
from viewer.widgets.help_dialogs import SHORTCUTS, about_html  # noqa: E402
from viewer.widgets.inference_worker import InferenceRunner  # noqa: E402
from viewer.widgets.main_window import MainWindow  # noqa: E402
from viewer.widgets.model_panel import describe_model  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "resources" / "samples"
SCAN = SAMPLES / "lgg_sample.nii.gz"  # 27 axial slices: small enough for analog runs here
LABELS = SAMPLES / "lgg_sample_label.nii.gz"
SLICES = 27
RUN_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    try:
        return default_model()
    except ModelError as exc:
        pytest.skip(f"no model installed ({exc}); train one into resources/models")


@pytest.fixture(scope="module")
def pool() -> ChipCache:
    """Chips programmed once for the whole module."""
    return ChipCache(capacity=4)


@pytest.fixture
def make_window(qtbot, tmp_path):
    windows: list[MainWindow] = []

    def make(
        specs: list[ModelSpec] | None, pool: ChipCache | None = None, mode: str = "analog", mc: int = 2
    ) -> MainWindow:
        settings = QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat)
        window = MainWindow(specs if specs is not None else [], settings, InferenceRunner(pool))
        # the panel reports its settings once, debounced, after the last change: before a scan opens
        with qtbot.waitSignal(window.model_panel.settingsChanged, timeout=10_000):
            window.model_panel.set_mode(mode)
            window.model_panel.mc_slider.setValue(mc)
            qtbot.addWidget(window)
            window.resize(1400, 900)
            window.show()
            qtbot.waitExposed(window)
            window.activateWindow()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.runner.cancel()
    assert QThreadPool.globalInstance().waitForDone(120_000), "a worker thread is still running"
    qtbot.waitUntil(lambda: not any(w.runner.busy for w in windows))  # the workers' last signals delivered
    assert not [t for t in threading.enumerate() if t.name.startswith("pipeline-")], "pipeline threads left"


def open_scan(qtbot, window: MainWindow, path: Path = SCAN) -> Volume:
    with qtbot.waitSignal(window.scanLoaded, timeout=30_000) as blocker:
        window.files.open_path(path)
    return blocker.args[0]


def wait_complete(qtbot, window: MainWindow, timeout: int = RUN_TIMEOUT_MS) -> None:
    if window.session.result is not None and window.session.result.complete and not window.runner.busy:
        return
    qtbot.waitSignal(
        window.runner.finished, timeout=timeout, check_params_cb=lambda job, complete: complete
    ).wait()


def collect_slices(window: MainWindow) -> list[int]:
    indices: list[int] = []
    window.runner.sliceFinished.connect(lambda job, index: indices.append(index))
    return indices


# -- reading a scan (no model needed) -------------------------------------------------------------
def _anisotropic_scan(tmp_path: Path) -> Path:
    """A scan stored L,P,S with 0.5 x 0.5 x 3 mm voxels and a bright marker on the patient's right."""
    data = np.zeros((40, 30, 10), np.float32)
    data[8:16, 10:20, 3:7] = 100.0  # file i grows towards patient Left, so small i is the Right side
    data[20:30, 5:8, :] = 50.0  # low file j: anterior side
    affine = np.diag([-0.5, -0.5, 3.0, 1.0])
    path = tmp_path / "aniso.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_views_orientation_aspect_and_navigation(qtbot, make_window, tmp_path) -> None:
    window = make_window(None)
    volume = open_scan(qtbot, window, _anisotropic_scan(tmp_path))
    axial, coronal = window.grid.views["axial"], window.grid.views["coronal"]
    assert [axial.letters[e].text for e in ("left", "right", "top", "bottom")] == ["R", "L", "A", "P"]
    assert [coronal.letters[e].text for e in ("left", "right", "top", "bottom")] == ["R", "L", "S", "I"]

    # what is shown is what the model sees, with the patient's right on the screen's left
    window.session.set_cursor((0, 0, 5))
    shown = axial.image.image
    assert np.array_equal(shown, get_slice(volume.data, "axial", 5))
    marker_cols = np.flatnonzero((shown == 100).any(axis=0))
    assert marker_cols.max() < shown.shape[1] / 2
    anterior_rows = np.flatnonzero((shown == 50).any(axis=1))
    assert anterior_rows.max() < shown.shape[0] / 2

    # aspect from the spacing: a coronal slice is 40 x 0.5 mm wide and 10 x 3 mm high
    rect = coronal.image.mapRectToParent(coronal.image.boundingRect())
    assert rect.width() == pytest.approx(20.0) and rect.height() == pytest.approx(30.0)

    # Page Up / Down and the wheel step slices of the active view; the crosshair follows
    window.set_large_view("axial")
    qtbot.keyClick(window, Qt.Key.Key_PageDown)
    assert window.session.crosshair[2] == 4 and axial.slider.value() == 5
    axial.box.sigWheelSteps.emit(3)
    assert window.session.crosshair[2] == 7
    axial.canvas.setFocus()
    qtbot.keyClick(axial.canvas.viewport(), Qt.Key.Key_Down)  # arrows step the focused view
    assert window.session.crosshair[2] == 6
    qtbot.keyClick(window, Qt.Key.Key_PageUp)
    assert window.session.crosshair[2] == 7
    qtbot.keyClick(window, Qt.Key.Key_2)
    assert window.grid.large == "coronal"
    # aim the mouse once the axial view has moved to its small cell
    qtbot.waitUntil(lambda: axial.box.sceneBoundingRect().width() < coronal.box.sceneBoundingRect().width())

    # a left click in the axial view moves the crosshair; the other views change slice
    target = (10, 12, 7)
    row, col = display_position(volume.shape, "axial", target)
    scene = axial.box.mapViewToScene(QPointF((col + 0.5) * 0.5, (row + 0.5) * 0.5))
    qtbot.mouseClick(axial.canvas.viewport(), Qt.MouseButton.LeftButton, pos=axial.canvas.mapFromScene(scene))
    assert window.session.crosshair == target
    assert window.grid.views["sagittal"].slider.value() == target[0] + 1

    # hovering reads out voxel, RAS mm and intensity (first a pixel off, within the same voxel)
    qtbot.mouseMove(axial.canvas.viewport(), axial.canvas.mapFromScene(scene) + QPoint(1, 1))
    qtbot.mouseMove(axial.canvas.viewport(), axial.canvas.mapFromScene(scene))
    qtbot.waitUntil(lambda: "voxel (10, 12, 7)" in window.readout.text())
    x, y, z = volume.world(target)
    assert f"RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm" in window.readout.text()
    assert "intensity" in window.readout.text()

    # window/level: presets and right-drag
    window.session.apply_preset("CT brain")
    assert list(axial.image.levels) == pytest.approx([0.0, 80.0])
    width = window.session.window_level.width
    axial.windowDragged.emit(40.0, 0.0)
    assert window.session.window_level.width > width
    assert window.session.recent.paths()[0] == str((tmp_path / "aniso.nii.gz").resolve())


def test_broken_file_shows_a_message_and_the_app_keeps_running(
    qtbot, make_window, tmp_path, monkeypatch
) -> None:
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text, *a: shown.append((title, text)))
    good = _anisotropic_scan(tmp_path)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(good.read_bytes()[:300])  # a download cut short
    window = make_window(None)
    with qtbot.waitSignal(window.openFailed, timeout=30_000) as blocker:
        window.files.open_path(broken)
    assert shown and shown[0][0] == "Cannot open scan" and "broken.nii.gz" in shown[0][1]
    assert "truncated" in blocker.args[0] or "not a valid" in blocker.args[0]
    assert window.session.volume is None
    open_scan(qtbot, window, good)  # still usable
    assert window.session.volume is not None


def test_drag_and_drop_opens_an_nrrd_and_recent_files_remember_it(qtbot, make_window, tmp_path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    nifti = load_scan(_anisotropic_scan(tmp_path))
    path = tmp_path / "scan.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(tmp_path / "aniso.nii.gz")), str(path))
    window = make_window(None)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(
        QPointF(20, 20),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    with qtbot.waitSignal(window.scanLoaded, timeout=30_000) as blocker:
        window.dropEvent(event)
    assert np.array_equal(blocker.args[0].data, nifti.data) and np.allclose(
        blocker.args[0].affine, nifti.affine
    )
    window.menus.recent.aboutToShow.emit()
    assert [a.text() for a in window.menus.recent.actions()] == [str(path.resolve())]


def test_help_lists_bound_shortcuts_and_about_names_versions_and_data(make_window) -> None:
    window = make_window(None)
    bound = {a.shortcut().toString() for a in window.actions() if not a.shortcut().isEmpty()}
    for keys, _ in SHORTCUTS:
        for key in keys.split(" / "):
            assert QKeySequence(key).toString() in bound, f"{key} is listed in Help but not bound"
    text = about_html()
    for name in ("torch", "aihwkit", "monai", "PySide6", "pyqtgraph", "Buda", "TCGA-LGG"):
        assert name in text


# -- inference with the installed model ---------------------------------------------------------
def test_analog_run_current_slice_first_and_ui_stays_responsive(
    qtbot, make_window, spec, pool, record_property
) -> None:
    window = make_window([spec], pool, mode="analog", mc=2)
    indices = collect_slices(window)
    stamps: list[float] = []  # event-loop turns while inference runs
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    window.runner.started.connect(lambda job: timer.start())  # from the moment inference runs
    statuses: list = []
    window.runner.status.connect(lambda job, status: statuses.append(status))
    fresh = pool.programmed_chips(spec, RunSettings(model=spec.name, mode="analog", mc_samples=2)) == 0
    events: list[tuple[str, int]] = []
    shown: list[tuple[str, str]] = []  # what the axial title and the readout say at each preview
    window.runner.slicePreviewed.connect(lambda job, k: events.append(("preview", k)))
    window.runner.slicePreviewed.connect(
        lambda job, k: shown.append((window.grid.views["axial"].title.text(), window.readout.text()))
    )
    window.runner.sliceFinished.connect(lambda job, k: events.append(("finished", k)))
    volume = open_scan(qtbot, window)
    wait_complete(qtbot, window)
    timer.stop()
    record_property("longest_event_loop_gap_s", float(np.diff(stamps).max()) if len(stamps) > 1 else None)
    if fresh:  # the status bar counted the chips being programmed
        assert [(st.chips_ready, st.chips_total) for st in statuses if st.chips_total] == [(0, 2), (1, 2)]
        # every slice showed digitally (the one on screen first), then the slice on screen from the first
        # chip, then from both, before it was finished
        first = indices[0]
        assert events[0] == ("preview", first)
        assert sorted(k for _, k in events[:SLICES]) == list(range(SLICES))
        assert events[SLICES : SLICES + 3] == [("preview", first)] * 2 + [("finished", first)]
        assert DIGITAL_PREVIEW_NOTE in shown[0][0] and shown[0][1].endswith("(digital preview)")
        chip_one_title, chip_one_readout = shown[SLICES]
        assert "(preview: 1 of 2 samples)" in chip_one_title and "(preview from 1 sample)" in chip_one_readout
        assert "(preview: 2 of 2 samples)" in shown[SLICES + 1][0]
    assert indices[0] == volume.shape[2] // 2, "the slice on screen comes first"
    assert sorted(indices) == list(range(SLICES))
    assert (
        window.session.result.complete
        and window.session.run.mode == "analog"
        and window.session.run.mc_samples == 2
    )
    assert window.session.result.maps["std"].max() > 0, "two chips disagree somewhere"
    if spec.keep_largest:  # the worker's post-processing reached the displayed result
        labels = window.session.result.segmentation
        assert np.array_equal(labels, keep_largest_component(labels, spec.keep_largest))
    # inference on the UI thread would run the whole volume without letting the event loop turn once
    assert len(stamps) >= 10, f"the event loop turned {len(stamps)} times during inference"
    ranked = slice_ranking(window.session.result)  # slices near the segmentation, computed in the background
    qtbot.waitUntil(lambda: window.findings.ranked.count() == min(len(ranked), 50), timeout=30_000)
    assert not window.progress.bar.isVisible()


def test_settings_changes_rerun_and_toggling_back_is_instant(qtbot, make_window, spec, pool) -> None:
    window = make_window([spec], pool, mode="analog", mc=2)
    open_scan(qtbot, window)
    wait_complete(qtbot, window)
    two = window.session.result
    panel = window.model_panel

    indices = collect_slices(window)
    with qtbot.waitSignal(window.runner.started, timeout=5_000):
        panel.mc_slider.setValue(1)  # debounced: one run after the slider stops
    wait_complete(qtbot, window)
    assert window.session.run == RunSettings(
        model=spec.name, mode="analog", mc_samples=1, noise_level=1.0, drift_s=3600.0
    )
    assert window.session.result is not two and len(indices) == SLICES
    assert pool.programmed_chips(spec, window.session.run) >= 2  # MC 1 reused the chips programmed for MC 2

    with qtbot.waitSignal(window.runner.started, timeout=5_000):
        panel.noise_slider.setValue(2.0)
    wait_complete(qtbot, window)
    assert window.session.run.noise_level == 2.0 and window.session.run.mc_samples == 1
    noisy = window.session.result

    with qtbot.waitSignal(window.runner.started, timeout=5_000):
        panel.digital_button.click()
    wait_complete(qtbot, window)
    assert window.session.run.mode == "digital" and window.session.result.maps["std"].max() == 0

    started: list = []
    window.runner.started.connect(started.append)
    with qtbot.waitSignal(window.resultShown, timeout=5_000):
        qtbot.keyClick(window, Qt.Key.Key_M)  # back to analog: cached
    assert window.session.result is noisy and window.session.result.complete
    assert not started and not window.runner.busy


def test_cancel_keeps_finished_slices_and_resume_does_the_rest(qtbot, make_window, spec, pool) -> None:
    window = make_window([spec], pool, mode="analog", mc=2)
    window.runner.sliceFinished.connect(lambda job, index: window.progress.cancel_button.click())
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT_MS) as blocker:
        open_scan(qtbot, window)
    assert blocker.args[1] is False
    done = int(window.session.result.finished.sum())
    assert 1 <= done < SLICES
    assert "Stopped" in window.statusBar().currentMessage()
    assert not window.progress.cancel_button.isVisible()

    window.runner.sliceFinished.disconnect()
    indices = collect_slices(window)
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    wait_complete(qtbot, window)
    assert len(indices) == SLICES - done and window.session.result.complete


def test_cancel_while_chips_are_programmed_leaves_no_preview(qtbot, make_window, spec) -> None:
    window = make_window([spec], ChipCache(capacity=1), mode="analog", mc=3)  # chips to program
    previews: list[str] = []
    window.runner.slicePreviewed.connect(
        lambda job, index: previews.append(window.grid.views["axial"].title.text())
    )
    window.runner.slicePreviewed.connect(lambda job, index: window.progress.cancel_button.click())
    with qtbot.waitSignal(window.runner.finished, timeout=RUN_TIMEOUT_MS) as blocker:
        open_scan(qtbot, window)
    assert blocker.args[1] is False
    assert previews and DIGITAL_PREVIEW_NOTE in previews[0]
    assert not window.session.result.finished.any() and window.session.result.previews == {}
    assert window.session.result.segmentation.max() == 0 and window.session.result.maps["entropy"].max() == 0
    assert "(not segmented yet)" in window.grid.views["axial"].title.text()
    assert "not segmented yet" in window.readout.text()


def test_export_reloads_aligned_and_a_failing_disk_loses_nothing(
    qtbot, make_window, spec, tmp_path, monkeypatch
) -> None:
    window = make_window([spec], mode="digital")
    volume = open_scan(qtbot, window)
    wait_complete(qtbot, window)
    window.menus.export_probability.setChecked(True)
    folder = tmp_path / "out"
    folder.mkdir()
    monkeypatch.setattr(
        "viewer.widgets.export_dialog.QFileDialog.getExistingDirectory", lambda *a, **k: str(folder)
    )
    with qtbot.waitSignal(window.exported) as blocker:
        window.exporter.export_results()
    names = sorted(p.name for p in blocker.args[0])
    assert names == [
        "probability.nii.gz",
        "seg.nii.gz",
        "summary.json",
        "uncertainty.nii.gz",
    ]  # as `aimc predict`
    target = folder / "seg.nii.gz"
    source = nib.load(SCAN)
    seg = nib.load(target)
    assert seg.shape == source.shape and np.allclose(seg.affine, source.affine)
    assert seg.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(seg.dataobj), volume.to_source_order(window.session.result.segmentation))
    entropy = nib.load(folder / "uncertainty.nii.gz").get_fdata()
    assert np.allclose(entropy, volume.to_source_order(window.session.result.maps["entropy"]), atol=1e-6)
    written = json.loads((folder / "summary.json").read_text())
    assert written["uncertainty_map"] == "predictive entropy (nats)"
    assert written["gate"]["fits"] and "verdict" in written and written["lesions"]
    assert np.array_equal(
        load_scan(target).data, window.session.result.segmentation
    )  # round trip through our reader

    asked: list[str] = []  # exporting there again asks before replacing the files
    monkeypatch.setattr(
        QMessageBox,
        "question",
        lambda parent, title, text, *a: asked.append(text) or QMessageBox.StandardButton.No,
    )
    written: list = []
    window.exported.connect(written.append)
    window.exporter.export_results()
    assert asked and "seg.nii.gz" in asked[0] and not written

    errors: list[str] = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text, *a: errors.append(text))
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where a folder should be")
    assert window.exporter.export_to(blocked / "out") == []
    assert errors and "could not write" in errors[0] and "nothing was lost" in errors[0]
    assert window.session.result.complete and window.session.result.segmentation is not None


def test_ground_truth_overlay_toggles_and_worker_errors_reach_the_user(
    qtbot, make_window, spec, monkeypatch
) -> None:
    window = make_window([spec], mode="digital")
    open_scan(qtbot, window)
    wait_complete(qtbot, window)
    window.files.load_ground_truth(LABELS)
    qtbot.waitUntil(lambda: window.session.truth is not None, timeout=10_000)
    qtbot.waitUntil(lambda: window.findings.table.item(0, 3).text() != "–", timeout=30_000)
    dice = window.findings.table.item(0, 3).text()
    assert dice != "–" and 0.0 <= float(dice) <= 1.0
    assert (
        window.grid.views["axial"].truth.isVisible()
        or not window.session.truth[..., window.session.crosshair[2]].any()
    )

    # the ranked slice list jumps to a slice; keyboard toggles drive the overlays
    qtbot.waitUntil(lambda: window.findings.ranked.count() > 0, timeout=30_000)
    first = window.findings.ranked.item(0)
    window.findings.ranked.itemClicked.emit(first)
    assert window.session.crosshair[2] == first.data(Qt.ItemDataRole.UserRole)
    axial = window.grid.views["axial"]
    assert axial.labels.isVisible() and axial.heatmap.isVisible()
    qtbot.keyClick(window, Qt.Key.Key_S)
    qtbot.keyClick(window, Qt.Key.Key_U)
    assert not axial.labels.isVisible() and not axial.heatmap.isVisible()
    qtbot.keyClick(window, Qt.Key.Key_S)
    shown = get_slice(window.session.result.segmentation, "axial", window.session.crosshair[2])
    assert np.array_equal(axial.labels.image, outline(shown))  # outline by default
    qtbot.keyClick(window, Qt.Key.Key_O)
    assert np.array_equal(axial.labels.image, shown)
    assert axial.labels.lut[1, 3] == 255
    window.overlay_panel.set_label_visible(1, False)
    assert axial.labels.lut[1, 3] == 0

    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a: warnings.append(text))

    def broken(*args):
        raise RuntimeError("simulated failure while loading the network")

    monkeypatch.setattr(window.runner.pool, "segmenter", broken)
    with qtbot.waitSignal(window.runner.finished, timeout=30_000):
        window.model_panel.mc_slider.setValue(3)
        window.model_panel.set_mode("analog")
    assert warnings and "simulated failure" in warnings[0]
    assert not window.runner.busy and not window.progress.bar.isVisible()


def test_model_line_says_test_dice_and_post_processing(make_window, spec) -> None:
    window = make_window([spec])
    text = window.model_panel.info.text()
    assert f"test Dice {spec.metrics['test']['digital']['mean_dice']:.3f} digital" in text
    chips = spec.metrics["test"]["analog_noise1_drift86400"]
    assert f"{chips['mean_dice']:.3f} ± {chips['std_dice_over_programmings']:.3f} on analog chips" in text
    assert describe_model(spec) in text and "FLAIR abnormality" in text  # the shipped model keeps components
    largest = describe_model(dataclasses.replace(spec, keep_largest=[1], component_fraction=1.0))
    assert "largest connected FLAIR abnormality" in largest
    plain = describe_model(dataclasses.replace(spec, keep_largest=[], metrics={}))
    assert "largest" not in plain and "Dice" not in plain
    kept = describe_model(dataclasses.replace(spec, keep_largest=[1], component_fraction=0.2))
    assert "FLAIR abnormality regions of at least 20% of the largest's size" in kept
    assert "mirrored" not in describe_model(dataclasses.replace(spec, flip_average=False))
    assert "mirrored left-right and averages" in describe_model(dataclasses.replace(spec, flip_average=True))
    assert "windows" not in describe_model(dataclasses.replace(spec, sliding_window=None))
    windowed = describe_model(dataclasses.replace(spec, sliding_window=(128, 96)))
    assert "reads each slice by overlapping 128x96 windows" in windowed
