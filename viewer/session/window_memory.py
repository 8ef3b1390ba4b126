"""The window/level a reader last chose per kind of scan, kept in the user's settings across sessions.

CT intensities are Hounsfield units, the same on every scanner, so a CT window set by hand is carried
to the next CT. MR (and any scan that is not CT) has no absolute scale: its preset is remembered, but a
window typed or dragged on one MR scan would be meaningless on the next, which gets the percentile
window instead.
"""

from __future__ import annotations

import numpy as np

from viewer.session.display import CUSTOM, MR_AUTO, PRESET_NAMES, WindowLevel, window_for
from viewer.session.recent_files import SettingsStore

DEFAULTS = {"CT": "CT abdomen", "MR": MR_AUTO}


def scan_kind(modality: str, lowest: float) -> str:
    """ "CT" for a CT (by its DICOM modality, or air in Hounsfield units), else "MR"."""
    return "CT" if modality.upper() == "CT" or lowest < -500 else "MR"


class WindowMemory:
    """Remembers `remember`'s preset (and, for CT, a custom window) per scan kind; `recall` gives it back."""

    def __init__(self, store: SettingsStore) -> None:
        self.store = store

    def remember(self, kind: str, preset: str, wl: WindowLevel) -> None:
        if preset == CUSTOM and kind != "CT":
            return
        self.store.setValue(f"window/{kind}/preset", preset)
        if preset == CUSTOM:
            self.store.setValue(f"window/{kind}/width", wl.width)
            self.store.setValue(f"window/{kind}/level", wl.level)

    def recall(self, kind: str, data: np.ndarray) -> tuple[str, WindowLevel]:
        """The preset remembered for `kind` and its window on `data`, or (CUSTOM, the window) for a CT
        window set by hand."""
        preset = str(self.store.value(f"window/{kind}/preset", DEFAULTS[kind]))
        if preset == CUSTOM:
            try:
                width = float(self.store.value(f"window/{kind}/width"))  # type: ignore[arg-type]
                level = float(self.store.value(f"window/{kind}/level"))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                width, level = 0.0, 0.0
            if width > 0:
                return CUSTOM, WindowLevel(width, level)
        preset = preset if preset in PRESET_NAMES else DEFAULTS[kind]
        return preset, window_for(preset, data)
