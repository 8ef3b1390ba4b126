"""Post-processing of a whole-volume segmentation, as chosen per model on its validation split.

A lower-grade glioma's FLAIR abnormality is one connected region; scattered false-positive
islands elsewhere in the head cost per-patient Dice. Like nnU-Net, each model records in its
`model.json` which labels are reduced to their largest 3D connected component, and only when that
raised validation Dice (`training/postprocessing.py` decides). The uncertainty maps and the mean
probabilities are left as the network produced them: only the label map changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import KeepLargestConnectedComponent


def keep_largest_component(segmentation: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """The label map with each of `labels` reduced to its largest connected component (full connectivity)."""
    if not labels or not np.isin(segmentation, list(labels)).any():
        return segmentation
    # MONAI edits its input in place: hand it a copy so the caller's label map stays the network's.
    kept = KeepLargestConnectedComponent(applied_labels=list(labels), is_onehot=False, independent=True)(
        segmentation[None].copy()
    )
    return np.asarray(kept)[0].astype(segmentation.dtype)
