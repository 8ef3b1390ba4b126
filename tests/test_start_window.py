"""The viewer's start: the start window shows the scan before torch, aihwkit and MONAI are imported
(what makes the window and the scan appear within seconds; timed by scripts/viewer_start.py, not here)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO, SAMPLES

_SHOW = """
import sys
from PySide6.QtWidgets import QApplication
app = QApplication([])
from engine.volume import load_scan
from viewer.widgets.start_window import StartWindow
start = StartWindow()
start.show()
start.show_scan(load_scan(sys.argv[1]), "lgg_sample.nii.gz")
app.processEvents()
heavy = sorted(m for m in ("torch", "aihwkit", "monai") if m in sys.modules)
print(start.image.image.shape, start.windowTitle(), heavy)
"""


def test_the_start_window_shows_the_scan_before_the_heavy_imports() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "QT_QPA_PLATFORM": "offscreen"}
    sample = str(SAMPLES / "lgg_sample.nii.gz")
    out = subprocess.run(
        [sys.executable, "-c", _SHOW, sample], env=env, capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip().endswith("AIMC viewer: lgg_sample.nii.gz []"), out.stdout + out.stderr


def test_the_start_window_draws_the_middle_slice_as_the_slice_views_do(qtbot) -> None:
    from engine.preprocessing import get_slice
    from engine.volume import load_scan
    from viewer.widgets.start_window import StartWindow

    volume = load_scan(SAMPLES / "lgg_sample.nii.gz")
    start = StartWindow()
    qtbot.addWidget(start)
    start.show_scan(volume, "lgg_sample.nii.gz")
    middle = get_slice(volume.data, "axial", volume.shape[2] // 2)
    assert np.array_equal(start.image.image, middle)
    low, high = start.image.levels
    assert low < high and start.image.width() == middle.shape[1]
