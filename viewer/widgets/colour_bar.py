"""The uncertainty heatmap's colour bar: the colormap over the map's fixed range, in its units.

It is drawn from the very table the heatmap uses, so the part below the threshold shows as
black (not drawn) exactly as on the image.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QWidget


class ColourBar(pg.GraphicsLayoutWidget):
    """A vertical, non-interactive pyqtgraph `ColorBarItem` with an axis and a title."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedWidth(92)
        self.ci.setContentsMargins(0, 6, 0, 6)
        self.bar = pg.ColorBarItem(
            values=(0.0, 1.0),
            width=16,
            interactive=False,
            colorMapMenu=False,
            orientation="vertical",
            rounding=0.001,
        )
        self.bar.getAxis("right").enableAutoSIPrefix(False)  # show nats as nats, not "x0.001"
        self.addItem(self.bar)

    def show_map(self, title: str, levels: tuple[float, float], lut: np.ndarray) -> None:
        """Show `lut` (256x4 uint8 RGBA) spanning `levels`, labelled `title`."""
        positions = np.linspace(0.0, 1.0, len(lut))
        self.bar.setColorMap(pg.ColorMap(positions, lut))
        self.bar.setLevels(levels)
        self.bar.getAxis("right").setLabel(title)
