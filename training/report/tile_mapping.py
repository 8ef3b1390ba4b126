"""Claim 2, tile mapping (paper Table 1): how a network maps onto the device's 512x512 crossbar tiles.

The definitions are aihwkit's.

A Conv or Linear layer with K = C_in * prod(kernel) inputs and O = C_out outputs is split into
ceil(K / 512) * ceil(O / 512) tiles. Utilisation of a network is sum(K * O) / (512^2 * tiles), and a
layer's reuse factor is the number of matrix-vector products it performs per inference at batch 1:
the output spatial size of a convolution, the number of tokens of a linear layer. These are the
quantities behind aihwkit's `analog_summary`, computed here directly because `analog_summary`
reports 100 % utilisation for layers made by `convert_to_analog` (aihwkit 1.1.0).

Two ways to split K rows exist in aihwkit: `convert_to_analog` (what our chips use) cuts the unfolded
rows into equal chunks of at most 512 (`TileModuleArray`); the mapped layers (`AnalogConv2dMapped`)
keep each input channel's kernel whole in one tile, which can cost one tile more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from engine.analog.device import TILE_SIZE
from engine.architectures import build_network
from engine.model_store import ModelSpec

PAPER_TABLE1 = {
    "unet": (7.42, 6574.7, 7.76e6),
    "unetpp": (12.53, 8721.0, 19.6e6),
    "swinunetr": (43.2, 11540.6, 62.19e6),
}  # utilisation %, mean reuse, parameters
SMALL_TILE = 256  # a sensitivity: the same networks on 256x256 tiles
PAPER_INPUT = (256, 256)  # the LGG slices at their native size, as the paper feeds them
# The nearest MONAI configuration to each of the paper's parameter counts, at 2D. The widths of U-Net
# and U-Net++ are scaled from MONAI's (32..512) defaults until the count matches; Swin-UNETR's feature
# size must be a multiple of 12, and 72 is the nearest in 2D. The paper's 62.19 M is exactly MONAI's
# 3D Swin-UNETR at feature size 48.
PAPER_SCALE = {
    "unet": dict(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        channels=[35, 70, 140, 280, 560],
        strides=[2, 2, 2, 2],
        num_res_units=2,
        norm="batch",
    ),
    "unetpp": dict(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        features=[95, 95, 190, 380, 760, 95],
        upsample="nontrainable",
    ),
    "swinunetr": dict(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        feature_size=72,
        depths=[2, 2, 2, 2],
        num_heads=[3, 6, 12, 24],
        use_v2=False,
    ),
}


@dataclass
class LayerMapping:
    name: str
    kind: str
    inputs: int  # K: rows of the weight matrix
    outputs: int  # O: columns
    tiles: int
    reuse: int  # matrix-vector products per inference

    @property
    def utilisation(self) -> float:
        return self.inputs * self.outputs / (TILE_SIZE * TILE_SIZE * self.tiles)


@dataclass
class NetworkMapping:
    layers: list[LayerMapping]
    parameters: int
    digital_parameters: int
    digital_kinds: list[str]

    @property
    def analog_weights(self) -> int:
        return sum(layer.inputs * layer.outputs for layer in self.layers)

    @property
    def tiles(self) -> int:
        return sum(layer.tiles for layer in self.layers)

    @property
    def utilisation(self) -> float:
        return self.analog_weights / (TILE_SIZE * TILE_SIZE * self.tiles) if self.tiles else 0.0

    @property
    def mean_reuse(self) -> float:
        return sum(layer.reuse for layer in self.layers) / len(self.layers) if self.layers else 0.0


def map_network(
    net: nn.Module, input_shape: tuple[int, ...], tile: int = TILE_SIZE, keep_kernels_whole: bool = False
) -> NetworkMapping:
    """Map every Conv/Linear layer of a digital network for one input of `input_shape` (C, H, W)."""
    layers: list[LayerMapping] = []
    hooks = []

    def hook(name: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if isinstance(module, nn.Linear):
                k, o = module.in_features, module.out_features
                reuse = output.numel() // output.shape[-1]
                row_tiles = math.ceil(k / tile)
            else:
                kernel = math.prod(module.kernel_size)
                channels = module.in_channels // module.groups
                k, o = channels * kernel, module.out_channels
                reuse = math.prod(output.shape[2:])
                row_tiles = (
                    math.ceil(channels / (tile // kernel)) if keep_kernels_whole else math.ceil(k / tile)
                )
            tiles = row_tiles * math.ceil(o / tile)
            layers.append(LayerMapping(name, type(module).__name__, k, o, tiles, int(reuse)))

        return record

    analog_types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    for name, module in net.named_modules():
        if isinstance(module, analog_types):
            hooks.append(module.register_forward_hook(hook(name)))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    total = sum(p.numel() for p in net.parameters())
    analog_param_ids = {id(m.weight) for m in net.modules() if isinstance(m, analog_types)}
    digital = [
        (type(m).__name__, p.numel())
        for m in net.modules()
        for p in m.parameters(recurse=False)
        if id(p) not in analog_param_ids and not (isinstance(m, analog_types) and p is m.bias)
    ]
    return NetworkMapping(layers, total, sum(n for _, n in digital), sorted({k for k, _ in digital}))


def tile_mapping(models: dict[tuple[str, str], ModelSpec]) -> tuple[list[dict], dict[str, NetworkMapping]]:
    """Table 1 for each architecture among `models` (once per architecture), beside the paper's numbers."""
    rows, mappings = [], {}
    for (arch, _), spec in models.items():
        if arch in mappings:
            continue
        m = mappings[arch] = map_network(
            spec.build(), (spec.preprocessing.in_channels, *spec.preprocessing.input_size)
        )
        paper = PAPER_TABLE1[arch]
        rows.append(
            {
                "arch": arch,
                "input": "x".join(map(str, spec.preprocessing.input_size)),
                "parameters": m.parameters,
                "analog_weights": m.analog_weights,
                "tiles": m.tiles,
                "utilisation_pct": 100 * m.utilisation,
                "mean_reuse": m.mean_reuse,
                "analog_layers": len(m.layers),
                "digital": ", ".join(m.digital_kinds),
                "paper_utilisation_pct": paper[0],
                "paper_mean_reuse": paper[1],
                "paper_parameters": paper[2],
            }
        )
    return rows, mappings


def paper_scale_mapping() -> list[dict]:
    """Table 1 for each architecture built at the paper's parameter count (`PAPER_SCALE`) and input
    size, beside the paper's numbers: no training needed, the mapping depends on the shapes only."""
    rows = []
    for arch, arguments in PAPER_SCALE.items():
        m = map_network(build_network(arch, arguments), (1, *PAPER_INPUT))
        small = sum(math.ceil(la.inputs / SMALL_TILE) * math.ceil(la.outputs / SMALL_TILE) for la in m.layers)
        paper = PAPER_TABLE1[arch]
        widths = {k: v for k, v in arguments.items() if k in ("channels", "features", "feature_size")}
        rows.append(
            {
                "arch": arch,
                "configuration": ", ".join(f"{k} {v}" for k, v in widths.items()),
                "input": "x".join(map(str, PAPER_INPUT)),
                "parameters": m.parameters,
                "tiles": m.tiles,
                "utilisation_pct": 100 * m.utilisation,
                "utilisation_256_tiles_pct": 100 * m.analog_weights / (SMALL_TILE * SMALL_TILE * small),
                "mean_reuse": m.mean_reuse,
                "analog_layers": len(m.layers),
                "paper_utilisation_pct": paper[0],
                "paper_mean_reuse": paper[1],
                "paper_parameters": paper[2],
            }
        )
    return rows
