"""One slice plane (axial, coronal or sagittal): the image, its overlays, crosshair and edge letters.

Each view is a pyqtgraph ViewBox with stacked ImageItems (scan, uncertainty, labels, ground-truth
outline) drawn in millimetres, so the aspect follows the voxel spacing. The view only displays
what it is given and reports what the user does (wheel, click, right-drag, hover); the main
window tells the session, which decides what that means for the other views.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from pyqtgraph.GraphicsScene.mouseEvents import MouseClickEvent, MouseDragEvent
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QFont, QKeyEvent, QPen
from PySide6.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsSceneWheelEvent,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledSlider

from viewer.session.display import EDIT_COLOUR, ORIENTATION_LETTERS, TRUTH_LUT, display_shape, pixel_size_mm
from viewer.session.edits import EDIT_LUT
from viewer.session.session import SliceLayers
from viewer.widgets.overlay_panel import OverlayStyle

# Arrays are (row, column) like numpy and like `get_slice`, not pyqtgraph's default (x, y).
pg.setConfigOptions(imageAxisOrder="row-major", background="k", foreground="#d0d0d0")

CROSSHAIR_PEN = pg.mkPen((80, 200, 255, 170), width=1, style=Qt.PenStyle.DashLine)
LETTER_COLOUR = "#ffd75e"
EDIT_RING_COLOUR = pg.mkColor(*EDIT_COLOUR, 220)  # the colour of the edits it makes


class SliceViewBox(pg.ViewBox):
    """A ViewBox with a radiologist's mouse: wheel steps slices, right-drag sets window/level.

    Left click or drag places the crosshair; middle drag (or Shift + left drag) pans;
    Ctrl + wheel zooms; double-click asks for this view to become the large one.
    """

    sigWheelSteps = Signal(int)
    sigPointed = Signal(QPointF)  # view coordinates (mm) of a left click or drag
    sigWindowDrag = Signal(float, float)  # screen pixels moved while right-dragging
    sigDoubleClicked = Signal()
    sigEdit = Signal(str, QPointF)  # with an editing tool: "press", "drag" or "release" at view coordinates

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._wheel_rest = 0.0
        self.edit_mode = False  # a left click or drag edits instead of moving the crosshair

    def wheelEvent(self, ev: QGraphicsSceneWheelEvent, axis: int | None = None) -> None:  # noqa: N802 (Qt naming)
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        self._wheel_rest += ev.delta() / 120.0  # touchpads send fractions of a notch
        steps = int(self._wheel_rest)
        self._wheel_rest -= steps
        if steps:
            self.sigWheelSteps.emit(steps)
        ev.accept()

    def mouseClickEvent(self, ev: MouseClickEvent) -> None:  # noqa: N802
        if self._edit_click(ev):
            return
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            if ev.double():
                self.sigDoubleClicked.emit()
            else:
                self.sigPointed.emit(self.mapSceneToView(ev.scenePos()))
        else:
            ev.ignore()

    def mouseDragEvent(self, ev: MouseDragEvent, axis: int | None = None) -> None:  # noqa: N802
        if self._edit_drag(ev):
            return
        button = ev.button()
        shift = ev.modifiers() & Qt.KeyboardModifier.ShiftModifier
        if button == Qt.MouseButton.RightButton:
            ev.accept()
            delta = ev.screenPos() - ev.lastScreenPos()
            self.sigWindowDrag.emit(float(delta.x()), float(delta.y()))
        elif button == Qt.MouseButton.LeftButton and not shift:
            ev.accept()
            self.sigPointed.emit(self.mapSceneToView(ev.scenePos()))
        elif button in (Qt.MouseButton.MiddleButton, Qt.MouseButton.LeftButton):
            ev.accept()
            delta = self.mapToView(ev.pos()) - self.mapToView(ev.lastPos())
            self.translateBy(x=-delta.x(), y=-delta.y())
        else:
            ev.ignore()

    def _edit_click(self, ev: MouseClickEvent) -> bool:
        """In edit mode a left click is a press and release where it happened (a dab, a fill)."""
        if not self.edit_mode or ev.button() != Qt.MouseButton.LeftButton or ev.double():
            return False
        ev.accept()
        point = self.mapSceneToView(ev.scenePos())
        self.sigEdit.emit("press", point)
        self.sigEdit.emit("release", point)
        return True

    def _edit_drag(self, ev: MouseDragEvent) -> bool:
        """In edit mode a left drag (Shift+left still pans) is a stroke: press, drags, release."""
        shift = ev.modifiers() & Qt.KeyboardModifier.ShiftModifier
        if not self.edit_mode or ev.button() != Qt.MouseButton.LeftButton or shift:
            return False
        ev.accept()
        if ev.isStart():
            self.sigEdit.emit("press", self.mapSceneToView(ev.buttonDownScenePos()))
        self.sigEdit.emit("drag", self.mapSceneToView(ev.scenePos()))
        if ev.isFinish():
            self.sigEdit.emit("release", self.mapSceneToView(ev.scenePos()))
        return True


class SliceView(QWidget):
    """A titled slice plane with a slice slider; emits the user's intent, draws what it is told."""

    sliceChanged = Signal(str, int)  # view, new slice index
    pointed = Signal(str, int, int)  # view, row, col: place the crosshair here
    hovered = Signal(str, int, int)  # view, row, col under the mouse (-1, -1 when outside)
    windowDragged = Signal(float, float)
    activated = Signal(str)  # the user is working in this view (wheel, click, hover)
    enlargeRequested = Signal(str)
    editRequested = Signal(str, str, int, int)  # view, "press"/"drag"/"release", row, col

    def __init__(self, view: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = view
        self._shape: tuple[int, int, int] | None = None
        self._pixel = (1.0, 1.0)  # (row, col) size in mm
        self._rect = QRectF(0, 0, 1, 1)  # the slice's extent in mm
        self.setMinimumSize(160, 160)

        self.title = QLabel(view.capitalize())
        self.title.setStyleSheet("color: #e0e0e0; font-weight: bold; padding: 1px 4px;")
        self.canvas = pg.GraphicsLayoutWidget()
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.canvas.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # a click gives the arrow keys to this view
        self.canvas.ci.setContentsMargins(2, 2, 2, 2)
        self.canvas.ci.setSpacing(0)
        self.box = SliceViewBox()
        left, right, top, bottom = ORIENTATION_LETTERS[view]
        self.letters = {
            edge: self._letter(text)
            for edge, text in (("left", left), ("right", right), ("top", top), ("bottom", bottom))
        }
        self.canvas.addItem(self.letters["top"], row=0, col=1)
        self.canvas.addItem(self.letters["left"], row=1, col=0)
        self.canvas.addItem(self.box, row=1, col=1)
        self.canvas.addItem(self.letters["right"], row=1, col=2)
        self.canvas.addItem(self.letters["bottom"], row=2, col=1)

        self.image = pg.ImageItem(axisOrder="row-major")
        self.labels = pg.ImageItem(axisOrder="row-major")
        self.heatmap = pg.ImageItem(axisOrder="row-major")
        self.truth = pg.ImageItem(axisOrder="row-major")
        # outlines above the heatmap, so a thin contour is never hidden under a colour wash; the AI's
        # labels above the reference's outline, so where they agree the AI's colour still shows
        for z, item in enumerate((self.image, self.heatmap, self.truth, self.labels)):
            item.setZValue(z)
            self.box.addItem(item)
        self.vline = pg.InfiniteLine(angle=90, movable=False, pen=CROSSHAIR_PEN)
        self.hline = pg.InfiniteLine(angle=0, movable=False, pen=CROSSHAIR_PEN)
        for line in (self.vline, self.hline):
            line.setZValue(10)
            self.box.addItem(line, ignoreBounds=True)

        self.slider = QLabeledSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip("Slice (mouse wheel, Page Up / Page Down)")
        self.slider.valueChanged.connect(lambda value: self.sliceChanged.emit(self.view, int(value) - 1))

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.title)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.slider)

        self.box.sigWheelSteps.connect(self._on_wheel)
        self.box.sigPointed.connect(self._on_pointed)
        self.box.sigWindowDrag.connect(self.windowDragged)
        self.box.sigDoubleClicked.connect(lambda: self.enlargeRequested.emit(self.view))
        self.canvas.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self._setup_editing()
        self.canvas.viewport().installEventFilter(self)  # the scene reports moves, not the mouse leaving

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        """The mouse left the image's canvas: nothing is under it any more (the readout goes back)."""
        if event.type() == QEvent.Type.Leave and watched is self.canvas.viewport():
            self.hovered.emit(self.view, -1, -1)
        return False

    @staticmethod
    def _letter(text: str) -> pg.LabelItem:
        item = pg.LabelItem(text, color=LETTER_COLOUR, size="11pt", bold=True)
        item.setFont(QFont("DejaVu Sans", 11, QFont.Weight.Bold))
        return item

    # -- geometry ---------------------------------------------------------------------------
    def set_geometry(
        self, shape: tuple[int, int, int], spacing: tuple[float, float, float], slices: int
    ) -> None:
        """A new scan: pixel size in mm from the spacing, slider range, zoom to fit."""
        self._shape = shape
        self._pixel = pixel_size_mm(spacing, self.view)
        rows, cols = display_shape(shape, self.view)
        rect = QRectF(0, 0, cols * self._pixel[1], rows * self._pixel[0])
        for item in (self.image, self.labels, self.heatmap, self.truth):
            item.clear()
            item.setVisible(item is self.image)
        self._rect = rect
        self.slider.blockSignals(True)
        self.slider.setRange(1, slices)
        self.slider.blockSignals(False)
        self.reset_zoom()

    def reset_zoom(self) -> None:
        if self._shape is not None:
            self.box.setRange(self._rect, padding=0.02)

    def centre_on(self, row: int, col: int) -> None:
        """Pan so that pixel (row, col) is in the middle, where the reader has zoomed in; a view that shows
        the whole slice already shows it, and stays put."""
        (x0, x1), (y0, y1) = self.box.viewRange()
        if x1 - x0 >= self._rect.width() and y1 - y0 >= self._rect.height():
            return
        x, y = (col + 0.5) * self._pixel[1], (row + 0.5) * self._pixel[0]
        self.box.translateBy(x=x - (x0 + x1) / 2, y=y - (y0 + y1) / 2)

    def set_slice_number(self, index: int, total: int, note: str = "") -> None:
        """Title and slider show slice `index` (0-based) of `total`, without re-emitting."""
        self.title.setText(f"{self.view.capitalize()}   {index + 1} / {total}{'   ' + note if note else ''}")
        self.slider.blockSignals(True)
        self.slider.setValue(index + 1)
        self.slider.blockSignals(False)

    # -- layers -----------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, levels: tuple[float, float]) -> None:
        self.image.setImage(np.ascontiguousarray(image), autoLevels=False, levels=levels)
        self.image.setRect(self._rect)

    def set_levels(self, levels: tuple[float, float]) -> None:
        self.image.setLevels(levels)

    def set_labels(self, labels: np.ndarray | None, lut: np.ndarray, opacity: float) -> None:
        """uint8 labels with a 256x4 RGBA table: pyqtgraph's indexed fast path."""
        self._set_layer(self.labels, labels, lut, (0, 255), opacity)

    def set_heatmap(
        self, values: np.ndarray | None, lut: np.ndarray, levels: tuple[float, float], opacity: float
    ) -> None:
        self._set_layer(self.heatmap, values, lut, levels, opacity)

    def set_truth(self, outline: np.ndarray | None, lut: np.ndarray) -> None:
        self._set_layer(self.truth, outline, lut, (0, 255), 1.0)

    def _set_layer(
        self,
        item: pg.ImageItem,
        data: np.ndarray | None,
        lut: np.ndarray,
        levels: tuple[float, float],
        opacity: float,
    ) -> None:
        if data is None or opacity <= 0:
            item.setVisible(False)
            return
        item.setImage(np.ascontiguousarray(data), autoLevels=False, levels=levels, lut=lut)
        item.setRect(self._rect)
        item.setOpacity(opacity)
        item.setVisible(True)

    def show_layers(self, layers: SliceLayers, style: OverlayStyle, crosshair: tuple[int, int]) -> None:
        """The session's overlays of the slice on screen, drawn in the panel's style, and the crosshair."""
        self.set_labels(layers.labels, style.label_lut, style.label_opacity)
        self.set_heatmap(layers.heatmap, style.heatmap_lut, style.heatmap_levels, style.heatmap_opacity)
        self.set_truth(layers.truth, TRUTH_LUT)
        self._set_layer(self.edits, layers.edits, EDIT_LUT, (0, 255), 1.0)
        self.set_slice_number(layers.index, layers.count, layers.note)
        self.set_crosshair(*crosshair)

    def set_crosshair(self, row: int, col: int) -> None:
        self.vline.setPos((col + 0.5) * self._pixel[1])
        self.hline.setPos((row + 0.5) * self._pixel[0])

    # -- user input -------------------------------------------------------------------------
    def _pixel_at(self, point: QPointF) -> tuple[int, int] | None:
        if self._shape is None:
            return None
        rows, cols = display_shape(self._shape, self.view)
        row, col = math.floor(point.y() / self._pixel[0]), math.floor(point.x() / self._pixel[1])
        return (row, col) if 0 <= row < rows and 0 <= col < cols else None

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        """Arrow keys step slices when this view has the focus (elsewhere they keep their usual meaning)."""
        steps = {Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1}.get(Qt.Key(event.key()))
        if steps is None:
            super().keyPressEvent(event)
            return
        self.activated.emit(self.view)
        self.step(steps)

    def _on_wheel(self, steps: int) -> None:
        self.activated.emit(self.view)
        self.step(steps)  # wheel away from you moves up the stack (superior, anterior, left)

    def step(self, delta: int) -> None:
        if self._shape is not None:
            value = min(max(self.slider.value() + delta, self.slider.minimum()), self.slider.maximum())
            self.slider.setValue(value)

    def _on_pointed(self, point: QPointF) -> None:
        self.activated.emit(self.view)
        pixel = self._pixel_at(point)
        if pixel is not None:
            self.pointed.emit(self.view, *pixel)

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        if not self.box.sceneBoundingRect().contains(scene_pos):
            self.hovered.emit(self.view, -1, -1)
            return
        self.activated.emit(self.view)
        pixel = self._pixel_at(self.box.mapSceneToView(scene_pos))
        self.hovered.emit(self.view, *(pixel if pixel is not None else (-1, -1)))

    # -- editing ----------------------------------------------------------------------------
    def _setup_editing(self) -> None:
        """The reader's edits drawn above the AI's labels, the brush ring, and the mouse in edit mode."""
        self.edits = pg.ImageItem(axisOrder="row-major")
        self.edits.setZValue(5)
        self.box.addItem(self.edits)
        self.ring = QGraphicsEllipseItem()
        pen = QPen(EDIT_RING_COLOUR)
        pen.setCosmetic(True)  # one screen pixel wide at any zoom
        self.ring.setPen(pen)
        self.ring.setZValue(11)
        self.ring.setVisible(False)
        self.box.addItem(self.ring, ignoreBounds=True)
        self._brush_mm: float | None = None
        self.box.sigEdit.connect(self._on_edit)
        self.canvas.scene().sigMouseMoved.connect(self._move_ring)

    def set_editing(self, editing: bool, brush_mm: float | None) -> None:
        """Left button edits (`editing`) or moves the crosshair; a ring of `brush_mm` follows the mouse
        (None: no brush)."""
        self.box.edit_mode = editing
        self._brush_mm = brush_mm
        if brush_mm is None:
            self.ring.setVisible(False)
        else:
            centre = self.ring.rect().center()
            self.ring.setRect(
                QRectF(centre.x() - brush_mm / 2, centre.y() - brush_mm / 2, brush_mm, brush_mm)
            )

    def _move_ring(self, scene_pos: QPointF) -> None:
        inside = self.box.sceneBoundingRect().contains(scene_pos)
        self.ring.setVisible(self._brush_mm is not None and inside and self._shape is not None)
        if self._brush_mm is not None and inside:
            point, size = self.box.mapSceneToView(scene_pos), self._brush_mm
            self.ring.setRect(QRectF(point.x() - size / 2, point.y() - size / 2, size, size))

    def _on_edit(self, phase: str, point: QPointF) -> None:
        """A stroke's press and drags count where they are on the image; its release always arrives."""
        self.activated.emit(self.view)
        pixel = self._pixel_at(point)
        if pixel is not None or phase == "release":
            self.editRequested.emit(self.view, phase, *(pixel or (0, 0)))
