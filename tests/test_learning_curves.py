"""The learning-curve report: every round's epochs in order, and the flatness read from them."""

from __future__ import annotations

import dataclasses

import pytest

from training.report.learning_curves import TAIL, draw, history, summary


def _epochs(values: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "loss": 0.5, "val_dice": v, "seconds": 1.0} for i, v in enumerate(values)]


def test_a_second_round_continues_the_first_rounds_epochs():
    training = {"history": _epochs([0.7, 0.8]), "earlier_round": {"history": _epochs([0.1, 0.5, 0.6])}}
    got = history(training)
    assert [h["epoch"] for h in got] == [1, 2, 3, 4, 5]
    assert [h["val_dice"] for h in got] == [0.1, 0.5, 0.6, 0.7, 0.8]


def test_summary_finds_the_best_epoch_and_the_spread_of_the_last_epochs(small_model, tmp_path):
    flat = [0.2, 0.5] + [0.80, 0.81, 0.79, 0.80, 0.80] + [0.80] * (TAIL - 5)
    spec = dataclasses.replace(small_model, training={"history": _epochs(flat)})
    row = summary(spec)
    assert row["epochs"] == len(flat) and row["best_epoch"] == 4 and row["best"] == pytest.approx(0.81)
    assert row["tail_range"] == pytest.approx(0.02) and row["best_in_tail"]
    rising = dataclasses.replace(small_model, training={"history": _epochs([0.9] + [0.3] * TAIL)})
    assert not summary(rising)["best_in_tail"]
    with pytest.raises(ValueError, match="no training history"):
        summary(dataclasses.replace(small_model, training={}))
    draw([spec, rising], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
