"""The window shown while the viewer starts: the scan at once, the AI's libraries loading behind it.

Importing torch, aihwkit and MONAI (and the main window, which builds on them) takes seconds; reading
a scan takes a fraction of one. So `viewer.app` shows this window with the scan's middle axial slice
(the same slicing and window as the slice views: `get_slice`, `auto_window`) while a thread imports
the rest, then puts the main window in its place, at the same position and size.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtWidgets import QLabel, QMainWindow, QVBoxLayout, QWidget

from engine.preprocessing import get_slice
from engine.volume import Volume
from viewer.session.display import auto_window, pixel_size_mm

pg.setConfigOptions(imageAxisOrder="row-major", background="k", foreground="#d0d0d0")


class StartWindow(QMainWindow):
    """The scan (or an empty view) and one line saying what is still loading."""

    def __init__(self, title: str = "AIMC viewer") -> None:
        super().__init__()
        self.setWindowTitle(title)
        self.plot = pg.GraphicsLayoutWidget()
        self.view = self.plot.addViewBox(lockAspect=True, invertY=True, enableMouse=False)
        self.image = pg.ImageItem()
        self.view.addItem(self.image)
        self.status = QLabel("Starting the AI (torch, aihwkit, MONAI)…")
        self.status.setAlignment(Qt.AlignmentFlag.AlignCenter)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.status)
        self.setCentralWidget(body)

    def show_scan(self, volume: Volume, name: str) -> None:
        """The middle axial slice of `volume`, windowed as the viewer windows it at first."""
        index = volume.shape[2] // 2
        image = get_slice(volume.data, "axial", index)
        wl = auto_window(volume.data)
        self.image.setImage(np.ascontiguousarray(image), autoLevels=False, levels=(wl.low, wl.high))
        row_mm, col_mm = pixel_size_mm(volume.spacing, "axial")
        self.image.setRect(QRectF(0, 0, image.shape[1] * col_mm, image.shape[0] * row_mm))  # in mm
        self.view.autoRange(padding=0)
        self.setWindowTitle(f"AIMC viewer: {name}")
