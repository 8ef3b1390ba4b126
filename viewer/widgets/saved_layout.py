"""The window's layout kept across sessions in the user's settings: size and place, the docks' sizes and
tabs, and which plane is the large view. (The window/level per kind of scan is the session's:
`viewer/session/window_memory.py`.) Tests pass a settings file of their own, never the user's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray

from viewer.session.display import VIEWS

if TYPE_CHECKING:
    from viewer.widgets.main_window import MainWindow

GEOMETRY, STATE, LARGE = "layout/geometry", "layout/state", "layout/large"
STATE_VERSION = 2  # the dock arrangement's version: a layout saved by an older arrangement is ignored


def save_layout(window: MainWindow) -> None:
    store = window.session.store
    store.setValue(GEOMETRY, window.saveGeometry())
    store.setValue(STATE, window.saveState(STATE_VERSION))
    store.setValue(LARGE, window.grid.large)


def restore_layout(window: MainWindow) -> bool:
    """Put back what `save_layout` kept; False when nothing was kept (the first start)."""
    store = window.session.store
    geometry, state, large = store.value(GEOMETRY), store.value(STATE), store.value(LARGE)
    if isinstance(geometry, QByteArray | bytes):
        window.restoreGeometry(QByteArray(geometry))
    if isinstance(state, QByteArray | bytes):
        window.restoreState(QByteArray(state), STATE_VERSION)
    if large in VIEWS:
        window.set_large_view(str(large))
    return geometry is not None
