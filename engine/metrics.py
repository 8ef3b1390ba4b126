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


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> np.ndarray:
    """(3, bins) pixel count, summed confidence and summed hits per confidence bin: add them up over
    cases, then call `ece_from_bins`, to get the calibration error of a whole test set."""
    conf = np.asarray(confidence, np.float64).ravel()
    hit = np.asarray(correct, bool).ravel().astype(np.float64)
    which = np.clip(np.digitize(conf, np.linspace(0.0, 1.0, bins + 1)[1:-1]), 0, bins - 1)
    return np.stack(
        [
            np.bincount(which, minlength=bins).astype(np.float64),
            np.bincount(which, conf, minlength=bins),
            np.bincount(which, hit, minlength=bins),
        ]
    )


def ece_from_bins(binned: np.ndarray) -> float:
    count, conf_sum, hit_sum = binned
    return float(np.abs(conf_sum - hit_sum).sum() / count.sum())


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: the pixel-weighted gap between confidence (max class probability) and accuracy per bin."""
    return ece_from_bins(calibration_bins(confidence, correct, bins))
