"""Trust in the real window, driven headless with pytest-qt and every installed model: the gate's banner,
the model list's marks, the deliberate run outside the training domain and its marks, the verdict shown
only once the result is complete, and the lesion table that centres the views.

Runs are digital (one pass: fast on a CPU). Tests wait on states, never on time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QRectF, QSettings, Qt, QThreadPool  # noqa: E402

from engine.model_store import ModelSpec, list_models  # noqa: E402
from engine.volume import Volume  # noqa: E402
from tests.conftest import SHARED_DATA  # noqa: E402
from viewer.session.display import pixel_size_mm  # noqa: E402
from viewer.session.notices import SCORE_WORDS  # noqa: E402
from viewer.session.verdicts import VerdictState  # noqa: E402
from viewer.widgets.inference_worker import InferenceRunner  # noqa: E402
from viewer.widgets.main_window import MainWindow  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "resources" / "samples" / "lgg_sample.nii.gz"
CT = SHARED_DATA / "ct_example" / "example_ct_sm.nii.gz"
HIPPOCAMPUS = SHARED_DATA / "hippocampus" / "imagesTr" / "hippocampus_004.nii.gz"
RUN_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def specs() -> list[ModelSpec]:
    installed = list_models()
    if not {"lgg_unet_hwa", "hippocampus_unet_hwa"} <= {s.name for s in installed}:
        pytest.skip("the LGG and hippocampus models are not installed")
    return installed


@pytest.fixture
def window(qtbot, tmp_path, specs):
    """A window with every installed model, the LGG U-Net selected, in digital mode."""
    settings = QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat)
    win = MainWindow(specs, settings, InferenceRunner())
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.model_panel.settingsChanged, timeout=10_000):
        win.model_panel.model_combo.setCurrentIndex(win.model_panel.model_combo.findData("lgg_unet_hwa"))
        win.model_panel.set_mode("digital")
    win.resize(1280, 800)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.runner.cancel()
    win.background.stop()  # answers still to come would reach widgets about to be deleted
    assert QThreadPool.globalInstance().waitForDone(120_000), "a worker thread is still running"
    qtbot.waitUntil(lambda: not win.runner.busy and not win.background.busy, timeout=30_000)


def _open(qtbot, window: MainWindow, path: Path) -> Volume:
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    with qtbot.waitSignal(window.scanLoaded, timeout=60_000) as blocker:
        window.files.open_path(path)
    return blocker.args[0]


def _wait_verdict(qtbot, window: MainWindow) -> None:
    """Until the result on screen is complete and its verdict (or the lack of one) is shown."""
    settled = (VerdictState.READY, VerdictState.UNCALIBRATED, VerdictState.FAILED)
    qtbot.waitUntil(lambda: window.session.case_verdict().state in settled, timeout=RUN_TIMEOUT_MS)


def _combo_texts(window: MainWindow) -> dict[str, str]:
    combo = window.model_panel.model_combo
    return {combo.itemData(i): combo.itemText(i) for i in range(combo.count())}


def test_lgg_sample_gets_its_model_then_the_verdict_only_once_complete_and_lesions_jump(
    qtbot, window, tmp_path
) -> None:
    shown_while_partial: list[str] = []  # what the verdict banner said at each finished slice
    window.runner.sliceFinished.connect(
        lambda job, index: (
            shown_while_partial.append(window.trust.verdict_banner.notice.headline)
            if not job.result.complete
            else None
        )
    )
    volume = _open(qtbot, window, SAMPLE)
    assert window.model_panel.spec().name == "lgg_unet_hwa" and not window.trust.gate_banner.isVisible()
    texts = _combo_texts(window)
    assert (
        texts["lgg_unet_hwa"] == "✓ lgg_unet_hwa"
        and texts["hippocampus_unet_hwa"] == "✗ hippocampus_unet_hwa"
    )
    assert window.model_panel.fit.isVisible() and window.model_panel.fit.text().startswith("Fits this scan: ")
    _wait_verdict(qtbot, window)
    assert shown_while_partial and set(shown_while_partial) == {"Case verdict: once every slice is segmented"}
    banner = window.trust.verdict_banner
    case = window.session.case_verdict()
    assert case.state is VerdictState.READY and window.session.result.complete and banner.isVisible()
    headline = (
        "Review carefully" if case.verdict.review else f"Expected Dice {case.verdict.expected_dice:.2f}"
    )
    assert banner.notice.headline.startswith(headline) and headline in banner.label.text()
    assert "distribution" in banner.label.text()  # what the numbers come from is said on hover
    assert f"from the {SCORE_WORDS[case.verdict.score]}" in banner.label.toolTip()

    # the lesion table, most uncertain first; a click centres the three views on the lesion
    panel = window.findings
    qtbot.waitUntil(lambda: panel.lesions.rowCount() > 0, timeout=60_000)
    assert panel.tabs.tabText(0) == f"Lesions ({panel.lesions.rowCount()})"
    centre = panel.lesions.item(0, 0).data(Qt.ItemDataRole.UserRole)
    axial = window.grid.views["axial"]
    axial.box.setRange(QRectF(0, 0, 20, 20), padding=0)  # zoomed into a corner: the view must pan to it
    panel.lesions.cellClicked.emit(0, 2)
    assert window.session.crosshair == tuple(centre)
    assert axial.slider.value() == centre[2] + 1
    assert window.grid.views["sagittal"].slider.value() == centre[0] + 1
    (x0, x1), (y0, y1) = axial.box.viewRange()
    row, col = window.session.crosshair_position("axial")
    height, width = pixel_size_mm(volume.spacing, "axial")
    x, y = (col + 0.5) * width, (row + 0.5) * height
    assert (
        x1 - x0 < 128 and abs(x - (x0 + x1) / 2) < 1 and abs(y - (y0 + y1) / 2) < 1
    )  # centred, still zoomed

    written = window.exporter.export_to(tmp_path / "out")
    assert written
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["verdict"]["available"] and summary["verdict"]["review"] == case.verdict.review
    assert summary["gate"]["fits"] and summary["lesions"][0]["centre_voxel"] == list(centre)


def test_ct_gets_a_banner_and_no_run_until_run_anyway_then_carries_the_mark(qtbot, window) -> None:
    started: list = []
    window.runner.started.connect(started.append)
    _open(qtbot, window, CT)
    qtbot.waitUntil(lambda: window.session.blocked == "lgg_unet_hwa", timeout=10_000)
    gate = window.trust.gate_banner
    assert gate.isVisible() and gate.notice.headline == "No installed model fits this scan"
    assert "negative (CT-like)" in gate.label.text() and gate.button.isVisible()
    assert not started and window.session.result is None
    assert all(text.startswith("✗ ") for text in _combo_texts(window).values())
    assert window.run_label.text() == "lgg_unet_hwa was not run: it does not fit this scan"
    assert "OUTSIDE" not in window.windowTitle()

    gate.button.click()  # Run anyway: the reader asks for it
    assert started and started[0].spec.name == "lgg_unet_hwa"
    assert (
        window.session.outside_domain
        and gate.notice.headline == "Outside the model's training domain: lgg_unet_hwa"
    )
    assert not gate.button.isVisible()
    assert "OUTSIDE THE MODEL'S TRAINING DOMAIN" in window.windowTitle()
    assert window.run_label.text().startswith("⚠ OUTSIDE THE MODEL'S TRAINING DOMAIN")
    _wait_verdict(qtbot, window)
    assert window.trust.verdict_banner.isVisible() and "OUTSIDE" in window.windowTitle()


def test_hippocampus_gets_its_calibrated_model_and_the_lgg_sample_switches_back(qtbot, window) -> None:
    started: list = []
    window.runner.started.connect(started.append)
    _open(qtbot, window, HIPPOCAMPUS)
    assert window.model_panel.spec().name == "hippocampus_unet_hwa"
    gate = window.trust.gate_banner
    assert gate.isVisible() and gate.notice.headline == "Model switched to hippocampus_unet_hwa"
    assert window.overlay_panel.map_name and window.session.spec.name == "hippocampus_unet_hwa"
    _wait_verdict(qtbot, window)
    assert started[0].spec.name == "hippocampus_unet_hwa"
    assert window.trust.verdict_banner.notice.headline.startswith("Expected Dice ")
    qtbot.waitUntil(lambda: window.findings.lesions.rowCount() > 0, timeout=60_000)
    note = window.findings.lesion_note.text()
    assert "flagged for review" in note or note.startswith("None flagged"), note

    _open(qtbot, window, SAMPLE)
    assert window.model_panel.spec().name == "lgg_unet_hwa"
    assert window.trust.gate_banner.notice.headline == "Model switched to lgg_unet_hwa"
    qtbot.waitUntil(lambda: len(started) == 2, timeout=10_000)
    assert started[1].spec.name == "lgg_unet_hwa"
    window.runner.cancel()  # and wait: pytest-qt deletes the window before the fixture's teardown runs
    qtbot.waitUntil(lambda: not window.runner.busy, timeout=60_000)
