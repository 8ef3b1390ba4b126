"""The training loop's mechanics on a tiny MSD folder of real slices: split, log, resume, further rounds."""

from __future__ import annotations

import csv

import pytest

from engine.model_store import read_spec


@pytest.fixture(scope="module")
def trained(tiny_lgg, tmp_path_factory):
    from training.train import train

    base = tmp_path_factory.mktemp("train")
    out, runs = base / "models" / "tiny_unet_digital", base / "runs"
    train(tiny_lgg, "unet", "digital", out, epochs=1, batch_size=8, runs_dir=runs, log=lambda *_: None)
    return out, runs, tiny_lgg


def test_a_digital_run_records_split_log_and_checkpoint(trained):
    out, runs, _ = trained
    spec = read_spec(out)
    split = spec.data["split"]
    assert sorted(sum(split.values(), [])) == [f"lgg_{i}" for i in range(5)]
    assert not set(split["train"]) & set(split["test"])
    assert spec.training["epochs_run"] == 1 and len(spec.training["history"]) == 1
    assert spec.training["learning_rate"] == pytest.approx(1e-3)
    assert "validation patients only" in spec.training["selection"]  # the protocol, in model.json
    with open(runs / out.name / "log.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]
    assert (runs / out.name / "checkpoint.pt").exists()


def test_an_interrupted_run_resumes_after_its_last_epoch(trained):
    from training.train import train

    out, runs, data = trained
    said = []
    train(data, "unet", "digital", out, epochs=2, batch_size=8, runs_dir=runs, log=said.append)
    assert any("resuming tiny_unet_digital after epoch 1" in s for s in said)
    assert [h["epoch"] for h in read_spec(out).training["history"]] == [1, 2]


def test_a_further_digital_round_starts_from_the_shipped_weights_and_adds_up(trained):
    from training.train import train

    out, runs, data = trained
    before = read_spec(out).training
    again = train(
        data,
        "unet",
        "digital",
        out.parent / "tiny_unet_round2",
        init=str(out),
        epochs=1,
        batch_size=8,
        lr=3e-4,
        runs_dir=runs,
        log=lambda *_: None,
    )
    assert again.training["earlier_round"]["history"] == before["history"]
    assert again.training["epochs_run"] == before["epochs_run"] + 1
    assert again.training["learning_rate"] == pytest.approx(3e-4)
    assert again.training["init"] is None  # not an HWA adaptation
    with pytest.raises(ValueError, match="further digital round"):
        train(
            data,
            "swinunetr",
            "digital",
            out.parent / "wrong",
            init=str(out),
            epochs=1,
            runs_dir=runs,
            log=lambda *_: None,
        )


def test_the_analog_calibration_takes_a_seeded_sample_of_training_slices():
    import numpy as np

    from training.train import CALIBRATION_SLICES, calibration_slices

    loaded = {f"p{k}": (np.full((60, 1, 4, 4), k, np.float32), None) for k in range(25)}
    ids = list(loaded)
    first = calibration_slices(loaded, ids, seed=0)
    assert first.shape == (CALIBRATION_SLICES, 1, 4, 4)
    assert set(np.unique(first.numpy())) <= set(range(20))  # only the first 20 training patients
    assert len(np.unique(first.numpy())) > 10  # drawn across them, not the first few
    assert np.array_equal(first.numpy(), calibration_slices(loaded, ids, seed=0).numpy())
    few = {"p0": loaded["p0"]}
    assert calibration_slices(few, ["p0"], seed=0).shape[0] == 60  # fewer slices: all of them


def test_an_hwa_run_records_which_weights_it_started_from(trained):
    from engine.model_store import weights_hash
    from training.train import train

    out, runs, data = trained
    hwa = train(
        data,
        "unet",
        "hwa",
        out.parent / "tiny_unet_hwa",
        init=str(out),
        epochs=1,
        batch_size=8,
        runs_dir=runs,
        log=lambda *_: None,
    )
    assert hwa.kind == "hwa" and hwa.training["init"] == str(out) and hwa.has_analog
    assert hwa.training["init_weights"] == weights_hash(read_spec(out))


def test_an_hwa_run_from_near_zero_input_ranges_keeps_them_above_the_floor(trained, tmp_path):
    """A layer whose calibrated range is ~0 (a converged Swin-UNETR's deepest stage) made the loss NaN."""
    import math
    import shutil

    from safetensors.torch import load_file, save_file

    from engine.model_store import ANALOG_WEIGHTS
    from training.train import MIN_INPUT_RANGE, train

    out, runs, data = trained
    base = tmp_path / "tiny_unet_dead_layers"
    shutil.copytree(out, base)
    tensors = load_file(base / ANALOG_WEIGHTS)
    ranges = [k for k in tensors if k.endswith("input_range")]
    save_file(
        {k: v.clone().fill_(1e-7) if k in ranges else v for k, v in tensors.items()}, base / ANALOG_WEIGHTS
    )
    hwa = train(
        data,
        "unet",
        "hwa",
        tmp_path / "tiny_hwa",
        init=str(base),
        epochs=1,
        batch_size=8,
        runs_dir=runs,
        log=lambda *_: None,
    )
    assert math.isfinite(hwa.training["history"][0]["loss"])
    trained_ranges = load_file(tmp_path / "tiny_hwa" / ANALOG_WEIGHTS)
    assert all(float(trained_ranges[k].min()) >= MIN_INPUT_RANGE * (1 - 1e-6) for k in ranges)
