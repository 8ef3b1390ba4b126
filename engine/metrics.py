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


DSB_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # IoU 0.50, 0.55, ..., 0.95


def instance_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(true objects, predicted objects) IoU matrix of two instance label maps (0 = background).

    Objects are the distinct non-zero values; their numbering need not be contiguous.
    """
    truth, pred = np.asarray(truth).ravel(), np.asarray(pred).ravel()
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    t_bg, p_bg = int((truth == 0).any()), int((pred == 0).any())  # background sorts first
    n_t, n_p = int(t.max()) + 1, int(p.max()) + 1
    both = np.bincount(t * n_p + p, minlength=n_t * n_p).reshape(n_t, n_p).astype(np.float64)
    area_t, area_p = both.sum(1), both.sum(0)
    union = area_t[:, None] + area_p[None, :] - both
    iou = np.divide(both, union, out=np.zeros_like(both), where=union > 0)
    return iou[t_bg:, p_bg:]


def _matches(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) at an IoU threshold; above 0.5 a match is
    necessarily one-to-one, so counting pairs over the threshold is the Data Science Bowl's rule."""
    hits = iou > threshold
    tp = int(hits.sum())
    return tp, iou.shape[1] - int(hits.any(0).sum()), iou.shape[0] - int(hits.any(1).sum())


def dsb_average_precision(
    pred: np.ndarray, truth: np.ndarray, thresholds: tuple[float, ...] = DSB_THRESHOLDS
) -> float:
    """The Data Science Bowl 2018 score of one image: TP / (TP + FP + FN) averaged over IoU thresholds
    0.5..0.95. 1.0 when both maps are empty; 0.0 when only one is."""
    iou = instance_iou(pred, truth)
    if iou.size == 0:
        return 1.0 if iou.shape == (0, 0) else 0.0
    scores = []
    for t in thresholds:
        tp, fp, fn = _matches(iou, t)
        scores.append(tp / (tp + fp + fn))
    return float(np.mean(scores))


def instance_f1(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """Detection F1, 2 TP / (2 TP + FP + FN), a match being IoU above `threshold`; 1.0 when both are empty."""
    iou = instance_iou(pred, truth)
    if iou.size == 0:
        return 1.0 if iou.shape == (0, 0) else 0.0
    tp, fp, fn = _matches(iou, threshold)
    return 2 * tp / (2 * tp + fp + fn)
