"""Post-processing of a whole-volume segmentation, as chosen per model on its validation split.

A lower-grade glioma's FLAIR abnormality is one connected region; scattered false-positive
islands elsewhere in the head cost per-patient Dice. Like nnU-Net, each model records in its
`model.json` which labels are reduced to their largest 3D connected component, and only when that
raised validation Dice (`training/postprocessing.py` decides). Keeping the largest alone turns a
small lesion that the network found in part, beside a larger false region, into a Dice of 0; so a
model may instead keep every component at least a fraction of its largest's size, the fraction
also chosen on validation. The uncertainty maps and the mean probabilities are left as the network
produced them: only the label map changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import KeepLargestConnectedComponent
from scipy import ndimage


def keep_largest_component(segmentation: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """The label map with each of `labels` reduced to its largest connected component (full connectivity)."""
    if not labels or not np.isin(segmentation, list(labels)).any():
        return segmentation
    # MONAI edits its input in place: hand it a copy so the caller's label map stays the network's.
    kept = KeepLargestConnectedComponent(applied_labels=list(labels), is_onehot=False, independent=True)(
        segmentation[None].copy()
    )
    return np.asarray(kept)[0].astype(segmentation.dtype)


def keep_large_components(
    segmentation: np.ndarray, labels: Sequence[int], fraction: float = 1.0
) -> np.ndarray:
    """The label map with each of `labels` reduced to its connected components (full connectivity) of at
    least `fraction` of its largest component's voxels; 1.0 keeps the largest only."""
    if fraction >= 1.0:
        return keep_largest_component(segmentation, labels)
    kept = segmentation.copy()
    structure = np.ones((3,) * segmentation.ndim, bool)
    for label in labels:
        components, count = ndimage.label(segmentation == label, structure=structure)
        if count < 2:
            continue
        sizes = np.bincount(components.ravel())[1:]
        small = np.flatnonzero(sizes < fraction * sizes.max()) + 1
        kept[np.isin(components, small)] = 0
    return kept
