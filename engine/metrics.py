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


def error_detection_auroc(uncertainty: np.ndarray, wrong: np.ndarray) -> float:
    """AUROC of per-pixel uncertainty as a detector of wrongly labelled pixels (0.5 = blind).

    NaN when every pixel is right or every pixel is wrong (nothing to detect).
    """
    from sklearn.metrics import roc_auc_score

    wrong = np.asarray(wrong, bool).ravel()
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, np.asarray(uncertainty, np.float64).ravel()))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: the bin-weighted gap between confidence (max class probability) and accuracy."""
    conf = np.asarray(confidence, np.float64).ravel()
    hit = np.asarray(correct, bool).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, conf, minlength=bins)
    hit_sum = np.bincount(which, hit.astype(np.float64), minlength=bins)
    used = count > 0
    return float(np.sum(np.abs(conf_sum[used] - hit_sum[used])) / conf.size)
