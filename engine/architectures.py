"""The 2D segmentation networks of the paper, built from MONAI, with every weight layer tile-mappable.

aihwkit maps Linear and Conv layers to analog tiles but leaves transposed convolutions digital.
We therefore build each network with its transposed convolutions replaced by the equivalent
nearest-neighbour upsampling followed by a convolution, so every matrix-vector product can run on
tiles. The replacement is part of the architecture (trained that way), not a conversion trick.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import BasicUNetPlusPlus, SwinUNETR, UNet
from torch import nn

ARCHITECTURES = ("unet", "unetpp", "swinunetr")


class UpsampleConv(nn.Sequential):
    """Nearest upsampling by the stride, then a 3x3 convolution: a tile-mappable transposed conv."""

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        stride = deconv.stride[0]
        super().__init__(
            nn.Upsample(scale_factor=stride, mode="nearest"),
            nn.Conv2d(
                deconv.in_channels,
                deconv.out_channels,
                kernel_size=3,
                padding=1,
                bias=deconv.bias is not None,
            ),
        )
        self.expected_output_padding = deconv.output_padding


def replace_transposed_convs(module: nn.Module) -> int:
    """Swap every ConvTranspose2d for `UpsampleConv`, in place; return how many were swapped.

    Only stride-s deconvolutions whose output is exactly s times the input are equivalent in
    shape, which holds for the MONAI decoders used here (checked by a forward in the tests).
    """
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.ConvTranspose2d):
            setattr(module, name, UpsampleConv(child))
            count += 1
        else:
            count += replace_transposed_convs(child)
    return count


def default_arguments(arch: str, in_channels: int, out_channels: int, size: int) -> dict[str, Any]:
    """Widths chosen so each model trains on two CPU cores in about two hours."""
    if arch == "unet":
        return dict(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=[16, 32, 64, 128, 256],
            strides=[2, 2, 2, 2],
            num_res_units=2,
            norm="batch",
        )
    if arch == "unetpp":
        return dict(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            features=[16, 16, 32, 64, 128, 16],
            upsample="nontrainable",
        )
    if arch == "swinunetr":
        return dict(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            feature_size=12,
            depths=[2, 2, 2, 2],
            num_heads=[3, 6, 12, 24],
            use_v2=False,
        )
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


def build_network(arch: str, arguments: dict[str, Any]) -> nn.Module:
    """Build the MONAI network `arch` with `arguments`, transposed convolutions made tile-mappable."""
    if arch == "unet":
        net: nn.Module = UNet(**arguments)
    elif arch == "unetpp":
        net = _UNetPlusPlusLogits(**arguments)
    elif arch == "swinunetr":
        net = SwinUNETR(**arguments)
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    replace_transposed_convs(net)
    return net


class _UNetPlusPlusLogits(BasicUNetPlusPlus):
    """BasicUNetPlusPlus returns a list of deep-supervision heads; we use the last one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[-1]
