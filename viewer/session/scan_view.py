"""`ScanView`: the scan on screen and how the reader looks at it, with or without a result: the crosshair
that links the three planes, the place under the mouse, and the window/level (remembered per kind of scan).

It is the part of the reading state that knows nothing of models, runs or edits; `ReadingSession` builds
on it.
"""

from __future__ import annotations

import numpy as np

from engine.preprocessing import AXES, get_slice
from engine.volume import Volume
from viewer.session.display import (
    CUSTOM,
    MR_AUTO,
    VIEWS,
    WindowLevel,
    clamp_voxel,
    display_position,
    voxel_at,
    window_for,
    window_step,
)
from viewer.session.events import SessionEvents
from viewer.session.readout import Pointer
from viewer.session.recent_files import SettingsStore
from viewer.session.window_memory import WindowMemory, scan_kind


class ScanView:
    """The open scan, the crosshair, the mouse pointer and the window/level; `events` announce changes."""

    def __init__(self, store: SettingsStore) -> None:
        self.store = store
        self.events = SessionEvents()
        self.volume: Volume | None = None
        self.crosshair: tuple[int, int, int] = (0, 0, 0)
        self.pointer = Pointer()  # the mouse over an image, for the readout
        self.window_level = WindowLevel(1.0, 0.5)
        self.preset = MR_AUTO
        self.data_range = 1.0
        self.windows = WindowMemory(store)  # the last window per kind of scan (CT, MR)
        self.scan_kind = "MR"

    def show_scan(self, volume: Volume) -> None:
        """Look at `volume` from its centre, in the window last used for its kind of scan (no event: the
        caller announces the opening once everything else is reset)."""
        self.pointer.leave()  # the place under the mouse belongs to the old scan's geometry
        self.volume = volume
        low, high = float(volume.data.min()), float(volume.data.max())
        self.data_range = (high - low) or 1.0
        self.scan_kind = scan_kind(volume.modality, low)
        self.crosshair = (volume.shape[0] // 2, volume.shape[1] // 2, volume.shape[2] // 2)
        self.preset, window = self.windows.recall(self.scan_kind, volume.data)
        self._set_window(window)

    # -- navigation ---------------------------------------------------------------------------
    def centre_on(self, ijk: tuple[int, int, int]) -> None:
        """Put the crosshair on `ijk` (a lesion's centre) and have every view bring it to its centre."""
        self.set_cursor(ijk)
        self.events.centred.emit()

    def set_cursor(self, ijk: tuple[int, int, int]) -> None:
        """Move the crosshair to voxel `ijk` (clamped into the scan)."""
        if self.volume is None:
            return
        old, self.crosshair = self.crosshair, clamp_voxel(self.volume.shape, ijk)
        self.events.cursor_moved.emit([v for v in VIEWS if old[AXES[v]] != self.crosshair[AXES[v]]])

    def move_slice(self, view: str, index: int) -> None:
        """Show slice `index` in `view`; the crosshair keeps its place in that plane."""
        ijk = list(self.crosshair)
        ijk[AXES[view]] = index
        self.set_cursor((ijk[0], ijk[1], ijk[2]))

    def point(self, view: str, row: int, col: int) -> None:
        """The reader clicked pixel (row, col) of `view`: the crosshair goes there."""
        if self.volume is not None:
            self.set_cursor(self.voxel_shown(view, row, col))

    def voxel_shown(self, view: str, row: int, col: int) -> tuple[int, int, int]:
        assert self.volume is not None
        return voxel_at(self.volume.shape, view, self.crosshair[AXES[view]], row, col)

    def crosshair_position(self, view: str) -> tuple[int, int]:
        """(row, col) of the crosshair in `view`."""
        assert self.volume is not None
        return display_position(self.volume.shape, view, self.crosshair)

    def image(self, view: str) -> np.ndarray:
        assert self.volume is not None
        return get_slice(self.volume.data, view, self.crosshair[AXES[view]])

    # -- window / level -----------------------------------------------------------------------
    def apply_preset(self, name: str) -> None:
        if self.volume is not None:
            self.preset = name
            self._set_window(window_for(name, self.volume.data))

    def drag_window(self, dx: float, dy: float) -> None:
        self.preset = CUSTOM
        self._set_window(self.window_level.dragged(dx, dy, self.data_range))

    def type_window(self, width: float, level: float) -> None:
        """A window the reader typed; a width below the smallest drag step is raised to it."""
        self.preset = CUSTOM
        self._set_window(WindowLevel(max(float(width), window_step(self.data_range)), float(level)))

    def _set_window(self, wl: WindowLevel) -> None:
        self.window_level = wl
        self.windows.remember(self.scan_kind, self.preset, wl)
        self.events.window_changed.emit(wl)
