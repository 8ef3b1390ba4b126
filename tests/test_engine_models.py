"""Networks, model folders and analog conversion."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from engine.analog.conversion import layer_report, to_analog
from engine.analog.device import DeviceSettings
from engine.architectures import ARCHITECTURES, build_network, default_arguments
from engine.model_store import ModelError, find_model, list_models, load_digital


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_weight_layer_runs_on_tiles(arch):
    net = build_network(arch, default_arguments(arch, 1, 2, 64)).eval()
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    with torch.no_grad():
        assert net(torch.rand(1, 1, 64, 64)).shape == (1, 2, 64, 64)
    rows = layer_report(to_analog(net, DeviceSettings()))
    digital = {r.kind for r in rows if not r.on_tiles}
    # Matrix-vector products (Conv, Linear) are all analog; only norms, activations and the
    # attention's relative-position table stay digital.
    assert not digital & {"Conv2d", "Linear", "ConvTranspose2d", "Conv3d", "Conv1d"}, digital
    assert digital <= {"BatchNorm2d", "InstanceNorm2d", "LayerNorm", "PReLU", "WindowAttention"}, digital
    n_conv = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.modules())
    assert sum(r.on_tiles for r in rows) == n_conv


def test_model_folder_round_trip(small_model):
    folder = small_model.folder
    meta = json.loads((folder / "model.json").read_text())
    for key in ("architecture", "arguments", "preprocessing", "labels", "kind", "device", "metrics", "data"):
        assert key in meta
    # Weights are plain tensors in safetensors: no pickled code anywhere.
    assert all(isinstance(v, torch.Tensor) for v in load_file(str(folder / "weights.safetensors")).values())
    assert small_model.has_analog
    net = load_digital(small_model)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert net(x).shape == (1, 2, 64, 64)
    assert find_model(str(folder)).name == "small_unet"
    assert [s.name for s in list_models(folder.parent)] == ["small_unet"]


def test_unknown_model_names_the_available_ones(small_model):
    with pytest.raises(ModelError, match="small_unet"):
        find_model("nope", small_model.folder.parent)


def test_shipped_model_records_its_provenance(shipped_model):
    assert shipped_model.kind in ("digital", "hwa")
    split = shipped_model.data["split"]
    assert set(split) == {"train", "val", "test"}
    assert not set(split["train"]) & set(split["test"])
    assert shipped_model.training["wall_time_s"] > 0
    assert shipped_model.has_analog
