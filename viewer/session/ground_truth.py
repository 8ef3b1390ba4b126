"""A reference segmentation next to the AI's: loading it onto the scan's grid, and Dice so far.

While a run is in progress only some slices are segmented; comparing the whole volume would
count every unsegmented slice as missed. Dice is therefore computed over finished slices only.
"""

from __future__ import annotations

import os

import numpy as np

from engine.metrics import dice_per_label
from engine.pipeline import VolumeResult
from engine.preprocessing import AXES
from engine.volume import ScanError, Volume, load_scan


def load_ground_truth(path: str | os.PathLike, scan: Volume) -> np.ndarray:
    """A label file as a uint8 canonical array on `scan`'s grid; `ScanError` if it does not fit."""
    labels = load_scan(path)
    if labels.shape != scan.shape:
        raise ScanError(f"{path}: label grid {labels.shape} does not match the scan's {scan.shape}")
    if not np.allclose(labels.affine, scan.affine, atol=1e-3):
        raise ScanError(f"{path}: the label file is not in the scan's space (different affine)")
    data = labels.data
    if (data < 0).any() or (data > 255).any() or not np.array_equal(data, np.round(data)):
        raise ScanError(f"{path}: not a label map (values must be whole numbers 0..255)")
    return data.astype(np.uint8)


def dice_so_far(result: VolumeResult, truth: np.ndarray) -> tuple[dict[int, float], int]:
    """Dice per foreground label over the slices segmented so far, and how many slices that is."""
    done = np.flatnonzero(result.finished)
    if done.size == 0:
        return {}, 0
    axis = AXES[result.axis]
    pred = np.take(result.segmentation, done, axis=axis)
    ref = np.take(truth, done, axis=axis)
    ref = np.where(ref < result.num_classes, ref, 0)  # labels the model does not know count as background
    return dice_per_label(pred, ref, result.num_classes), int(done.size)
