"""Broken model folders are reported in one line (`ModelError`), never as a traceback from torch or MONAI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from engine.model_store import WEIGHTS, ModelError, load_digital, load_tensors, read_spec, scan_models


def _copy(small_model, tmp_path, edit=None):
    folder = tmp_path / "models" / "broken"
    shutil.copytree(small_model.folder, folder)
    if edit is not None:
        d = json.loads((folder / "model.json").read_text())
        edit(d)
        (folder / "model.json").write_text(json.dumps(d))
    return folder


def _set(path: str, value):
    def edit(d: dict) -> None:
        *parents, leaf = path.split(".")
        for p in parents:
            d = d[p]
        if value is KeyError:
            del d[leaf]
        else:
            d[leaf] = value

    return edit


@pytest.mark.parametrize(
    "path, value, words",
    [
        ("arguments.not_an_argument", 3, "not_an_argument"),
        ("arguments", [1, 2], "arguments"),
        ("preprocessing.slice_axis", "oblique", "slice_axis"),
        ("preprocessing.input_size", [0, 0], "input_size"),
        ("labels", [], "labels"),
        ("labels", KeyError, "labels"),
        ("architecture", "resnet", "architecture"),
        ("kind", "quantum", "kind"),
        ("arguments.out_channels", 5, "5 outputs for 2 labels"),
    ],
)
def test_invalid_descriptions_are_one_line(small_model, tmp_path, path, value, words):
    folder = _copy(small_model, tmp_path, _set(path, value))
    with pytest.raises(ModelError) as err:
        read_spec(folder)
    message = str(err.value)
    assert "\n" not in message and "model.json" in message
    assert words in message, message


@pytest.mark.parametrize(
    "arguments", [{"channels": "abc"}, {"strides": [2]}, {"act": "no_such_activation"}, {"kernel_size": 0}]
)
def test_arguments_monai_cannot_build_from_are_one_line(small_model, tmp_path, arguments):
    """Values of the right names but the wrong kind pass the schema; MONAI's own error is one line."""
    folder = _copy(small_model, tmp_path, lambda d: d["arguments"].update(arguments))
    spec = read_spec(folder)
    with pytest.raises(ModelError) as err:
        load_digital(spec)
    message = str(err.value)
    assert "\n" not in message and "model.json" in message and "do not build" in message, message


def test_scan_models_names_the_broken_folder(small_model, tmp_path):
    folder = _copy(small_model, tmp_path, _set("preprocessing.slice_axis", "oblique"))
    shutil.copytree(small_model.folder, folder.parent / "good")
    specs, broken = scan_models(folder.parent)
    assert [s.folder.name for s in specs] == ["good"]
    assert list(broken) == ["broken"] and "slice_axis" in broken["broken"]


def test_weights_of_the_wrong_shape(small_model, tmp_path):
    folder = _copy(small_model, tmp_path)
    state = load_tensors(folder / WEIGHTS)
    name = next(k for k, v in state.items() if v.ndim == 4)
    state[name] = torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 2)
    save_file(state, str(folder / WEIGHTS))
    with pytest.raises(ModelError) as err:
        load_digital(read_spec(folder))
    assert "do not fit" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("change", ["shape", "missing", "unexpected"])
def test_analog_weights_that_do_not_fit_are_one_line(small_model, tmp_path, change):
    from engine.analog.chips import ChipCache
    from engine.model_store import ANALOG_WEIGHTS
    from engine.run_settings import RunSettings

    folder = _copy(small_model, tmp_path)
    state = load_tensors(folder / ANALOG_WEIGHTS)
    name = next(k for k, v in state.items() if k.endswith("tile.weight"))
    if change == "shape":
        state[name] = torch.zeros(state[name].shape[0] + 3, state[name].shape[1])
    elif change == "missing":
        del state[name]
    else:
        state["not.a.layer"] = torch.zeros(2)
    save_file(state, str(folder / ANALOG_WEIGHTS))
    spec = read_spec(folder)
    with pytest.raises(ModelError) as err:  # the tiles are read when the first chip is programmed
        ChipCache().chip_set(spec, RunSettings(model=spec.name, mode="analog", mc_samples=1)).chip(0)
    message = str(err.value)
    assert "\n" not in message and ANALOG_WEIGHTS in message and "do not fit" in message, message


def test_the_schema_allows_only_arguments_monai_takes():
    """model_schema.json lists each network's arguments so that model.json is checked without MONAI;
    every name it lets through must be one the MONAI class accepts."""
    import inspect

    from monai.networks.nets import BasicUNetPlusPlus, SwinUNETR, UNet

    from engine.model_store import SCHEMA

    schema = json.loads(SCHEMA.read_text())
    allowed = {
        rule["if"]["properties"]["architecture"]["const"]: rule["then"]["properties"]["arguments"][
            "propertyNames"
        ]["enum"]
        for rule in schema["allOf"]
    }
    classes = {"unet": UNet, "unetpp": BasicUNetPlusPlus, "swinunetr": SwinUNETR}
    assert set(allowed) == set(classes) == set(schema["properties"]["architecture"]["enum"])
    for arch, names in allowed.items():
        assert set(names) <= set(inspect.signature(classes[arch]).parameters), arch
