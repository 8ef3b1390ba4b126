"""What a slice viewer needs that has no Qt in it: slice geometry, window/level, overlay tables.

Slices are shown exactly as `engine.preprocessing.get_slice` cuts them (radiological display
orientation), so the picture on screen is the picture the model saw. This module knows, for each
view, which canonical voxel a displayed pixel is, which patient direction each screen edge faces,
how big a pixel is in millimetres, and how to turn labels and uncertainty maps into the 256-entry
RGBA tables that let pyqtgraph draw them on its fast indexed path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.preprocessing import AXES

VIEWS = ("axial", "coronal", "sagittal")

# Screen edges (left, right, top, bottom) -> the patient direction they face, per view.
ORIENTATION_LETTERS: dict[str, tuple[str, str, str, str]] = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}


def in_plane_axes(view: str) -> tuple[int, int]:
    """The canonical axes (column axis, row axis) shown across and down a view.

    `get_slice` keeps the two remaining axes in order (p < q), flips both and transposes, so
    columns run along p reversed and rows along q reversed.
    """
    p, q = (a for a in range(3) if a != AXES[view])
    return p, q


def display_shape(shape: tuple[int, ...], view: str) -> tuple[int, int]:
    """(rows, columns) of a view's slices for a canonical volume `shape`."""
    col_axis, row_axis = in_plane_axes(view)
    return int(shape[row_axis]), int(shape[col_axis])


def pixel_size_mm(spacing: tuple[float, float, float], view: str) -> tuple[float, float]:
    """(row height, column width) in mm: the aspect a view must draw its pixels with."""
    col_axis, row_axis = in_plane_axes(view)
    return float(spacing[row_axis]), float(spacing[col_axis])


def voxel_at(shape: tuple[int, ...], view: str, index: int, row: int, col: int) -> tuple[int, int, int]:
    """Canonical voxel (i, j, k) shown at (row, col) of slice `index` of `view`."""
    col_axis, row_axis = in_plane_axes(view)
    ijk = [0, 0, 0]
    ijk[AXES[view]] = int(index)
    ijk[col_axis] = int(shape[col_axis]) - 1 - int(col)
    ijk[row_axis] = int(shape[row_axis]) - 1 - int(row)
    return ijk[0], ijk[1], ijk[2]


def display_position(shape: tuple[int, ...], view: str, ijk: tuple[int, int, int]) -> tuple[int, int]:
    """(row, col) at which voxel `ijk` appears in `view` (inverse of `voxel_at`)."""
    col_axis, row_axis = in_plane_axes(view)
    return int(shape[row_axis]) - 1 - int(ijk[row_axis]), int(shape[col_axis]) - 1 - int(ijk[col_axis])


def clamp_voxel(shape: tuple[int, ...], ijk: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(min(max(int(v), 0), int(n) - 1) for v, n in zip(ijk, shape[:3], strict=True))  # type: ignore[return-value]


def inside(shape: tuple[int, ...], ijk: tuple[int, int, int]) -> bool:
    return all(0 <= int(v) < int(n) for v, n in zip(ijk, shape[:3], strict=True))


@dataclass(frozen=True)
class WindowLevel:
    """Display window: intensities from `low` to `high` span black to white."""

    width: float
    level: float

    @property
    def low(self) -> float:
        return self.level - self.width / 2

    @property
    def high(self) -> float:
        return self.level + self.width / 2

    def dragged(self, dx: float, dy: float, data_range: float) -> WindowLevel:
        """Window after a right-drag of (dx, dy) pixels: right widens, up brightens (lowers the level).

        One pixel moves the window by 0.5 % of the data range, as in ITK-SNAP and 3D Slicer.
        """
        step = window_step(data_range)
        return WindowLevel(max(self.width + dx * step, step), self.level - dy * step)


def window_step(data_range: float) -> float:
    """A drag pixel's worth of window: also the narrowest window (0.5 % of the scan's intensity range)."""
    return max(data_range, 1e-6) * 0.005


# Standard CT windows (Hounsfield units), width / level.
CT_PRESETS: dict[str, WindowLevel] = {
    "CT brain": WindowLevel(80.0, 40.0),
    "CT abdomen": WindowLevel(400.0, 50.0),
    "CT lung": WindowLevel(1500.0, -600.0),
    "CT bone": WindowLevel(1800.0, 400.0),
}
MR_AUTO = "MR auto (1-99 %)"
PRESET_NAMES = (MR_AUTO, *CT_PRESETS)
CUSTOM = "Custom"  # what the preset box says once the reader dragged or typed a window


def auto_window(
    data: np.ndarray, lower: float = 1.0, upper: float = 99.0, max_samples: int = 1_000_000
) -> WindowLevel:
    """Percentile window over the non-background voxels (MR has no absolute scale).

    Background (the minimum value, usually air at 0) would otherwise drag the lower percentile
    to it on a brain scan. Large volumes are subsampled so this stays fast.
    """
    flat = np.asarray(data).ravel()
    if flat.size > max_samples:
        flat = flat[:: flat.size // max_samples + 1]
    foreground = flat[flat > flat.min()]
    values = foreground if foreground.size else flat
    lo, hi = np.percentile(values, [lower, upper])
    if hi <= lo:
        hi = lo + 1.0
    return WindowLevel(float(hi - lo), float((hi + lo) / 2))


def window_for(preset: str, data: np.ndarray) -> WindowLevel:
    if preset == MR_AUTO:
        return auto_window(data)
    if preset in CT_PRESETS:
        return CT_PRESETS[preset]
    raise ValueError(f"unknown window preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")


def label_lut(colors: dict[int, tuple[int, int, int]], visible: dict[int, bool] | None = None) -> np.ndarray:
    """(256, 4) uint8 RGBA table for a uint8 label map: background and hidden labels transparent."""
    lut = np.zeros((256, 4), np.uint8)
    for value, rgb in colors.items():
        if value == 0 or not 0 < value < 256 or (visible is not None and not visible.get(value, True)):
            continue
        lut[value, :3] = rgb
        lut[value, 3] = 255
    return lut


TRUTH_COLOUR = (255, 60, 255)  # the reference's outline: magenta
TRUTH_LUT = label_lut({v: TRUTH_COLOUR for v in range(1, 256)})

# The heatmap's colormaps: perceptually uniform ones whose colours all lie away from the label palette
# (hot and turbo are not offered: they run through every hue, so some label would vanish on them).
HEATMAP_COLORMAPS = ("viridis", "cividis", "inferno", "magma", "plasma")
# Label colours, fixed and chosen far (CIELAB) from every colour of those colormaps and from the
# reference's magenta: an outline stays visible on any heatmap, whatever colours a model file suggests.
LABEL_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),  # red
    (0, 255, 255),  # cyan
    (0, 255, 0),  # green
    (0, 128, 255),  # azure
    (255, 255, 255),  # white
)


# The outline of the reader's edits: lavender, far (CIELAB) from every label colour, every heatmap colour
# and the reference's magenta, so the reader's part stays distinct on any model and heatmap.
EDIT_COLOUR = (225, 180, 255)


def label_colours(values: list[int]) -> dict[int, tuple[int, int, int]]:
    """The palette's colour of each foreground label (in turn, repeating past the palette's length)."""
    return {v: LABEL_PALETTE[(v - 1) % len(LABEL_PALETTE)] for v in values if v > 0}


def outline(labels: np.ndarray) -> np.ndarray:
    """The boundary pixels of each label of a 2D uint8 map (label xor its 4-neighbour erosion)."""
    lab = np.asarray(labels)
    padded = np.pad(lab, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return np.where(edge & (lab > 0), lab, 0).astype(np.uint8)


def instance_layer(instances: np.ndarray, outlined: bool) -> np.ndarray:
    """A nuclei instance map drawn in label 1: each nucleus outlined, or filled with a gap where two
    touch, so that touching nuclei read as the separate objects they were counted as."""
    from skimage.segmentation import find_boundaries

    edges = find_boundaries(instances, mode="inner") & (instances > 0)
    return (edges if outlined else (instances > 0) & ~edges).astype(np.uint8)


def map_range(map_name: str, num_classes: int) -> tuple[float, float]:
    """Fixed display range of an uncertainty map, so a colour means the same on every slice and run.

    Entropy and mutual information are at most ln(C) nats; the std of a probability at most 0.5.
    """
    if map_name in ("entropy", "mutual_information"):
        return 0.0, math.log(max(num_classes, 2))
    if map_name == "std":
        return 0.0, 0.5
    raise ValueError(f"unknown uncertainty map {map_name!r}")


def heatmap_lut(colors: np.ndarray, threshold: float) -> np.ndarray:
    """(256, 4) uint8 RGBA table from a colormap's (N, 4) colours, transparent below `threshold`.

    `colors` may be floats in 0..1 or uint8; `threshold` is a fraction 0..1 of the display range.
    """
    c = np.asarray(colors, dtype=np.float64)
    if c.max() > 1.0:
        c = c / 255.0
    x = np.linspace(0.0, 1.0, len(c))
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, x, c[:, ch]) for ch in range(4)], axis=1)
    lut = np.clip(np.round(lut * 255), 0, 255).astype(np.uint8)
    lut[:, 3] = 255
    below = t < min(max(float(threshold), 0.0), 1.0)
    lut[below, 3] = 0
    lut[0, 3] = 0  # zero uncertainty (and unsegmented slices) never tints the image
    return lut
