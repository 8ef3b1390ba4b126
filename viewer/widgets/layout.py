"""Where the main window's parts go: the views in the middle with the run line and the trust banners
(model gate, case verdict) above and the readout below, the model and display controls and the findings
docked on the right."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)
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
    label.setStyleSheet("padding: 2px;")  # proportional: the whole line fits a 1280-pixel screen
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
) -> tuple[QWidget, QWidget]:
    """The central widget, and within it the view area (the planes and the colour bar: a screenshot's)."""
    area, column = _column()
    column.addWidget(run)
    for banner in banners:
        column.addWidget(banner)
    view_area = QWidget()
    row = QHBoxLayout(view_area)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(views, 1)
    row.addWidget(colour_bar)
    column.addWidget(view_area, 1)
    column.addWidget(readout)
    return area, view_area


CONTROLS_WIDTH = 340


def _scrolling(widget: QWidget) -> QScrollArea:
    """`widget` at its natural height, scrolled when the dock is shorter than it (a small screen)."""
    holder, column = _column()
    column.addWidget(widget)
    column.addStretch(1)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setWidget(holder)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    bar = scroll.verticalScrollBar().sizeHint().width()  # never cut a control: as wide as the widest row
    scroll.setMinimumWidth(
        max(CONTROLS_WIDTH, holder.minimumSizeHint().width() + bar + 2 * scroll.frameWidth())
    )
    return scroll


def add_docks(
    window: QMainWindow, model_panel: QWidget, overlay_panel: QWidget, findings: QWidget
) -> dict[str, QDockWidget]:
    """On the right: the model and the display controls as two tabs (each scrolls where the screen is
    short), the findings below them. Every control is reachable at 1280x800 (tested at that size)."""
    docks = {}
    for title, name, widget in (
        ("Model", "model", _scrolling(model_panel)),
        ("Display", "display", _scrolling(overlay_panel)),
        ("Findings", "findings", findings),
    ):
        dock = QDockWidget(title, window)
        dock.setObjectName(name)  # saveState / restoreState key
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        docks[name] = dock
    for name in ("model", "display"):  # their tabs name them: no title bar above, more room below
        docks[name].setTitleBarWidget(QWidget())
    window.tabifyDockWidget(docks["model"], docks["display"])
    window.setTabPosition(Qt.DockWidgetArea.RightDockWidgetArea, QTabWidget.TabPosition.North)
    docks["model"].raise_()
    window.resizeDocks([docks["model"], docks["findings"]], [460, 330], Qt.Orientation.Vertical)
    return docks


def add_control_tab(
    window: QMainWindow, docks: dict[str, QDockWidget], title: str, name: str, widget: QWidget
) -> QDockWidget:
    """Another tab beside Model and Display (scrolling as they do), added to `docks`; Model stays in front."""
    dock = QDockWidget(title, window)
    dock.setObjectName(name)
    dock.setWidget(_scrolling(widget))
    dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
    dock.setTitleBarWidget(QWidget())
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    window.tabifyDockWidget(docks["display"], dock)
    docks["model"].raise_()
    docks[name] = dock
    return dock
