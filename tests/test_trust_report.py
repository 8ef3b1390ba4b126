"""The report's trust measures on constructed records whose answers are known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.run_settings import Mode
from engine.trust import TrustCalibration
from training.report.trust import (
    _histogram_auroc,
    aurc,
    case_metrics,
    pixel_metrics,
    trust_row,
    trust_section,
)
from training.trust_records import CONFIDENCE_BINS, UNCERTAINTY_BINS, CaseRecord


def _pixels(wrong_bin: int, right_bin: int, confidence_right: float) -> dict:
    wrong, right = [0] * UNCERTAINTY_BINS, [0] * UNCERTAINTY_BINS
    wrong[wrong_bin], right[right_bin] = 10, 90
    count, correct, total = [0] * CONFIDENCE_BINS, [0] * CONFIDENCE_BINS, [0] * CONFIDENCE_BINS
    count[-1], correct[-1], total[-1] = 100, 90, int(100 * confidence_right * 1e6)
    return {
        "entropy": [wrong, right],
        "mutual_information": [right, wrong],
        "confidence": [count, correct, total],
    }


def _record(i: int, dice: float, doubt: float, ood: float = 0.0) -> CaseRecord:
    scores = {"entropy_inside": doubt, "pairwise_dice": 1.0 - 0.5 * doubt}
    return CaseRecord(f"c{i}/seed0", dice, scores, [], np.array([ood] * 5), _pixels(200, 10, 0.9))


def test_histogram_auroc_of_separated_tied_and_reversed_scores():
    a, b = np.zeros(4), np.zeros(4)
    a[3], b[0] = 5, 7
    assert _histogram_auroc(a, b) == 1.0 and _histogram_auroc(b, a) == 0.0
    assert _histogram_auroc(a, a) == 0.5
    assert np.isnan(_histogram_auroc(np.zeros(4), b))


def test_pixel_metrics_near_the_lesion():
    metrics = pixel_metrics([_record(0, 0.9, 0.1), _record(1, 0.8, 0.2)])
    assert metrics["auroc_entropy"] == 1.0  # wrong pixels more uncertain
    assert metrics["auroc_mutual_information"] == 0.0  # the other way round, by construction
    assert metrics["ece"] == pytest.approx(0.0)  # 90 % right at confidence 0.9


def test_aurc_is_zero_excess_for_the_best_order_and_positive_for_the_worst():
    risk = np.array([0.1, 0.5, 0.9])
    best, excess = aurc(risk.copy(), risk)
    assert excess == pytest.approx(0.0)
    worst, worst_excess = aurc(-risk, risk)
    assert worst > best and worst_excess > 0


def test_case_metrics_of_a_score_that_orders_the_cases_perfectly():
    records = [_record(i, dice, 1 - dice) for i, dice in enumerate([0.95, 0.9, 0.85, 0.6, 0.3])]
    m = case_metrics(records, "entropy_inside")
    assert m["failures"] == 2 and m["failure_auroc"] == 1.0 and m["spearman"] == pytest.approx(-1.0)
    assert m["e_aurc"] == pytest.approx(0.0)
    assert case_metrics(records, "pairwise_dice")["failure_auroc"] == 1.0  # higher is better: turned


def test_a_row_judges_test_records_with_the_validation_calibration(small_model):
    calibration = TrustCalibration(
        score="entropy_inside",
        knots=(0.0, 1.0),
        expected=(1.0, 0.0),
        error_low=-0.05,
        error_high=0.05,
        review_below=0.7,
        lesion_review_above=0.3,
        ood_threshold=3.0,
        ood_reference=(0.0,) * 5 + (1.0,) * 5,
        fitted_on="test",
    )
    spec = dataclasses.replace(small_model, name="lgg_unet_hwa", trust={"analog": calibration.to_dict()})
    records = [_record(i, dice, 1 - dice, ood=0.5 * i) for i, dice in enumerate([0.95, 0.9, 0.6, 0.3])]
    saved = {"records": records, "foreign": {"ct/x": [9.0] * 5, "hippocampus/y": [1.0] * 5}}
    row = trust_row(spec, Mode.ANALOG, saved)
    assert row["expected_mae"] == pytest.approx(0.0) and row["in_range"] == 1.0
    assert row["in_range_shown"] == "100% (51-100%)"  # 4 of 4: Wilson's 95 % interval still holds 80 %
    assert row["false_alarms"] == 0.0  # OOD scores 0 .. 1.5, threshold 3
    assert row["foreign_flagged"] == 0.5 and row["foreign_missed"] == "hippocampus/y"
    text = "\n".join(trust_section([row], ["other (digital)"]))
    assert "met failure AUROC >= 0.90 (1.00)" in text and "Not measured yet: other (digital)" in text
    assert "foreign scans flagged short of the 100 % target: lgg_unet_hwa (analog) 50%" in text
    assert "every foreign scan flagged" in "\n".join(trust_section([{**row, "foreign_flagged": 1.0}], []))
    assert "Every range's coverage interval holds the 80 % nominal" in text
    uncalibrated = trust_row(dataclasses.replace(spec, trust={}), Mode.ANALOG, saved)
    assert uncalibrated["score"] == "not calibrated" and "-" in "\n".join(trust_section([uncalibrated], []))

    all_good = {**saved, "records": [_record(i, d, 1 - d) for i, d in enumerate([0.95, 0.9, 0.8])]}
    quiet = trust_row(dataclasses.replace(spec, name="hippocampus_unet_hwa"), Mode.ANALOG, all_good)
    assert quiet["failure_auroc"] == quiet["baseline_auroc"] == "no failures"
    text = "\n".join(trust_section([row, quiet], []))
    assert "hippocampus_unet_hwa: no test case failed (every Dice >= 0.7, lowest 0.80)" in text
    assert "nan" not in text


def test_pixel_histograms_count_only_near_the_lesion_and_split_wrong_from_right():
    from tests.test_trust import _result_from_samples, _samples
    from training.trust_records import near_lesion, pixel_histograms

    a = np.zeros((40, 40), bool)
    a[2:6, 2:6] = True
    b = a.copy()
    b[2:6, 6:8] = True  # chips disagree on two columns
    result = _result_from_samples(_samples([a, b]))
    truth = np.zeros((40, 40, 1), np.int64)
    truth[2:6, 2:6, 0] = 1  # chip a's square (symmetric, so the slice's orientation does not matter)
    band = near_lesion(result.segmentation, truth, (1.0, 1.0, 1.0))
    assert 0 < band.sum() < band.size  # 10 mm around a 4-8 voxel lesion, not the whole 40 x 40 slice
    h = pixel_histograms(result, truth, 2)
    wrong, right = np.array(h["entropy"][0]), np.array(h["entropy"][1])
    assert wrong.sum() + right.sum() == band.sum()
    assert wrong.sum() == int((result.segmentation != truth)[band].sum())
    assert sum(h["confidence"][0]) == band.sum()
    # where chips disagree, the mean of their own entropies is below the entropy of their average
    total, aleatoric = (
        np.array(h[name][0]) + np.array(h[name][1]) for name in ("entropy", "expected_entropy")
    )
    assert total.sum() == aleatoric.sum() == band.sum()
    bins = np.arange(len(total))
    assert (aleatoric * bins).sum() < (total * bins).sum()


def test_a_coverage_whose_interval_excludes_the_nominal_is_named():
    from training.report.trust import _coverage

    rows = [
        {"model": "a", "mode": "analog", "in_range": 0.2, "in_range_low": 0.06, "in_range_high": 0.51},
        {"model": "b", "mode": "digital", "in_range": 0.72, "in_range_low": 0.49, "in_range_high": 0.90},
    ]
    assert _coverage(rows) == "Coverage told apart from the 80 % nominal by its interval: a (analog) 20%."
    assert "holds the 80 % nominal" in _coverage(rows[1:])


def test_a_microscopy_reference_is_the_foreground_of_its_numbered_nuclei_in_the_images_voxel_order(tmp_path):
    """Nuclei are calibrated on the one-slice volumes the viewer reads; their reference numbers each
    nucleus, and an MSD label map keeps its classes."""
    import nibabel as nib
    from PIL import Image

    from engine.volume import load_scan
    from training.trust_records import reference

    numbered = np.zeros((12, 20), np.uint8)  # rows x columns, as the PNG holds it
    numbered[1:4, 2:5], numbered[6:9, 12:18] = 1, 7
    Image.fromarray(numbered).save(tmp_path / "label.png")
    Image.fromarray(numbered * 30).save(tmp_path / "image.png")
    truth = reference(tmp_path / "label.png", "nuclei")
    image = load_scan(tmp_path / "image.png").data
    assert truth.shape == image.shape and set(np.unique(truth)) == {0, 1}
    np.testing.assert_array_equal(truth > 0, image > 0)  # the same pixels, in the same order
    classes = np.zeros((4, 4, 2), np.float32)
    classes[0, 0, 0], classes[1, 1, 1] = 1, 2
    nib.save(nib.Nifti1Image(classes, np.eye(4)), tmp_path / "label.nii.gz")
    assert set(np.unique(reference(tmp_path / "label.nii.gz", "msd"))) == {0, 1, 2}
