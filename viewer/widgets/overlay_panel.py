"""Display controls: window/level preset, segmentation overlay, uncertainty heatmap, ground truth.

The panel holds the reader's display choices and says when one changes (`changed`); the main
window reads them back (`overlay_style()`) and redraws. Nothing here touches results or inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cmap import Colormap
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider, QLabeledSlider
from superqt.cmap import QColormapComboBox

from engine.model_store import Label
from engine.uncertainty import MAP_TITLES, MAP_UNITS, MAPS
from viewer.session.display import (
    CUSTOM,
    HEATMAP_COLORMAPS,
    PRESET_NAMES,
    WindowLevel,
    heatmap_lut,
    label_colours,
    label_lut,
    map_range,
)

FILL_OPACITY = 35  # % : a filled label tints the anatomy under it without hiding it


@dataclass(frozen=True)
class OverlayStyle:
    """How the label and heatmap layers are drawn: 256-entry RGBA tables, the heatmap's range, opacities."""

    label_lut: np.ndarray
    label_opacity: float
    heatmap_lut: np.ndarray
    heatmap_levels: tuple[float, float]
    heatmap_opacity: float


def _window_box(prefix: str, tip: str) -> QDoubleSpinBox:
    """A typed window value: reported on Enter, focus out or an arrow step, not on every keystroke."""
    box = QDoubleSpinBox()
    box.setPrefix(prefix)
    box.setRange(-1e7, 1e7)
    box.setDecimals(2)
    box.setKeyboardTracking(False)
    box.setToolTip(tip)
    return box


def _percent_slider(value: int) -> QLabeledSlider:
    slider = QLabeledSlider(Qt.Orientation.Horizontal)
    slider.setRange(0, 100)
    slider.setValue(value)
    return slider


class OverlayPanel(QWidget):
    """Window/level preset, segmentation and uncertainty overlay settings; `changed` on any edit."""

    changed = Signal()
    presetChosen = Signal(str)
    windowTyped = Signal(float, float)  # width, level

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._colors: dict[int, tuple[int, int, int]] = {}
        self._visible: dict[int, QCheckBox] = {}
        self._names: dict[int, str] = {}
        self._num_classes = 2

        display = QGroupBox("Window")
        self.preset_combo = QComboBox()
        self.preset_combo.addItems([*PRESET_NAMES, CUSTOM])
        self.preset_combo.setToolTip("Window/level preset (right-drag in a view, or type below, for Custom)")
        self.width_box = _window_box("W ", "Window width: the intensity range from black to white")
        self.level_box = _window_box("L ", "Window level: the intensity shown mid-grey")
        self.width_box.setMinimum(0.0)
        window_row = QHBoxLayout()
        window_row.addWidget(self.width_box)
        window_row.addWidget(self.level_box)
        form = QFormLayout(display)
        form.addRow("Window preset", self.preset_combo)
        form.addRow("Window / level", window_row)

        seg = QGroupBox("Segmentation")
        self.seg_check = QCheckBox("Show segmentation  (S)")
        self.seg_check.setChecked(True)
        self.seg_opacity = _percent_slider(FILL_OPACITY)
        self.seg_opacity.setToolTip("Opacity of a filled label (outlines are drawn opaque)")
        self.seg_style = QComboBox()
        self.seg_style.addItems(["Fill", "Outline"])
        self.seg_style.setCurrentIndex(1)  # an outline leaves the heatmap and the anatomy under it readable
        self.seg_style.setToolTip("Fill or outline (O)")
        self.labels_box = QGridLayout()
        self.labels_box.setContentsMargins(0, 0, 0, 0)
        form = QFormLayout(seg)
        form.addRow(self.seg_check)
        form.addRow("Style", self.seg_style)
        form.addRow("Fill opacity %", self.seg_opacity)
        form.addRow(self.labels_box)

        unc = QGroupBox("Uncertainty")
        self.heat_check = QCheckBox("Show uncertainty heatmap  (U)")
        self.heat_check.setChecked(True)
        self.map_combo = QComboBox()
        for name in MAPS:
            self.map_combo.addItem(MAP_TITLES[name], name)
        self.cmap_combo = QColormapComboBox()
        self.cmap_combo.addColormaps(list(HEATMAP_COLORMAPS))
        self.cmap_combo.setCurrentColormap(HEATMAP_COLORMAPS[0])
        self.heat_opacity = _percent_slider(60)
        self.threshold = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.threshold.setDecimals(3)
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setValue(0.2)  # a fifth of the map's range: hides the faint background haze
        self.threshold.setToolTip("Values below this are not drawn")
        form = QFormLayout(unc)
        form.addRow(self.heat_check)
        form.addRow("Map", self.map_combo)
        form.addRow("Colormap", self.cmap_combo)
        form.addRow("Opacity %", self.heat_opacity)
        self.threshold_row_label = QLabel("Hide below")
        form.addRow(self.threshold_row_label, self.threshold)

        truth = QGroupBox("Ground truth")
        self.truth_check = QCheckBox("Show ground-truth outline  (G)")
        self.truth_check.setChecked(True)
        self.truth_check.setEnabled(False)
        self.truth_name = QLabel("none loaded (File > Load ground truth…)")
        self.truth_name.setWordWrap(True)
        form = QFormLayout(truth)
        form.addRow(self.truth_check)
        form.addRow(self.truth_name)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for box in (display, seg, unc, truth):
            layout.addWidget(box)

        self.preset_combo.activated.connect(lambda _: self._on_preset_chosen())
        for box in (self.width_box, self.level_box):
            box.valueChanged.connect(
                lambda *_: self.windowTyped.emit(self.width_box.value(), self.level_box.value())
            )
        self.seg_style.currentIndexChanged.connect(lambda *_: self._enable_fill_opacity())
        self._enable_fill_opacity()
        for signal in (
            self.seg_check.toggled,
            self.seg_opacity.valueChanged,
            self.seg_style.currentIndexChanged,
            self.heat_check.toggled,
            self.heat_opacity.valueChanged,
            self.threshold.valueChanged,
            self.cmap_combo.currentColormapChanged,
            self.truth_check.toggled,
        ):
            signal.connect(lambda *_: self.changed.emit())
        self.map_combo.currentIndexChanged.connect(lambda *_: self._on_map_changed())
        self._on_map_changed()

    # -- labels -------------------------------------------------------------------------------
    def set_labels(self, labels: list[Label]) -> None:
        """One row per foreground label: visibility, colour (click to change), name."""
        while self.labels_box.count():
            item = self.labels_box.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        self._colors = label_colours([lab.value for lab in labels])  # never the model file's colours
        self._names = {lab.value: lab.name for lab in labels}
        self._visible = {}
        self._num_classes = max(len(labels), 2)
        for row, label in enumerate(lab for lab in labels if lab.value != 0):
            check = QCheckBox(label.name)
            check.setChecked(True)
            check.toggled.connect(lambda *_: self.changed.emit())
            swatch = QPushButton()
            swatch.setFixedSize(22, 18)
            swatch.setToolTip(f"Colour of {label.name}")
            self._paint_swatch(swatch, self._colors[label.value])
            swatch.clicked.connect(lambda _=False, v=label.value, b=swatch: self._choose_colour(v, b))
            self.labels_box.addWidget(swatch, row, 0)
            self.labels_box.addWidget(check, row, 1)
            self._visible[label.value] = check
        self._on_map_changed()

    def set_label_visible(self, value: int, visible: bool) -> None:
        self._visible[value].setChecked(visible)

    def set_label_colour(self, value: int, rgb: tuple[int, int, int]) -> None:
        self._colors[value] = rgb
        self.changed.emit()

    def _choose_colour(self, value: int, button: QPushButton) -> None:
        colour = QColorDialog.getColor(QColor(*self._colors[value]), self, f"Colour of {self._names[value]}")
        if colour.isValid():
            rgb = (colour.red(), colour.green(), colour.blue())
            self._paint_swatch(button, rgb)
            self.set_label_colour(value, rgb)

    @staticmethod
    def _paint_swatch(button: QPushButton, rgb: tuple[int, int, int]) -> None:
        button.setStyleSheet(f"background-color: rgb{tuple(rgb)}; border: 1px solid #888;")

    def label_lut(self) -> np.ndarray:
        return label_lut(self._colors, {v: c.isChecked() for v, c in self._visible.items()})

    def heatmap_lut(self) -> np.ndarray:
        return heatmap_lut(self.colormap_colors(), self.threshold_fraction)

    def overlay_style(self) -> OverlayStyle:
        return OverlayStyle(
            self.label_lut(),
            self.segmentation_opacity,
            self.heatmap_lut(),
            self.map_levels,
            self.heatmap_opacity,
        )

    # -- state read by the main window --------------------------------------------------------
    @property
    def segmentation_opacity(self) -> float:
        """Outlines opaque (a thin line hides little), fills at the fill opacity."""
        if not self.seg_check.isChecked():
            return 0.0
        return 1.0 if self.outline else self.seg_opacity.value() / 100.0

    @property
    def outline(self) -> bool:
        return self.seg_style.currentIndex() == 1

    @property
    def map_name(self) -> str:
        return str(self.map_combo.currentData())

    @property
    def map_levels(self) -> tuple[float, float]:
        return map_range(self.map_name, self._num_classes)

    @property
    def heatmap_opacity(self) -> float:
        return self.heat_opacity.value() / 100.0 if self.heat_check.isChecked() else 0.0

    @property
    def threshold_fraction(self) -> float:
        low, high = self.map_levels
        return (float(self.threshold.value()) - low) / (high - low)

    def colormap_colors(self) -> np.ndarray:
        cmap = self.cmap_combo.currentColormap() or Colormap(HEATMAP_COLORMAPS[0])
        return cmap.lut(256)

    @property
    def show_truth(self) -> bool:
        return self.truth_check.isEnabled() and self.truth_check.isChecked()

    def _on_map_changed(self) -> None:
        """Keep the threshold at the same fraction of the new map's range, in its units."""
        old_range = self.threshold.maximum() - self.threshold.minimum()
        fraction = (self.threshold.value() - self.threshold.minimum()) / old_range if old_range > 0 else 0.2
        low, high = self.map_levels
        self.threshold.blockSignals(True)
        self.threshold.setRange(low, high)
        self.threshold.setSingleStep((high - low) / 100)
        self.threshold.setValue(low + fraction * (high - low))
        self.threshold.blockSignals(False)
        self.threshold_row_label.setText(f"Hide below ({MAP_UNITS[self.map_name]})")
        self.changed.emit()

    # -- window / level -----------------------------------------------------------------------
    def _on_preset_chosen(self) -> None:
        name = self.preset_combo.currentText()
        if name != CUSTOM:  # "Custom" only says the window was set by hand
            self.presetChosen.emit(name)

    def show_window(self, wl: WindowLevel, preset: str, step: float) -> None:
        """The session's window in the boxes and its preset (or Custom) in the box, without re-emitting."""
        self.preset_combo.setCurrentText(preset)
        for box, value in ((self.width_box, wl.width), (self.level_box, wl.level)):
            box.blockSignals(True)
            box.setSingleStep(step)
            box.setValue(value)
            box.blockSignals(False)

    def _enable_fill_opacity(self) -> None:
        self.seg_opacity.setEnabled(not self.outline)

    # -- keyboard toggles ---------------------------------------------------------------------
    def toggle_segmentation(self) -> None:
        self.seg_check.toggle()

    def toggle_heatmap(self) -> None:
        self.heat_check.toggle()

    def toggle_outline(self) -> None:
        self.seg_style.setCurrentIndex(1 - self.seg_style.currentIndex())

    def toggle_truth(self) -> None:
        if self.truth_check.isEnabled():
            self.truth_check.toggle()

    def set_truth_loaded(self, name: str | None) -> None:
        self.truth_check.setEnabled(name is not None)
        self.truth_name.setText(name or "none loaded (File > Load ground truth…)")
        self.changed.emit()
