"""Case-level trust: scores on constructed cases with known answers, the fit on validation records,
and the verdict read from a model's calibration."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.pipeline import SliceResult, VolumeResult
from engine.preprocessing import Preprocessing
from engine.run_settings import Mode, RunSettings
from engine.trust import (
    calibration_for,
    case_scores,
    ood_features,
    ood_score,
    pairwise_dice,
    settings_note,
    verdict,
)
from engine.uncertainty import mc_statistics
from engine.volume import Volume
from training.trust_calibration import (
    choose_score,
    fit,
    lesion_threshold,
    range_bounds,
    validation_coverage,
)
from training.trust_records import CaseRecord


def _result_from_samples(samples: torch.Tensor) -> VolumeResult:
    """A one-slice result from (S, C, H, W) samples, through the real statistics."""
    volume = Volume(np.ones((samples.shape[3], samples.shape[2], 1), np.float32), np.eye(4))
    result = VolumeResult(volume, "axial", samples.shape[1])
    result.add(SliceResult(0, mc_statistics(samples), 0.0, 1, 1))
    return result


def _samples(masks: list[np.ndarray]) -> torch.Tensor:
    fg = torch.as_tensor(np.stack(masks), dtype=torch.float32)
    p = 0.05 + 0.9 * fg
    return torch.stack([1 - p, p], 1)


def test_all_chips_agree_gives_pairwise_dice_one():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    assert case_scores(_result_from_samples(_samples([mask] * 4)))["pairwise_dice"] == pytest.approx(1.0)


def test_pairwise_dice_of_known_overlaps():
    a = np.zeros((8, 8), bool)
    a[0:4, 0:4] = True  # 16 voxels
    b = np.zeros((8, 8), bool)
    b[0:4, 2:6] = True  # 16 voxels, 8 shared with a
    result = _result_from_samples(_samples([a, b]))
    np.testing.assert_array_equal(result.overlap, [[16, 8], [8, 16]])
    assert case_scores(result)["pairwise_dice"] == pytest.approx(0.5)
    assert pairwise_dice(np.array([[0, 0], [0, 0]])) == 1.0  # two empty segmentations agree
    assert pairwise_dice(None) == 1.0


def test_scores_read_inside_the_segmentation_not_the_background():
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    scores = case_scores(_result_from_samples(_samples([mask] * 3)))
    assert scores["mutual_information_inside"] == pytest.approx(0.0, abs=1e-6)
    assert scores["entropy_inside"] == pytest.approx(-(0.95 * np.log(0.95) + 0.05 * np.log(0.05)), rel=1e-4)
    empty = case_scores(_result_from_samples(_samples([np.zeros((16, 16), bool)] * 2)))
    assert np.isnan(empty["entropy_inside"]) and np.isnan(empty["uncertain_ratio"])


def _records(rng: np.random.Generator, n: int = 12) -> list[CaseRecord]:
    """Cases whose chip agreement predicts Dice and whose entropy is noise."""
    out = []
    for i in range(n):
        dice = float(rng.uniform(0.2, 0.95))
        scores = {
            "entropy_inside": float(rng.random()),
            "mutual_information_inside": float(rng.random()),
            "entropy_border": float(rng.random()),
            "pairwise_dice": dice + float(rng.normal(0, 0.02)),
            "uncertain_ratio": float(rng.random()),
        }
        out.append(CaseRecord(f"c{i}/seed0", dice, scores, [(0.1, True), (0.5, False)], rng.normal(0, 1, 5)))
    return out


def test_fit_chooses_the_informative_score_and_maps_it_monotonically():
    records = _records(np.random.default_rng(0))
    score, rho = choose_score(records, ("entropy_inside", "pairwise_dice", "uncertain_ratio"))
    assert score == "pairwise_dice" and rho["pairwise_dice"] < -0.9
    calibration = fit(records, Mode.ANALOG, "test")
    assert calibration.score == "pairwise_dice"
    assert calibration.expected_dice(0.9) > calibration.expected_dice(0.4)
    assert calibration.error_low <= 0 <= calibration.error_high
    assert calibration.lesion_review_above == pytest.approx(0.5)
    assert lesion_threshold(
        [CaseRecord("a/0", 1.0, {}, [(0.2, True), (0.3, True)], np.zeros(5))]
    ) == pytest.approx(0.29)


def test_the_range_is_the_conformal_order_statistics_of_the_errors():
    errors = np.arange(1.0, 23.0)  # 22 patients' errors, already ordered
    assert range_bounds(errors) == (2.0, 21.0)  # k = floor(23 * 0.1), j = ceil(23 * 0.9)
    assert range_bounds(errors[::-1]) == (2.0, 21.0)
    assert range_bounds(np.array([3.0, -1.0, 2.0])) == (-1.0, 3.0)  # too few: the extremes


def test_the_range_holds_a_new_cases_dice_at_least_as_often_as_it_says():
    """The plain 10th-90th percentile of 22 errors held only 73 % of new cases (hippocampus,
    validation); the conformal bounds hold at least the nominal 80 % over many draws."""
    rng = np.random.default_rng(0)
    draws = rng.normal(0, 0.03, (4000, 23))
    conformal = [range_bounds(d[:22]) for d in draws]
    percentile = [(np.quantile(d[:22], 0.1), np.quantile(d[:22], 0.9)) for d in draws]

    def held(bounds: list[tuple[float, float]]) -> float:
        return float(np.mean([lo <= d[22] <= hi for (lo, hi), d in zip(bounds, draws, strict=True)]))

    assert held(conformal) >= 0.8
    assert held(percentile) < 0.77


def test_validation_coverage_refits_the_range_without_each_case():
    """A score that predicts Dice exactly: every case lies in its range, until one case falls far
    below what its score promises; no range fitted on the others can hold it."""

    def records(dice: list[float]) -> list[CaseRecord]:
        return [
            CaseRecord(f"c{i}/seed0", d, {"pairwise_dice": i / 16}, [], np.zeros(5))
            for i, d in enumerate(dice)
        ]

    exact = [0.25 + i / 16 for i in range(10)]  # binary fractions: no rounding at the edges
    assert validation_coverage(records(exact), "pairwise_dice") == 1.0
    exact[5] -= 0.3
    assert validation_coverage(records(exact), "pairwise_dice") <= 0.9


def test_the_ood_reference_takes_intensities_from_every_training_scan_not_only_validation():
    """Nine validation scans gave the mean intensity too narrow a spread: a good test scan looked foreign."""
    rng = np.random.default_rng(1)
    records = _records(rng, 9)
    for r in records:
        r.ood[:3] = 0.5 + rng.normal(0, 0.01, 3)  # validation scans that happen to be alike
    training = {f"t{i}": 0.5 + rng.normal(0, 0.05, 3) for i in range(60)}  # the wider real spread
    validation_only = fit(records, Mode.ANALOG, "test")
    scans = {**training, **{r.case.split("/")[0]: r.ood[:3] for r in records}}
    wide = fit(records, Mode.ANALOG, "test", scans)
    typical = np.concatenate([[0.5, 0.5, 0.6], records[0].ood[3:]])  # 2 SD off the training scans
    assert ood_score(typical, validation_only.ood_reference) > validation_only.ood_threshold
    assert ood_score(typical, wide.ood_reference) <= wide.ood_threshold
    foreign = np.concatenate([[0.9, 0.0, 0.1], records[0].ood[3:]])  # a CT through an MR model
    assert ood_score(foreign, wide.ood_reference) > wide.ood_threshold
    tried = fit(records, Mode.ANALOG, "test", scans, None, {"ct": foreign, "alike": typical})
    assert (tried.foreign_checked, tried.foreign_flagged) == (2, 1) and tried.ood_unreliable
    caught = fit(records, Mode.ANALOG, "test", scans, None, {"ct": foreign})
    assert (caught.foreign_checked, caught.foreign_flagged) == (1, 1) and not caught.ood_unreliable
    assert not validation_only.ood_unreliable  # never tried: nothing known against it


def test_a_verdict_under_an_ood_check_that_missed_foreign_scans_says_it_vouches_for_nothing(calibration):
    a = np.zeros((8, 8), bool)
    a[0:4, 0:4] = True
    result, prep = _result_from_samples(_samples([a, a])), Preprocessing(input_size=(8, 8))
    assert "OOD" not in verdict(result, prep, calibration).message
    missed = dataclasses.replace(calibration, foreign_checked=4, foreign_flagged=1)
    message = verdict(result, prep, missed).message
    assert message.startswith("expected Dice 0.90") and "cannot vouch for the scan" in message
    assert "it flagged 1 of 4 scans of another data set" in message


def test_verdict_reads_the_models_calibration(small_model, calibration):
    spec = dataclasses.replace(small_model, trust={"analog": calibration.to_dict()})
    loaded = calibration_for(spec, "analog")
    assert loaded == calibration and calibration_for(spec, "digital") is None
    a = np.zeros((8, 8), bool)
    a[0:4, 0:4] = True
    b = np.zeros((8, 8), bool)
    b[0:4, 2:6] = True
    prep = Preprocessing(input_size=(8, 8))
    disagreeing = verdict(_result_from_samples(_samples([a, b])), prep, loaded)  # pairwise Dice 0.5
    assert disagreeing.review and disagreeing.expected_dice == pytest.approx(0.4 + 0.5 * (0.2 / 0.6))
    assert "review carefully" in disagreeing.message
    agreeing = verdict(_result_from_samples(_samples([a, a])), prep, loaded)
    assert not agreeing.review and agreeing.expected_dice == pytest.approx(0.9)
    assert (agreeing.low, agreeing.high) == (pytest.approx(0.8), pytest.approx(0.95))
    assert agreeing.settings_note == ""  # no run given, nothing to compare


def test_a_run_on_other_chips_than_the_calibrations_says_so(calibration):
    calibration = dataclasses.replace(
        calibration, run={"noise_level": 1.0, "drift_s": 86400.0, "mc_samples": 8}
    )
    same = RunSettings(model="m", mode="analog", mc_samples=8, noise_level=1.0, drift_s=86400.0)
    assert settings_note(calibration, same) == ""
    assert settings_note(calibration, dataclasses.replace(same, mode="digital")) == ""
    other = dataclasses.replace(same, drift_s=3600.0, mc_samples=16)
    assert settings_note(calibration, other) == (
        "calibrated at drift 1 d (this run 1 h), MC 8 (this run 16): the expected Dice may be off"
    )
    a = np.zeros((8, 8), bool)
    a[0:4, 0:4] = True
    result = _result_from_samples(_samples([a, a]))
    answer = verdict(result, Preprocessing(input_size=(8, 8)), calibration, other)
    assert answer.settings_note and answer.message.endswith("the expected Dice may be off")


def test_ood_score_flags_features_far_from_validation():
    reference = (0.3, 0.1, 0.2, 0.05, 0.01, 0.02, 0.01, 0.02, 0.01, 0.005)
    assert ood_score(np.array([0.3, 0.1, 0.2, 0.05, 0.01]), reference) == pytest.approx(0.0)
    assert ood_score(np.array([0.3, 0.1, 0.2, 0.5, 0.01]), reference) > 10
    result = _result_from_samples(_samples([np.ones((8, 8), bool)] * 2))
    assert ood_features(result, Preprocessing(input_size=(8, 8))).shape == (5,)


def test_a_stopped_measurement_resumes_after_its_last_saved_record(monkeypatch, tmp_path):
    """A calibration killed halfway measures only what it had not saved when rerun on the same weights."""
    import training.trust_records as tr

    cases = [
        dataclasses.make_dataclass("Case", ["case_id", "image", "label"])(f"p{i}", None, None)
        for i in range(3)
    ]
    measured: list[str] = []
    stop_after = {"n": 4}

    def segment(segmenter, volume):
        if len(measured) == stop_after["n"]:
            raise KeyboardInterrupt
        return None

    def record(name, result, truth, spec):
        measured.append(name)
        return CaseRecord(name, 0.5, {"agreement": 0.9}, [], np.zeros(3))

    monkeypatch.setattr(tr, "cases_of_split", lambda spec, data, split: ("msd", cases))
    monkeypatch.setattr(tr, "Segmenter", lambda spec, settings: object())
    monkeypatch.setattr(tr, "load_scan", lambda path: None)
    monkeypatch.setattr(tr, "reference", lambda label, layout: None)
    monkeypatch.setattr(tr, "segment_volume", segment)
    monkeypatch.setattr(tr, "record_of", record)
    monkeypatch.setattr(tr, "weights_hash", lambda spec: "weights-a")
    spec = dataclasses.make_dataclass("Spec", ["name"])("m")
    progress = tr.progress_path(tmp_path / "m_analog_val.json")
    log = lambda line: None  # noqa: E731

    with pytest.raises(KeyboardInterrupt):
        tr.measure(spec, tmp_path, Mode.ANALOG, "val", 2, log=log, progress=progress)
    assert measured == ["p0/seed0", "p1/seed0", "p2/seed0", "p0/seed1"]
    stop_after["n"] = 99
    records = tr.measure(spec, tmp_path, Mode.ANALOG, "val", 2, log=log, progress=progress)
    assert measured[4:] == ["p1/seed1", "p2/seed1"]
    assert [r.case for r in records] == [f"p{i}/seed{s}" for s in range(2) for i in range(3)]

    # other weights, or the same weights on another split, start again
    monkeypatch.setattr(tr, "weights_hash", lambda spec: "weights-b")
    tr.measure(spec, tmp_path, Mode.ANALOG, "val", 1, log=log, progress=progress)
    assert measured[6:] == ["p0/seed0", "p1/seed0", "p2/seed0"]
    tr.measure(spec, tmp_path, Mode.ANALOG, "test", 1, log=log, progress=progress)
    assert measured[9:] == ["p0/seed0", "p1/seed0", "p2/seed0"]
    tr.save(tmp_path / "m_analog_val.json", spec, Mode.ANALOG, "test", records)
    assert not progress.exists()  # the finished records replace the progress kept for them
