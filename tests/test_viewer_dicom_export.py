"""File > Export in DICOM SEG and seg.nrrd from the real window (pytest-qt, headless, digital runs): a scan
opened from a DICOM series exports SEG, Parametric Map and seg.nrrd beside the NIfTI; a NIfTI scan with
DICOM SEG chosen gets a message, and nothing is written."""

from __future__ import annotations

import nibabel as nib
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from tests.test_dicom_export import check_binary_seg, lgg_series  # noqa: E402
from tests.test_viewer_window import SCAN, make_window, open_scan, spec, wait_complete  # noqa: E402, F401
from viewer.session.exporting import would_replace  # noqa: E402


@pytest.mark.slow
def test_dicom_scan_exports_seg_and_nrrd_and_a_nifti_scan_is_told_why_not(
    request, qtbot, tmp_path, monkeypatch
) -> None:
    window = request.getfixturevalue("make_window")([request.getfixturevalue("spec")], mode="digital")
    series = lgg_series(
        tmp_path / "series", slice(7, 27)
    )  # 20 slices (the fewest the gate lets run), the lesion in them
    open_scan(qtbot, window, series)
    wait_complete(qtbot, window)
    formats = window.menus.export_formats
    assert formats["nifti"].isChecked() and not formats["dicom-seg"].isChecked()
    formats["dicom-seg"].setChecked(True)
    formats["seg-nrrd"].setChecked(True)
    out = tmp_path / "out"
    asked: list[str] = []
    monkeypatch.setattr(
        "viewer.widgets.export_dialog.QFileDialog.getExistingDirectory",
        lambda *a, **k: asked.append("folder") or str(out),
    )
    with qtbot.waitSignal(window.exported) as blocker:
        window.exporter.export_results()
    names = sorted(p.name for p in blocker.args[0])
    assert names == [
        "seg.dcm",
        "seg.nii.gz",
        "seg.seg.nrrd",
        "summary.json",
        "uncertainty.dcm",
        "uncertainty.nii.gz",
    ]  # the probability map is off by default, in every format
    check_binary_seg(out / "seg.dcm", series, nib.load(out / "seg.nii.gz"), {1: "FLAIR abnormality"})
    assert would_replace(out, ("dicom-seg",)) == ["seg.dcm", "uncertainty.dcm", "summary.json"]

    warnings: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a: warnings.append(text))
    open_scan(qtbot, window, SCAN)  # a slice segmented is enough to be refused; no need for the rest
    qtbot.waitUntil(lambda: window.session.segmented()[0] > 0, timeout=120_000)
    with qtbot.waitSignal(window.runner.finished, timeout=120_000):
        window.runner.cancel()
    asked.clear()
    written: list = []
    window.exported.connect(written.append)
    window.exporter.export_results()
    assert warnings and "not read from a DICOM series" in warnings[0] and "Export formats" in warnings[0]
    assert not asked and not written  # refused before a folder is asked for: nothing written
