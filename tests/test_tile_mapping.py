"""Tile counting, utilisation and reuse against hand-computed values."""

from __future__ import annotations

import pytest
from monai.networks.nets import UNet
from torch import nn

from training.report.tile_mapping import map_network


def test_single_conv_by_hand():
    m = map_network(nn.Sequential(nn.Conv2d(16, 32, 3, padding=1)), (16, 64, 64))
    (layer,) = m.layers
    assert (layer.inputs, layer.outputs, layer.tiles, layer.reuse) == (144, 32, 1, 64 * 64)
    assert layer.utilisation == pytest.approx(144 * 32 / 512**2)


def test_layer_split_over_several_tiles():
    # K = 64*3*3 = 576 rows -> 2 row tiles; 600 columns -> 2 column tiles.
    m = map_network(nn.Sequential(nn.Conv2d(64, 600, 3, stride=2, padding=1)), (64, 32, 32))
    (layer,) = m.layers
    assert layer.tiles == 4
    assert layer.reuse == 16 * 16
    assert m.utilisation == pytest.approx(576 * 600 / (4 * 512**2))


def test_linear_reuse_is_the_token_count():
    m = map_network(nn.Sequential(nn.Linear(96, 288)), (49, 96))
    assert m.layers[0].reuse == 49 and m.layers[0].tiles == 1


def test_monai_unet_check_value():
    # Recorded in shared/notes/aihwkit-facts.md for aihwkit's mapped layers: UNet(32..512), 2D, 256x256.
    net = UNet(2, 1, 2, (32, 64, 128, 256, 512), (2, 2, 2, 2), num_res_units=2)
    m = map_network(net, (1, 256, 256), keep_kernels_whole=True)
    assert len(m.layers) == 19  # the four ConvTranspose2d of the up path are not tile-mappable
    assert m.tiles == 48
    assert m.utilisation * 100 == pytest.approx(43.1, abs=0.05)
    assert m.mean_reuse == pytest.approx(8057, abs=1)
    assert "ConvTranspose2d" in m.digital_kinds
    # convert_to_analog's equal row split fits the 4608-row layer in 9 tiles instead of 10.
    assert map_network(net, (1, 256, 256)).tiles == 47


def test_row_split_matches_aihwkit_tile_arrays():
    from engine.analog.conversion import to_analog
    from engine.analog.device import DeviceSettings

    net = nn.Sequential(nn.Conv2d(128, 64, 3, padding=1), nn.Linear(8, 600))
    analog = to_analog(net, DeviceSettings())
    counts = [len(list(m.analog_tiles())) for m in analog.modules() if hasattr(m, "analog_module")]
    m = (
        map_network(nn.Sequential(net[0]), (128, 8, 8)).layers
        + map_network(nn.Sequential(net[1]), (4, 8)).layers
    )
    assert counts == [layer.tiles for layer in m]


@pytest.mark.parametrize("arch", ["unet", "unetpp", "swinunetr"])
def test_the_paper_scale_networks_have_the_papers_parameter_counts(arch):
    from engine.architectures import build_network
    from training.report.tile_mapping import PAPER_SCALE, PAPER_TABLE1

    parameters = sum(p.numel() for p in build_network(arch, PAPER_SCALE[arch]).parameters())
    assert parameters == pytest.approx(PAPER_TABLE1[arch][2], rel=0.02)
