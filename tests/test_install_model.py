"""scripts/install_model.py: a run's model takes a shipped name; nothing measured on the old one stays."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil

from safetensors.torch import load_file, save_file

from engine.model_store import read_spec, weights_hash, write_spec
from engine.trust import TrustCalibration
from tests.conftest import REPO


def _install_module():
    spec = importlib.util.spec_from_file_location("install_model", REPO / "scripts" / "install_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_installing_replaces_the_model_of_that_name_and_drops_what_was_measured_on_it(small_model, tmp_path):
    models = tmp_path / "models"
    old = models / "lgg_unet_digital"
    shutil.copytree(small_model.folder, old)
    write_spec(
        dataclasses.replace(
            small_model,
            name="lgg_unet_digital",
            metrics={"test": {"digital": {"mean_dice": 0.8}}},
            trust={"x": {}},
        ),
        old,
    )
    run = tmp_path / "runs" / "models" / "lgg_unet_r2"
    shutil.copytree(small_model.folder, run)
    trained = dataclasses.replace(
        small_model,
        name="lgg_unet_r2",
        metrics={"val_dice_model_size": 0.7, "test": {"digital": {"mean_dice": 0.1}}},
        training={"init": "/work/runs/stage/lgg_unet_digital", "epochs_run": 3},
    )
    write_spec(trained, run)
    weights = load_file(run / "weights.safetensors")
    save_file({k: v + 1 for k, v in weights.items()}, run / "weights.safetensors")  # other weights
    target = _install_module().install(run, "lgg_unet_digital", models)
    got = read_spec(target)
    assert got.name == "lgg_unet_digital" and got.training["run"] == "lgg_unet_r2"
    assert got.training["init"] == "lgg_unet_digital" and got.training["epochs_run"] == 3
    assert "test" not in got.metrics and got.metrics["val_dice_model_size"] == 0.7
    assert got.trust == {} and got.card is None
    assert (target / "weights.safetensors").read_bytes() == (run / "weights.safetensors").read_bytes()
    assert (target / "weights.safetensors").read_bytes() != (
        small_model.folder / "weights.safetensors"
    ).read_bytes()
    assert sorted(p.name for p in models.iterdir()) == ["lgg_unet_digital"]  # no staging left behind


def test_an_hwa_model_keeps_the_start_it_was_trained_from_when_its_digital_model_is_replaced(
    small_model, tmp_path
):
    models = tmp_path / "models"
    old = dataclasses.replace(
        small_model, name="lgg_unet_digital", metrics={"test": {"digital": {"mean_dice": 0.8}}}
    )
    shutil.copytree(small_model.folder, models / old.name)
    write_spec(old, models / old.name)
    for name, training in (
        ("lgg_unet_hwa", {"init": "lgg_unet_digital"}),  # trained before starts were recorded
        ("lgg_unet_hwa_other", {"init": "lgg_unet_digital", "init_weights": "f" * 64}),  # from other weights
    ):
        shutil.copytree(small_model.folder, models / name)
        write_spec(dataclasses.replace(small_model, name=name, kind="hwa", training=training), models / name)
    start = weights_hash(read_spec(models / old.name))
    run = tmp_path / "run"
    shutil.copytree(small_model.folder, run)
    weights = load_file(run / "weights.safetensors")
    save_file({k: v + 1 for k, v in weights.items()}, run / "weights.safetensors")
    _install_module().install(run, "lgg_unet_digital", models)
    kept = read_spec(models / "lgg_unet_hwa").training
    assert kept == {"init": "lgg_unet_digital", "init_weights": start, "init_test_dice": 0.8}
    assert read_spec(models / "lgg_unet_hwa_other").training == {
        "init": "lgg_unet_digital",
        "init_weights": "f" * 64,
    }
    assert weights_hash(read_spec(models / "lgg_unet_digital")) != start


def test_installing_drops_the_reports_measurements_kept_by_name_only(tmp_path):
    measurements = tmp_path / "measurements"
    measurements.mkdir()
    rows = "model,cases,noise,drift_s,seed,mean_dice\n"
    rows += "lgg_unet_digital,18,1.0,60.0,0,0.7\nlgg_unet_hwa,18,1.0,60.0,0,0.8\n"
    (measurements / "robustness_runs.csv").write_text(rows)
    (measurements / "uncertainty_lgg_unet_digital_cases18_mc16_n1_d86400.json").write_text("{}")
    (measurements / "uncertainty_lgg_unet_hwa_cases18_mc16_n1_d86400.json").write_text("{}")
    assert _install_module().drop_measurements("lgg_unet_digital", measurements) == 2
    assert (measurements / "robustness_runs.csv").read_text().splitlines() == [
        "model,cases,noise,drift_s,seed,mean_dice",
        "lgg_unet_hwa,18,1.0,60.0,0,0.8",
    ]
    assert [p.name for p in measurements.glob("uncertainty_*")] == [
        "uncertainty_lgg_unet_hwa_cases18_mc16_n1_d86400.json"
    ]


def test_a_shipped_model_installed_under_another_name_keeps_what_was_measured_on_its_weights(
    small_model, calibration, tmp_path
):
    models = tmp_path / "models"
    shutil.copytree(small_model.folder, models / "lgg_unet_hwa")
    source = models / "lgg_unet_hwa_r2"
    shutil.copytree(small_model.folder, source)
    measured = {"analog_noise1": {"model": "lgg_unet_hwa_r2", "mean_dice": 0.837}}
    write_spec(
        dataclasses.replace(
            small_model,
            name="lgg_unet_hwa_r2",
            metrics={"test": measured},
            trust={"analog": calibration.to_dict()},
            training={"run": "lgg_unet_hwa_clip35_wn04_e8"},
        ),
        source,
    )
    weights = (source / "weights.safetensors").read_bytes()
    target = _install_module().install(source, "lgg_unet_hwa", models)
    got = read_spec(target)
    assert got.name == "lgg_unet_hwa" and got.training["run"] == "lgg_unet_hwa_clip35_wn04_e8"
    assert got.metrics["test"] == {"analog_noise1": {"model": "lgg_unet_hwa", "mean_dice": 0.837}}
    assert TrustCalibration.from_dict(got.trust["analog"]) == calibration
    assert (target / "weights.safetensors").read_bytes() == weights
    assert sorted(p.name for p in models.iterdir()) == ["lgg_unet_hwa"]  # shipped once


def test_trust_records_move_to_the_new_name_and_the_replaced_weights_records_go(tmp_path):
    records = tmp_path / "trust"
    records.mkdir()
    for name in ("lgg_unet_hwa_analog_val", "lgg_unet_hwa_digital_test", "lgg_unet_hwa_r2_analog_val"):
        (records / f"{name}.json").write_text(json.dumps({"model": name, "records": [name]}))
    assert _install_module().move_trust_records("lgg_unet_hwa_r2", "lgg_unet_hwa", records) == 1
    assert sorted(p.name for p in records.iterdir()) == ["lgg_unet_hwa_analog_val.json"]
    moved = json.loads((records / "lgg_unet_hwa_analog_val.json").read_text())
    assert moved == {"model": "lgg_unet_hwa", "records": ["lgg_unet_hwa_r2_analog_val"]}


def test_rerunning_an_install_of_the_same_weights_keeps_what_was_measured_since(small_model, tmp_path):
    models = tmp_path / "models"
    run = tmp_path / "runs" / "models" / "lgg_unet_r2"
    shutil.copytree(small_model.folder, run)
    install = _install_module()
    assert not install.already_installed(run, "lgg_unet_digital", models)  # nothing there yet
    install.install(run, "lgg_unet_digital", models)
    assert install.already_installed(run, "lgg_unet_digital", models)
    weights = load_file(run / "weights.safetensors")
    save_file({k: v + 1 for k, v in weights.items()}, run / "weights.safetensors")  # retrained
    assert not install.already_installed(run, "lgg_unet_digital", models)
