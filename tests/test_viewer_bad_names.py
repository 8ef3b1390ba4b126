"""File and folder names that are not valid UTF-8, opened in the real viewer window (issue 18).

SimpleITK's C++ core aborted the whole process on such a name, so the viewer died with the file it was
asked to open. Now the scan opens (or, when it cannot be read, a message says why) and the app keeps
running.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")
import SimpleITK as sitk  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from tests.test_engine_volume import _write_dicom_series  # noqa: E402
from viewer.widgets.inference_worker import InferenceRunner  # noqa: E402
from viewer.widgets.main_window import MainWindow  # noqa: E402


def _renamed(path: Path, raw_name: bytes) -> Path:
    """`path` moved to a name that is not UTF-8 (written first under an ASCII one: SimpleITK's writer
    cannot take such a name either)."""
    target = path.parent / os.fsdecode(raw_name)
    os.rename(path, target)
    return target


def test_non_utf8_names_open_or_say_why_and_the_viewer_keeps_running(qtbot, tmp_path, monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "critical", lambda parent, title, text, *a: shown.append(text))
    volume = np.arange(6 * 10 * 12, dtype=np.float32).reshape(6, 10, 12)  # z, y, x
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "scan.mha"))
    scan = _renamed(tmp_path / "scan.mha", b"scan-\xff\xfe.mha")
    (tmp_path / "dicom").mkdir()
    _write_dicom_series(
        tmp_path / "dicom", volume.astype(np.int16), (1.0, 1.0, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    series = _renamed(tmp_path / "dicom", b"dicom-\xe9")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.float32)), str(tmp_path / "flat.mha"))
    flat = _renamed(tmp_path / "flat.mha", b"flat-\xff.mha")

    window = MainWindow(
        [], QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat), InferenceRunner()
    )
    qtbot.addWidget(window)
    for path, shape in ((scan, (12, 10, 6)), (series, (12, 10, 6))):
        with qtbot.waitSignal(window.scanLoaded, timeout=30_000) as opened:
            window.files.open_path(path)
        assert opened.args[0].shape == shape
    with qtbot.waitSignal(window.openFailed, timeout=30_000) as failed:
        window.files.open_path(flat)
    assert "2D image" in failed.args[0] and len(shown) == 1
    assert window.session.volume is not None and window.session.volume.shape == (12, 10, 6)  # still open
