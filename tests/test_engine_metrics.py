"""Dice, error-detection AUROC and calibration error against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.metrics import dice_per_label, error_detection_auroc, expected_calibration_error


def test_dice_by_hand():
    pred = np.zeros((4, 4, 1), int)
    truth = np.zeros((4, 4, 1), int)
    pred[:2, :2] = 1  # 4 voxels
    truth[:2, :3] = 1  # 6 voxels, 4 shared
    truth[3, 3] = 2
    d = dice_per_label(pred, truth, 3)
    assert d[1] == pytest.approx(2 * 4 / (4 + 6))
    assert d[2] == 0.0
    assert dice_per_label(np.zeros((2, 2, 2), int), np.zeros((2, 2, 2), int), 2)[1] == 1.0


def test_auroc_perfect_blind_and_degenerate():
    wrong = np.array([0, 0, 1, 1])
    assert error_detection_auroc(np.array([0.1, 0.2, 0.8, 0.9]), wrong) == 1.0
    assert error_detection_auroc(np.array([0.9, 0.8, 0.2, 0.1]), wrong) == 0.0
    assert error_detection_auroc(np.ones(4), wrong) == 0.5
    assert math.isnan(error_detection_auroc(np.ones(4), np.zeros(4)))


def test_ece_by_hand():
    # Two bins used: 0.9-confidence pixels 50 % right (gap 0.4), 0.6-confidence pixels 100 % right (gap 0.4).
    conf = np.array([0.9, 0.9, 0.6, 0.6])
    correct = np.array([1, 0, 1, 1])
    assert expected_calibration_error(conf, correct, bins=10) == pytest.approx(0.4)
    assert expected_calibration_error(np.ones(5), np.ones(5)) == pytest.approx(0.0)
