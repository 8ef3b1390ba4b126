"""A 2D nuclei image in the real window (pytest-qt, headless): one view, the nuclei model chosen by the gate,
the nuclei drawn one by one, counted and listed in the findings (a click centres the view on one), sizes in
pixels, and the export with the instance map and the table. Runs are digital (one pass)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PIL import Image  # noqa: E402
from PySide6.QtCore import QSettings, Qt, QThreadPool  # noqa: E402

from engine.model_store import MODELS_DIR, ModelSpec, find_model, list_models  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402
from tests.test_images2d import CENTRES, NUCLEI_MODEL, _cells  # noqa: E402
from viewer.session.display import display_position  # noqa: E402
from viewer.widgets.inference_worker import InferenceRunner  # noqa: E402
from viewer.widgets.main_window import MainWindow  # noqa: E402

RUN_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def specs() -> list[ModelSpec]:
    if not (MODELS_DIR / NUCLEI_MODEL / "model.json").exists():
        pytest.skip(f"the nuclei model {NUCLEI_MODEL} is not installed")
    return list_models()


@pytest.fixture
def window(qtbot, tmp_path, specs):
    settings = QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat)
    win = MainWindow(specs, settings, InferenceRunner())
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.model_panel.settingsChanged, timeout=10_000):
        win.model_panel.set_mode("digital")
    win.resize(1280, 800)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.runner.cancel()
    win.background.stop()
    assert QThreadPool.globalInstance().waitForDone(120_000), "a worker thread is still running"
    qtbot.waitUntil(lambda: not win.runner.busy and not win.background.busy, timeout=30_000)


def _open_and_count(qtbot, window: MainWindow, path: Path) -> int:
    """Open `path`, let the gate's model segment it, and wait for the nuclei to be listed."""
    with qtbot.waitSignal(window.scanLoaded, timeout=60_000):
        window.files.open_path(path)
    assert window.model_panel.spec().name.startswith("nuclei_")  # the gate chose a 2D microscopy model
    panel = window.findings
    qtbot.waitUntil(lambda: panel.tabs.tabText(0).startswith("Nuclei ("), timeout=RUN_TIMEOUT_MS)
    return panel.lesions.rowCount()


@pytest.mark.slow
def test_a_png_shows_in_one_view_with_its_nuclei_counted_listed_and_exported(qtbot, window, tmp_path) -> None:
    count = _open_and_count(qtbot, window, _cells(tmp_path))
    panel = window.findings
    assert count == 5 and panel.tabs.tabText(0) == "Nuclei (5)" and "5 nuclei" in panel.lesion_note.text()
    assert window.grid.views["axial"].isVisible()
    assert not window.grid.views["coronal"].isVisible() and not window.grid.views["sagittal"].isVisible()
    assert not any(letter.isVisible() for letter in window.grid.views["axial"].letters.values())  # no R/L/A/P
    assert (
        panel.table.horizontalHeaderItem(1).text() == "px"
        and panel.lesions.horizontalHeaderItem(1).text() == "px"
    )
    # drawn one by one: the touching pair is two outlines (or two fills with a gap), not one blob
    layers = window.session.slice_layers("axial", "entropy", outlined=False, show_truth=False)
    assert layers.labels[30, 30] == 1 and layers.labels[30, 46] == 1 and layers.labels[30, 38] == 0
    # a click on a nucleus centres the view on it
    panel.lesions.cellClicked.emit(3, 1)
    row, col = display_position(window.session.volume.shape, "axial", window.session.crosshair)
    assert abs(row - CENTRES[3][0]) <= 2 and abs(col - CENTRES[3][1]) <= 2
    readout = window.session.describe_voxel(window.session.crosshair, "entropy")
    assert readout.startswith(f"pixel (row {row}, col {col})") and "mm" not in readout
    written = window.exporter.export_to(tmp_path / "out")
    assert {p.name for p in written} >= {"instances.nii.gz", "nuclei.csv", "summary.json"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["nuclei"]["count"] == 5 and "area_px" in summary["labels"]["nucleus"]


@pytest.mark.slow
def test_a_real_nuclei_image_is_counted_near_its_instance_map(qtbot, window) -> None:
    image_id = find_model(NUCLEI_MODEL).data["split"]["test"][0]
    image = SHARED_DATA / "nuclei" / "images" / f"{image_id}.png"
    if not image.exists():
        pytest.skip(f"the nuclei data set is not at {image.parent.parent}")
    count = _open_and_count(qtbot, window, image)
    truth = np.asarray(Image.open(SHARED_DATA / "nuclei" / "labels" / f"{image_id}.png"))
    true_count = len(np.unique(truth[truth > 0]))
    assert abs(count - true_count) <= max(3, 0.25 * true_count), (count, true_count)
    assert window.findings.lesions.item(0, 0).data(Qt.ItemDataRole.UserRole) is not None
