"""Fast inference through programmed aihwkit chips: aihwkit's `TorchInferenceTile` forward, reordered.

aihwkit's torch tile runs a convolution on CPU by unfolding it (im2col, about nine times the
activation) and then clipping, quantising and noising that unfolded tensor element-wise. Input
clipping and DAC quantisation act element-wise on the input, so they commute with im2col and zero
padding: we apply them to the activation and run native convolutions: one grouped convolution
over all the physical tiles of a layer, or one per tile on large images (where a tile holds only
part of a channel's kernel, the rest of that slice is zero). The layers here supply the MVM; the
periphery around it (input ranges, DAC, read noise, ADC, scales) is `engine.analog.periphery`'s,
one op per step over all the tiles of a layer, each with its own input range, noise, ADC and scales.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from aihwkit.nn import AnalogConv2d, AnalogLinear
from torch import nn

from engine.analog.periphery import PeripheryLayer

GROUPED_MAX_PIXELS = 32 * 32  # see FastAnalogConv2d._grouped: the crossover on the shipped networks


class FastAnalogLinear(PeripheryLayer):
    """A programmed `AnalogLinear`: `F.linear` on one tile, a batched matmul over (tiles, tokens, inputs)."""

    def __init__(self, layer: AnalogLinear, read_noise: float = 0.0) -> None:
        super().__init__(layer, read_noise)
        if self.tiles == 1:
            self.register_buffer("weight", self.tile_weights[0])
            self.register_buffer("abs_weight", self.tile_abs_weights[0])
            self.register_buffer("gather_index", None)
            self.register_buffer(
                "input_range", None if self.tile_ranges is None else self.tile_ranges.view(())
            )
        else:
            self.batch_dim = 1  # the MVM result is (tiles, rows, outputs), a batch's slices split the rows
            width = max(s.stop - s.start for s in self.in_slices)
            index = torch.cat(
                [torch.arange(s.start, s.start + width).clamp_(max=s.stop - 1) for s in self.in_slices]
            )
            self.register_buffer("gather_index", index)  # past a shorter tile's end: zero weights
            self.register_buffer("weight", self._stack(self.tile_weights, width))
            self.register_buffer(
                "abs_weight", None if read_noise == 0 else self._stack(self.tile_abs_weights, width)
            )
            self.register_buffer(
                "input_range", None if self.tile_ranges is None else self.tile_ranges.view(-1, 1, 1)
            )
        del self.tile_weights, self.tile_abs_weights, self.tile_ranges

    def _stack(self, weights: list[torch.Tensor], width: int) -> torch.Tensor:
        """(tiles, in width, out width): each tile's (out, in) matrix transposed, zero-padded."""
        out = weights[0].new_zeros(self.tiles, width, self.out_width)
        for k, w in enumerate(weights):
            out[k, : w.shape[1], : w.shape[0]] = w.t()
        return out

    def _layout_outputs(self, per_tile: torch.Tensor) -> torch.Tensor:
        return per_tile.view(-1) if self.tiles == 1 else per_tile.view(self.tiles, 1, self.out_width)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        index: torch.Tensor | None = self._buffers["gather_index"]
        if index is None:
            return x
        rows = x.reshape(-1, x.shape[-1]).index_select(1, index)
        return rows.view(rows.shape[0], self.tiles, -1).transpose(0, 1)

    def _mvm(self, levels: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        b: dict[str, Any] = self._buffers
        weight, abs_weight = b["weight"], b["abs_weight"]
        if self.tiles == 1:
            return F.linear(levels, weight), (
                None if abs_weight is None else F.linear(levels.square(), abs_weight)
            )
        return torch.bmm(levels, weight), (
            None if abs_weight is None else torch.bmm(levels.square(), abs_weight)
        )

    def _combine(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tokens = y.shape[1]
        y = y.view(self.in_splits, self.out_splits, tokens, self.out_width).sum(0)
        y = y.permute(1, 0, 2).reshape(tokens, -1)
        if self.out_index is not None:
            y = y.index_select(1, self.out_index)
        return y.view(*x.shape[:-1], self.out_features)


class FastAnalogConv2d(PeripheryLayer):
    """A programmed `AnalogConv2d`: native convolutions instead of im2col, one group (or one call) per tile.

    aihwkit unfolds the input to (C_in * kh * kw) rows, channel-major, and splits them into tiles.
    A tile therefore covers channels c0..c1, possibly only part of the first and last kernel; its
    kernel is zero outside the rows it holds.
    """

    feature_dim = 1

    def __init__(self, layer: AnalogConv2d, read_noise: float = 0.0) -> None:
        super().__init__(layer, read_noise)
        self.stride, self.padding, self.dilation = layer.stride, layer.padding, layer.dilation
        kh, kw = layer.kernel_size
        per_channel = kh * kw
        channels = [(s.start // per_channel, -(-s.stop // per_channel)) for s in self.in_slices]
        width = max(c1 - c0 for c0, c1 in channels)  # input channels per group

        def kernels(weights: list[torch.Tensor]) -> torch.Tensor:
            out = weights[0].new_zeros(self.tiles * self.out_width, width * per_channel)
            for k, (w, s, (c0, _)) in enumerate(zip(weights, self.in_slices, channels, strict=True)):
                offset = s.start - c0 * per_channel
                out[k * self.out_width : k * self.out_width + w.shape[0], offset : offset + w.shape[1]] = w
            return out.view(-1, width, kh, kw)

        full = self.tiles == 1  # one tile holds every channel
        index = torch.cat([torch.arange(c0, c0 + width).clamp_(max=c1 - 1) for c0, c1 in channels])
        self.register_buffer("gather_index", None if full else index)  # past a tile's channels: zero weights
        self.register_buffer("weight", kernels(self.tile_weights))  # in the layout of the last read
        self.register_buffer("abs_weight", None if read_noise == 0 else kernels(self.tile_abs_weights))
        self.group_width = width
        ranges = self.tile_ranges
        if ranges is not None:  # one tile: a scalar, as aihwkit divides by it
            ranges = ranges.view(()) if full else ranges.repeat_interleave(width).view(1, -1, 1, 1)
        self.register_buffer("input_range", ranges)
        del self.tile_weights, self.tile_abs_weights, self.tile_ranges

    def _layout_outputs(self, per_tile: torch.Tensor) -> torch.Tensor:
        return per_tile.view(1, -1, 1, 1)

    def _grouped(self, x: torch.Tensor) -> bool:
        """Several tiles on a small image: one grouped convolution in channels-last memory, where oneDNN
        runs it about as fast as one convolution over all channels (in NCHW it is slower). On larger
        images gathering into channels last costs more than it saves: one convolution per tile."""
        return self.tiles > 1 and x.shape[-2] * x.shape[-1] <= GROUPED_MAX_PIXELS

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        index: torch.Tensor | None = self._buffers["gather_index"]
        if index is None:
            return x
        if self._grouped(x):
            return x.permute(0, 2, 3, 1).index_select(3, index).permute(0, 3, 1, 2)
        return x.index_select(1, index)

    def _kernels(self, grouped: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weights (and |weights|) in the layout the convolution wants: channels last when grouped.
        One copy is kept, converted when the image size changes the path (a chip reads one size)."""
        b: dict[str, Any] = self._buffers
        layout = torch.channels_last if grouped else torch.contiguous_format
        if not b["weight"].is_contiguous(memory_format=layout):
            for name in ("weight", "abs_weight"):
                if b[name] is not None:
                    b[name] = b[name].contiguous(memory_format=layout)
        return b["weight"], b["abs_weight"]

    def _mvm(self, levels: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        grouped = self._grouped(x)
        weight, abs_weight = self._kernels(grouped)
        if self.tiles == 1 or grouped:
            y = F.conv2d(levels, weight, None, self.stride, self.padding, self.dilation, self.tiles)
            if abs_weight is None:
                return y, None
            return y, F.conv2d(
                levels.square(), abs_weight, None, self.stride, self.padding, self.dilation, self.tiles
            )

        def per_tile(inputs: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
            return torch.cat(
                [
                    F.conv2d(i, k, None, self.stride, self.padding, self.dilation)
                    for i, k in zip(
                        inputs.split(self.group_width, 1), kernels.split(self.out_width), strict=True
                    )
                ],
                1,
            )

        return per_tile(levels, weight), (
            None if abs_weight is None else per_tile(levels.square(), abs_weight)
        )

    def _combine(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = y.shape
        if not self._grouped(x):
            if self.in_splits > 1:
                y = y.view(n, self.in_splits, -1, h, w).sum(1)
            return y if self.out_index is None else y.index_select(1, self.out_index)
        y = y.permute(0, 2, 3, 1)  # channels last, as the grouped convolution returns it
        if self.in_splits > 1:
            y = y.view(n, h, w, self.in_splits, -1).sum(3)
        if self.out_index is not None:
            y = y.index_select(3, self.out_index)
        # left in channels-last memory: the next layers take it as it is, cheaper than a copy
        return y.permute(0, 3, 1, 2)


def fast_chip(chip: nn.Module, read_noise: float = 0.0) -> nn.Module:
    """A copy of a programmed aihwkit model with every analog layer replaced by its fast equivalent.

    The fast layers hold the chip's programmed, drifted conductances and its drift compensation;
    every forward is a new read. `read_noise` is the optional per-read PCM w_noise (0 = off).
    """
    chip.eval()
    memo: dict[int, nn.Module] = {}
    for name, module in chip.named_modules():
        if isinstance(module, AnalogConv2d):
            memo[id(module)] = FastAnalogConv2d(module, read_noise)
        elif isinstance(module, AnalogLinear):
            memo[id(module)] = FastAnalogLinear(module, read_noise)
        elif hasattr(module, "analog_module"):
            raise NotImplementedError(f"{name}: no fast equivalent for {type(module).__name__}")
    return copy.deepcopy(chip, memo).eval()
