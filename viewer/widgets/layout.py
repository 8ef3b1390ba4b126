"""Where the main window's parts go: the views in the middle with the run line and the trust banners
(model gate, case verdict) above and the readout below, the model and display controls and the findings
docked on the right."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QHBoxLayout, QLabel, QMainWindow, QScrollArea, QVBoxLayout, QWidget
from superqt import QElidingLabel


def run_line() -> QElidingLabel:
    """The settings of the result on screen and how far it got."""
    label = QElidingLabel("No scan open")
    label.setStyleSheet("font-weight: bold; padding: 2px;")
    return label


def readout_line() -> QLabel:
    """What is at the crosshair or under the mouse; selectable, so a reader can copy a position.

    Elided rather than as wide as its text: a long readout must not widen the window past a small
    screen, nor (wrapped) change the views' height as the mouse moves.
    """
    label = QElidingLabel(" ")
    label.setStyleSheet("font-family: monospace; padding: 2px;")
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _column() -> tuple[QWidget, QVBoxLayout]:
    """A widget whose children go top to bottom, a few pixels from its edges."""
    widget = QWidget()
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(4, 4, 4, 4)
    return widget, layout


def central_area(
    run: QWidget, banners: tuple[QWidget, ...], views: QWidget, colour_bar: QWidget, readout: QWidget
) -> QWidget:
    area, column = _column()
    column.addWidget(run)
    for banner in banners:
        column.addWidget(banner)
    row = QHBoxLayout()
    row.addWidget(views, 1)
    row.addWidget(colour_bar)
    column.addLayout(row, 1)
    column.addWidget(readout)
    return area


def add_docks(window: QMainWindow, model_panel: QWidget, overlay_panel: QWidget, findings: QWidget) -> None:
    """The controls (scrollable, as they are taller than a small screen) above the findings, on the right."""
    controls, stack = _column()
    stack.addWidget(model_panel)
    stack.addWidget(overlay_panel)
    stack.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(controls)
    scroll.setMinimumWidth(340)
    docks = []
    for title, name, widget in (
        ("Model and display", "controls", scroll),
        ("Findings", "findings", findings),
    ):
        dock = QDockWidget(title, window)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        docks.append(dock)
    window.resizeDocks(docks, [controls.sizeHint().height(), 330], Qt.Orientation.Vertical)
