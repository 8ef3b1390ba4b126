"""Agreement with a reference segmentation (MONAI's Dice), shared by training, evaluation and the viewer."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot


def dice_per_label(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> dict[int, float]:
    """Volume Dice of each foreground label; 1.0 where both prediction and truth are empty."""
    p = one_hot(torch.as_tensor(np.asarray(pred), dtype=torch.long)[None, None], num_classes)
    t = one_hot(torch.as_tensor(np.asarray(truth), dtype=torch.long)[None, None], num_classes)
    d = compute_dice(p, t, include_background=False, ignore_empty=False)[0]
    return {label: float(d[label - 1]) for label in range(1, num_classes)}


def mean_dice(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    return float(np.mean(list(dice_per_label(pred, truth, num_classes).values())))
