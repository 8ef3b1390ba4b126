"""Hardware-aware training through aihwkit's tiles without its im2col: several times cheaper.

aihwkit's torch tile trains a convolution by unfolding its input (about nine times the activation)
and then clipping, quantising and noising the unfolded tensor element-wise, with its own autograd
functions. Input clipping and DAC quantisation are element-wise and map 0 to 0, so they commute
with im2col and zero padding: we apply aihwkit's own functions (`InputRangeForward`,
`UniformQuantize`, the weight modifier) to the activation and run a native convolution per tile.
The parameters stay the aihwkit tile's own (`tile.weight`, input range, output scales, digital
bias), so `AnalogOptimizer` still clips and remaps after each step, the mapping-scale gradient hook
still applies, and the trained model is saved and read back by aihwkit unchanged.

Per tile, as `TorchInferenceTile.forward` does it: clip to the learned input range r (with
aihwkit's range gradient), divide by r, DAC-quantise (straight-through), clip to the input bound,
multiply by the weights with injected noise (training only), add output noise, ADC-quantise,
clip to the output bound, multiply by r, the mapping scales and the learned output scales, sum
the tiles, add the digital bias.

aihwkit's input-range gradient is not linear in the input's gradient: it sums, over the unfolded
inputs that clip, only the parts of their gradients that push the range outwards. A convolution's
activation gradient has already summed the kernel positions, so for convolutions `_RangeTap`
recomputes each clipped pixel's gradient per kernel position from the convolution's output
gradient (one tap per kernel offset) and applies aihwkit's rule, decay term included, to those.
Forward and gradients are aihwkit's (tested against its tile).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from aihwkit.nn import AnalogConv2d, AnalogLinear
from aihwkit.simulator.tiles.inference_torch import InputRangeForward
from aihwkit.simulator.tiles.torch_tile import TorchSimulatorTile
from aihwkit.simulator.tiles.utils import UniformQuantize
from torch import nn

from engine.analog.periphery import check_supported, layer_tiles


def _check(tile: Any, name: str) -> None:
    """The settings the inference fast path reproduces (stochastic rounding too: aihwkit's own
    quantiser is used here), and learned, initialised input ranges."""
    check_supported(tile.rpu_config.forward, f"{name} (fast HWA training)", stochastic_rounding=True)
    ir = tile.rpu_config.pre_post.input_range
    if tile.input_range is None or ir.manage_output_clipping:
        raise NotImplementedError("fast HWA training needs learned input ranges")
    if tile.input_range_update_idx.item() < ir.init_from_data:
        raise ValueError("set the input ranges first (calibrate, then mark them initialised)")


def _dac(x: torch.Tensor, tile: Any, range_gradient: bool = True) -> torch.Tensor:
    """Input range, normalisation and DAC of aihwkit's `pre_forward` + `_prepare_input`.

    `range_gradient=False` leaves the clipping part of the range's gradient to `_RangeTap`.
    """
    r = tile.input_range
    io = tile.rpu_config.forward
    bound = abs(r.item())
    x = torch.clamp(x, min=-bound, max=bound)
    if range_gradient:
        x = InputRangeForward.apply(x, r, tile.rpu_config.pre_post.input_range)
    x = x / r
    if io.inp_res > 0:
        x = UniformQuantize.apply(x, io.inp_res, io.inp_bound, io.inp_sto_round)
    inp_bound = io.inp_bound if io.inp_bound > 0 else float("inf")
    return torch.clamp(x, min=-inp_bound, max=inp_bound)


def _adc(y: torch.Tensor, tile: Any, view: tuple[int, ...]) -> torch.Tensor:
    """Output noise, ADC and bound of `_finalize_output`, then `post_forward` and output scales."""
    io = tile.rpu_config.forward
    if io.out_noise > 0:
        y = y + io.out_noise * torch.randn_like(y)
    if io.out_res > 0:
        y = UniformQuantize.apply(y, io.out_res, io.out_bound, io.out_sto_round)
    bound = io.out_bound if io.out_bound > 0 else float("inf")
    y = torch.clamp(y, min=-bound, max=bound)
    scale = tile.input_range
    if tile.mapping_scales is not None:
        scale = scale * tile.get_mapping_scales().view(view)
    y = y * scale
    if tile.out_scaling_alpha is not None:
        y = y * tile.out_scaling_alpha.view(view)
    return y


def _weights(tile: Any, batch: int) -> torch.Tensor:
    """The tile's weights, with the training modifier's noise when training (aihwkit's own)."""
    if not tile.training:
        return tile.tile.weight
    return TorchSimulatorTile.modify_weight(tile.tile.weight, tile.tile._modifier, batch)


class _RangeTap(torch.autograd.Function):
    """Identity on a convolution's output; its backward adds aihwkit's input-range gradient.

    A clipping pixel (c, h, w) is read at kernel offset (i, j) by output position
    p = ((h, w) + padding - (i, j) * dilation) / stride, where that is a whole in-range position;
    there the unfolded input's gradient is sum_o W[o, c, i, j] g[o, p], and aihwkit's rule is
    applied to each such value. Only clipping pixels are visited.
    """

    @staticmethod
    def forward(
        ctx: Any,
        y: torch.Tensor,
        r: torch.Tensor,
        x_clipped: torch.Tensor,
        kernel: torch.Tensor,
        rows: torch.Tensor,
        conv: tuple[Any, Any, Any],
        ir_params: Any,
    ) -> torch.Tensor:
        ctx.save_for_backward(r, x_clipped, kernel, rows)
        ctx.conv, ctx.ir = conv, ir_params
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        r, x, kernel, rows = ctx.saved_tensors
        (sh, sw), (ph, pw), (dh, dw) = ctx.conv
        ir = ctx.ir
        kh, kw = kernel.shape[-2:]
        h_out, w_out = g.shape[-2:]
        grad = torch.zeros_like(r)
        clipped = 0
        offsets_h, offsets_w = torch.arange(kh, device=g.device) * dh, torch.arange(kw, device=g.device) * dw
        for side, mask in ((1.0, x >= r), (-1.0, x <= -r)):
            n, c, hh, ww = mask.nonzero().unbind(1)  # the pixels that clip: few once ranges are set
            if n.numel() == 0:
                continue
            oh, ow = hh[:, None] + ph - offsets_h, ww[:, None] + pw - offsets_w  # (P, kh), (P, kw)
            ok = (
                ((oh % sh == 0) & (oh >= 0) & (oh // sh < h_out))[:, :, None]
                & ((ow % sw == 0) & (ow >= 0) & (ow // sw < w_out))[:, None, :]
                & rows[c]
            )
            oh = (oh // sh).clamp(0, h_out - 1)[:, :, None].expand(-1, kh, kw)
            ow = (ow // sw).clamp(0, w_out - 1)[:, None, :].expand(-1, kh, kw)
            nn_ = n[:, None, None].expand(-1, kh, kw)
            g_at = g.permute(0, 2, 3, 1)[nn_, oh, ow]  # (P, kh, kw, O)
            w_at = kernel[n, :, c] if kernel.dim() == 5 else kernel[:, c].permute(1, 0, 2, 3)
            w_at = w_at.permute(0, 2, 3, 1)
            z = (g_at * w_at).sum(-1) / r * ok
            grad += z.clamp(max=0.0).sum() if side > 0 else -z.clamp(min=0.0).sum()
            clipped += int(ok.sum())
        if ir.gradient_relative:
            grad = grad * r * ir.gradient_scale
        if ir.decay > 0:
            total = g.shape[0] * h_out * w_out * int(rows.sum())
            if 1.0 - clipped / total > ir.input_min_percentage:
                grad = grad + ir.decay * r
        return g, grad, None, None, None, None, None


def _conv_forward(self: AnalogConv2d, x: torch.Tensor) -> torch.Tensor:
    tiles, bias = layer_tiles(self)
    kh, kw = self.kernel_size
    per_channel = kh * kw
    parts: dict[int, torch.Tensor] = {}
    batch = x.shape[0]
    for in_slice, out_slice, tile in tiles:
        c0, c1 = in_slice.start // per_channel, -(-in_slice.stop // per_channel)
        offset = in_slice.start - c0 * per_channel
        xc = x[:, c0:c1]
        xs = _dac(xc, tile, range_gradient=False)
        w = _weights(tile, batch)
        pad = (offset, (c1 - c0) * per_channel - offset - w.shape[-1])
        kernel = F.pad(w, pad).reshape(*w.shape[:-1], c1 - c0, kh, kw)
        if kernel.dim() == 5:  # one weight draw per sample: a grouped convolution over the batch
            y = F.conv2d(
                xs.reshape(1, -1, *xs.shape[2:]),
                kernel.reshape(-1, c1 - c0, kh, kw),
                None,
                self.stride,
                self.padding,
                self.dilation,
                groups=batch,
            )
            y = y.reshape(batch, -1, *y.shape[2:])
        else:
            y = F.conv2d(xs, kernel, None, self.stride, self.padding, self.dilation)
        if tile.training:
            rows = F.pad(torch.ones(w.shape[-1], dtype=torch.bool, device=w.device), pad).reshape(
                c1 - c0, kh, kw
            )
            bound = abs(tile.input_range.item())
            y = _RangeTap.apply(
                y,
                tile.input_range,
                xc.detach().clamp(-bound, bound),
                kernel.detach(),
                rows,
                (self.stride, self.padding, self.dilation),
                tile.rpu_config.pre_post.input_range,
            )
        y = _adc(y, tile, (1, -1, 1, 1))
        parts[out_slice.start] = parts[out_slice.start] + y if out_slice.start in parts else y
    out = torch.cat([parts[s] for s in sorted(parts)], 1)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def _linear_forward(self: AnalogLinear, x: torch.Tensor) -> torch.Tensor:
    tiles, bias = layer_tiles(self)
    parts: dict[int, torch.Tensor] = {}
    for in_slice, out_slice, tile in tiles:
        xs = _dac(x[..., in_slice], tile)
        w = _weights(tile, x.shape[0])
        if w.dim() == 3:  # one weight draw per sample
            y = torch.einsum("b...k,bok->b...o", xs, w)
        else:
            y = F.linear(xs, w)
        y = _adc(y, tile, (-1,))
        parts[out_slice.start] = parts[out_slice.start] + y if out_slice.start in parts else y
    out = torch.cat([parts[s] for s in sorted(parts)], -1)
    return out if bias is None else out + bias


def use_fast_hwa(model: nn.Module) -> nn.Module:
    """Route every AnalogConv2d/AnalogLinear of an aihwkit model through the fast forward, in place."""
    for module in model.modules():
        if isinstance(module, (AnalogConv2d, AnalogLinear)):
            for _, _, tile in layer_tiles(module)[0]:
                _check(tile, type(module).__name__)
            forward = _conv_forward if isinstance(module, AnalogConv2d) else _linear_forward
            module.forward = types.MethodType(forward, module)
        elif hasattr(module, "analog_module"):
            raise NotImplementedError(f"no fast HWA forward for {type(module).__name__}")
    return model
