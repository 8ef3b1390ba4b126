"""`aimc` end to end on a real LGG volume, and its one-line errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from cli.main import main


def test_predict_writes_four_aligned_files(shipped_model, lgg_case, tmp_path, capsys):
    image, label = lgg_case
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(image),
            "--model",
            shipped_model.name,
            "--mode",
            "analog",
            "--mc",
            "2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    src = nib.load(str(image))
    for name in ("seg.nii.gz", "uncertainty.nii.gz", "probability.nii.gz"):
        img = nib.load(str(out / name))
        assert img.shape == src.shape
        np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
    seg = np.asanyarray(nib.load(str(out / "seg.nii.gz")).dataobj)
    assert seg.dtype == np.uint8
    truth = np.asanyarray(nib.load(str(label)).dataobj) > 0
    dice = 2 * (seg.astype(bool) & truth).sum() / (seg.astype(bool).sum() + truth.sum())
    assert dice > 0.5, dice  # the shipped model finds the lesion in place, not shifted or flipped
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == shipped_model.name
    assert summary["settings"]["mc_samples"] == 2
    assert summary["labels"]["FLAIR abnormality"]["volume_ml"] > 0
    assert summary["seconds_per_slice"] > 0
    assert summary["gate"]["fits"] and "verdict" in summary and summary["lesions"]  # issue 13


def test_models_lists_and_details(shipped_model, capsys):
    assert main(["models"]) == 0
    assert shipped_model.name in capsys.readouterr().out
    assert main(["models", "--detail", shipped_model.name, "--layers"]) == 0
    out = capsys.readouterr().out
    assert "analog tiles" in out and "BatchNorm2d" in out


def test_models_markdown_compares_an_hwa_model_with_its_digital_start(small_model):
    import dataclasses

    from cli.main import models_markdown

    digital = dataclasses.replace(
        small_model,
        metrics={
            "test": {
                "digital": {"mean_dice": 0.80},
                "analog_noise1_drift86400": {"mean_dice": 0.70, "std_dice_over_programmings": 0.02},
            }
        },
        training={"epochs_run": 3, "wall_time_s": 120},
    )
    hwa = dataclasses.replace(
        small_model,
        name="small_hwa",
        kind="hwa",
        training={"init": "small_unet", "epochs_run": 2},
        metrics={
            "test": {
                "digital": {"mean_dice": 0.81},
                "analog_noise1_drift86400": {"mean_dice": 0.78, "std_dice_over_programmings": 0.01},
            }
        },
    )
    lines = models_markdown([digital, hwa]).splitlines()
    assert lines[2].endswith("| 0.800 | 0.700 ± 0.020 | 0.100 |")  # its own drop
    assert lines[3].endswith("| 0.810 | 0.780 ± 0.010 | 0.020 |")  # against the digital model it started from
    assert "from `small_unet`" in lines[3]
    from engine.model_store import weights_hash

    same = dataclasses.replace(hwa, training={**hwa.training, "init_weights": weights_hash(digital)})
    assert models_markdown([digital, same]).splitlines()[2:] == lines[2:]
    replaced = dataclasses.replace(
        hwa, training={**hwa.training, "init_weights": "0" * 64, "init_test_dice": 0.83}
    )
    row = models_markdown([digital, replaced]).splitlines()[3]
    assert "from `small_unet` (weights since replaced)" in row
    assert row.endswith("| 0.810 | 0.780 ± 0.010 | 0.050 |")  # against the Dice its own start had
    wide = dataclasses.replace(
        digital,
        preprocessing=dataclasses.replace(digital.preprocessing, input_size=(256, 256), context=1),
        training={"epochs_run": 80, "wall_time_s": 5400, "patch": 128},
    )
    assert "| 80 epochs, 256x256 (128x128 patches), 2.5D (3 slices), 90 min |" in models_markdown([wide])


@pytest.mark.parametrize(
    "args, words",
    [
        (["predict", "/no/such/scan.nii.gz", "--out", "x"], "no such file"),
        (["predict", "{scan}", "--model", "no_such_model", "--out", "x"], "no model named"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, words, lgg_case, capsys, tmp_path):
    args = [a.replace("{scan}", str(lgg_case[0])) for a in args]
    args[args.index("x")] = str(tmp_path / "o")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err


def test_out_of_range_settings_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "scan.nii.gz", "--noise", "5", "--out", "x"])
    assert exit_info.value.code == 2


def test_train_passes_the_hwa_clip_and_noise_to_the_device_settings(monkeypatch, tmp_path):
    import training.train

    seen = {}
    monkeypatch.setattr(training.train, "train", lambda *a, **kw: seen.update(kw))

    def settings(*options: str):
        main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), *options])
        return seen["settings"]

    clipped = settings("--kind", "hwa", "--clip-sigma", "3.5")
    assert (clipped.train_clip_sigma, clipped.train_weight_noise) == (3.5, 0.08)
    quieter = settings("--kind", "hwa", "--weight-noise", "0.04")
    assert (quieter.train_clip_sigma, quieter.train_weight_noise) == (2.5, 0.04)
    assert settings() is None  # the defaults of DeviceSettings
