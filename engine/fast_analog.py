"""Fast inference through programmed aihwkit chips: aihwkit's `TorchInferenceTile` forward, reordered.

aihwkit's torch tile runs a convolution on CPU by unfolding it (im2col, about nine times the
activation) and then clipping, quantising and noising that unfolded tensor element-wise. Input
clipping and DAC quantisation act element-wise on the input, so they commute with im2col and zero
padding: we apply them to the activation and run a native `F.conv2d`, one per physical tile
(where a tile holds only part of a channel's kernel, the rest of that slice is zero). Per tile,
in aihwkit's order (`TorchInferenceTile.forward` -> `AnalogMVM._compute_analog_mv` ->
`InferenceTileWithPeriphery.post_forward` -> `apply_out_scaling`):

1. clip the input to the tile's learned input range r and divide by r (`pre_forward`);
2. DAC: round to steps of 2 * inp_res * inp_bound, clip to +-inp_bound (`_prepare_input`);
3. the MVM with the tile's programmed, drifted conductances (`tile.weight`);
4. optional per-read PCM noise (see below), then output noise out_noise * N(0, 1) (`_finalize_output`);
5. ADC: round to steps of 2 * out_res * out_bound, clip to +-out_bound;
6. multiply by r, the mapping scales, the drift-compensation factor alpha and the learned output
   scales; sum the tiles that split the input; add the digital bias.

For speed, steps 2 and 5 are computed in units of quantisation levels: the integer DAC levels are
convolved with weights pre-multiplied by (DAC step / ADC step), so the result is in ADC levels and
rounding it is the ADC. Only the order of float additions differs from aihwkit, so outputs agree to
float rounding, apart from a rare ADC level flipped where a value lies on a rounding boundary.

Variance, as the Monte-Carlo sampler uses it:
- between chips (drawn once by aihwkit's `program_analog_weights` + `drift_analog_weights`, and
  frozen into the weights read here): PCM programming noise, drift coefficients, and the 1/f read
  noise accumulated up to the inference time, with the drift compensation alpha measured on it;
- within a chip (redrawn on every forward here): the output noise before the ADC and, if enabled,
  per-read PCM noise y_i += w_noise * sqrt(sum_j |W_ij| x_j^2) * N(0, 1) (aihwkit's compiled-tile
  `WeightNoiseType.PCM_READ`, which its torch tile lacks), computed as one more convolution of
  x^2 with |W|.
"""

from __future__ import annotations

import copy
import math
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from aihwkit.nn import AnalogConv2d, AnalogLinear
from aihwkit.simulator.parameters.enums import AnalogMVType, BoundManagementType, NoiseManagementType
from aihwkit.simulator.tiles.array import TileModuleArray
from torch import nn

from engine.device import DeviceSettings


NOISE_CHUNKS = 2  # fixed, so a seeded read gives the same noise whatever the thread count
PARALLEL_NOISE_MIN = 1 << 16  # elements; below this a thread hand-off costs more than it saves
_noise_pool = ThreadPoolExecutor(max_workers=NOISE_CHUNKS, thread_name_prefix="analog-noise")


def gaussian_like(y: torch.Tensor) -> torch.Tensor:
    """N(0, 1) noise shaped like y, drawn in chunks on two threads when torch may use two.

    Gaussian draws are most of the remaining cost of a read, and torch draws them on one core:
    CPU generators are sequential. Each chunk gets its own generator seeded from the global one,
    so `torch.manual_seed` still fixes every read.
    """
    if y.numel() < PARALLEL_NOISE_MIN:
        return torch.randn_like(y)
    out = torch.empty_like(y, memory_format=torch.contiguous_format)
    seed = int(torch.randint(0, 2**62, ()))
    chunks = out.view(-1).chunk(NOISE_CHUNKS)

    def fill(i: int) -> torch.Tensor:
        return torch.randn(chunks[i].shape, generator=torch.Generator().manual_seed(seed + i), out=chunks[i])

    if torch.get_num_threads() > 1:
        list(_noise_pool.map(fill, range(len(chunks))))
    else:
        for i in range(len(chunks)):
            fill(i)
    return out


def per_read_pcm_noise(settings: DeviceSettings) -> float:
    """PCM_READ w_noise at these settings, scaled by the noise level like the output noise."""
    return settings.read_noise_per_read * settings.noise_level


def _step(res: float, bound: float) -> float:
    """aihwkit's `UniformQuantize` step; `res` may also be given as a number of states."""
    return (1.0 / res if res > 1.0 else res) * 2.0 * bound


def _check_supported(io, name: str) -> None:
    """Refuse forward settings this path does not reproduce, rather than differ silently."""
    unsupported = {
        "noise management": io.noise_management != NoiseManagementType.NONE,
        "bound management": io.bound_management != BoundManagementType.NONE,
        "mv_type other than ONE_PASS": io.mv_type != AnalogMVType.ONE_PASS,
        "is_perfect": io.is_perfect,
        "inp_noise": io.inp_noise > 0.0,
        "in/out asymmetry": io.inp_asymmetry != 0.0 or io.out_asymmetry != 0.0,
        "stochastic rounding": io.inp_sto_round or io.out_sto_round,
        "out_noise_std": io.out_noise_std > 0.0,
        "out_scale": io.out_scale != 1.0,
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise NotImplementedError(f"{name}: the fast analog path does not support {', '.join(bad)}")


def _tiles(layer: nn.Module) -> tuple[list[tuple[slice, slice, nn.Module]], torch.Tensor | None]:
    """Each physical tile with the input and output slices it holds, and the layer's digital bias."""
    module = layer.analog_module
    if not isinstance(module, TileModuleArray):
        bias = module.bias if module.digital_bias else None
        return [(slice(0, module.in_size), slice(0, module.out_size), module)], bias
    tiles, i0 = [], 0
    for in_size, row in zip(module.in_sizes, module.array):
        o0 = 0
        for out_size, tile in zip(module.out_sizes, row):
            tiles.append((slice(i0, i0 + in_size), slice(o0, o0 + out_size), tile))
            o0 += out_size
        i0 += in_size
    return tiles, module.bias


class _FastAnalogLayer(nn.Module):
    """The periphery shared by conv and linear layers: per-tile DAC, read noise, ADC, scales."""

    feature_dim = -1  # where the output features lie

    def __init__(self, layer: nn.Module, read_noise: float) -> None:
        super().__init__()
        if layer.training:
            raise ValueError("fast analog layers reproduce aihwkit's eval forward; call .eval() first")
        tiles, bias = _tiles(layer)
        self.in_slices = [t[0] for t in tiles]
        self.out_slices = [t[1] for t in tiles]
        self.out_features = layer.out_features
        # float32 scalars, so that dividing by them is aihwkit's division without a conversion per call
        self.input_ranges: list[torch.Tensor | None] = []  # signed, as aihwkit divides and scales by it
        self.inp_steps: list[torch.Tensor | None] = []  # DAC step, None without DAC
        self.level_limits: list[float | None] = []  # inp_bound in DAC levels, where it can clip
        self.out_bounds: list[float | None] = []  # out_bound in ADC levels
        self.out_noise: list[float] = []  # output noise std in ADC levels
        self.read_noise: list[float] = []  # PCM_READ w_noise * DAC step in ADC levels
        self.adc: list[bool] = []
        self.raw_kernels: list[torch.Tensor] = []  # conductances in aihwkit's (out, in) layout
        for k, (_, out_slice, tile) in enumerate(tiles):
            io = tile.rpu_config.forward
            _check_supported(io, type(layer).__name__)
            r = tile.input_range.item() if tile.input_range is not None else None
            inp_step = _step(io.inp_res, io.inp_bound) if io.inp_res > 0 else None
            out_step = _step(io.out_res, io.out_bound) if io.out_res > 0 else 1.0
            level_step = inp_step or 1.0
            max_level = round(1.0 / level_step) if r is not None else math.inf  # |x / r| <= 1
            self.input_ranges.append(None if r is None else torch.tensor(r, dtype=torch.float32))
            self.inp_steps.append(None if inp_step is None else torch.tensor(inp_step, dtype=torch.float32))
            self.level_limits.append(io.inp_bound / level_step
                                     if io.inp_bound > 0 and max_level * level_step > io.inp_bound else None)
            self.out_bounds.append(io.out_bound / out_step if io.out_bound > 0 else None)
            self.out_noise.append(io.out_noise / out_step)
            self.read_noise.append(read_noise * level_step / out_step)
            self.adc.append(io.out_res > 0)
            weight = tile.tile.weight.detach()
            self.raw_kernels.append(weight)
            self.register_buffer(f"weight{k}", weight * (level_step / out_step))
            scale = torch.full((out_slice.stop - out_slice.start,), out_step * (r if r is not None else 1.0),
                               dtype=torch.float64)
            if tile.mapping_scales is not None:
                scale = scale * tile.get_mapping_scales().double()
            if getattr(tile.rpu_config, "drift_compensation", None) is not None:
                scale = scale * tile.alpha.detach().double()
            if tile.out_scaling_alpha is not None:
                scale = scale * tile.out_scaling_alpha.detach().double()
            self.register_buffer(f"scale{k}", self._broadcast(scale.float()))
        self.register_buffer("bias", None if bias is None else self._broadcast(bias.detach().clone()))
        self.out_starts = sorted({s.start for s in self.out_slices})
        self._names = [(f"weight{k}", f"abs_weight{k}", f"scale{k}") for k in range(len(tiles))]

    def _levels(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Steps 1-2: clip to the input range, normalise, and return DAC levels.

        Bit for bit aihwkit's clamp(x, -|r|, |r|) / r / step: division is monotonic, so clipping
        after dividing by r gives the same floats.
        """
        r = self.input_ranges[k]
        x = x.div(r).clamp_(-1.0, 1.0) if r is not None else x.clone()
        if self.inp_steps[k] is not None:
            x.div_(self.inp_steps[k]).round_()
        if self.level_limits[k] is not None:
            x.clamp_(-self.level_limits[k], self.level_limits[k])
        return x

    def _read(self, y: torch.Tensor, k: int, pcm_variance: torch.Tensor | None) -> torch.Tensor:
        """Steps 4-5 on the MVM result y in ADC levels, in place."""
        if pcm_variance is not None:
            y.addcmul_(pcm_variance.sqrt_(), gaussian_like(y), value=self.read_noise[k])
        if self.out_noise[k] > 0:
            y.add_(gaussian_like(y), alpha=self.out_noise[k])
        if self.adc[k]:
            y.round_()
        if self.out_bounds[k] is not None:
            y.clamp_(-self.out_bounds[k], self.out_bounds[k])
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        buffers = self._buffers  # direct lookups: this loop runs for every tile of every read
        bias = buffers["bias"]
        parts: dict[int, torch.Tensor] = {}
        for k, (weight, abs_weight, scale) in enumerate(self._names):
            levels = self._levels(self._select(x, k), k)
            y, pcm_variance = self._mvm(levels, buffers[weight], buffers[abs_weight])
            y = self._read(y, k, pcm_variance)
            start = self.out_slices[k].start
            if start in parts:
                parts[start].addcmul_(y, buffers[scale])
            elif len(self._names) == 1 and bias is not None:
                return torch.addcmul(bias, y, buffers[scale])
            else:
                parts[start] = y.mul_(buffers[scale])
        out = parts[0] if len(parts) == 1 else torch.cat([parts[s] for s in self.out_starts], self.feature_dim)
        return out if bias is None else out.add_(bias)

    def _broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """A per-feature vector shaped to broadcast against the output."""
        return t.view(1, -1, 1, 1) if self.feature_dim == 1 else t

    def _select(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The part of the input that tile k reads."""
        raise NotImplementedError

    def _mvm(self, levels: torch.Tensor, weight: torch.Tensor,
             abs_weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Step 3 (and the PCM variance sum_j |W_ij| levels_j^2 where enabled)."""
        raise NotImplementedError


class FastAnalogLinear(_FastAnalogLayer):
    """A programmed `AnalogLinear`: one `F.linear` per tile."""

    def __init__(self, layer: AnalogLinear, read_noise: float = 0.0) -> None:
        super().__init__(layer, read_noise)
        for k, w in enumerate(self.raw_kernels):
            self.register_buffer(f"abs_weight{k}", w.abs() if read_noise > 0 else None)
        del self.raw_kernels

    def _select(self, x: torch.Tensor, k: int) -> torch.Tensor:
        s = self.in_slices[k]
        return x if s.start == 0 and s.stop == x.shape[-1] else x[..., s]

    def _mvm(self, levels: torch.Tensor, weight: torch.Tensor,
             abs_weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return F.linear(levels, weight), (None if abs_weight is None else F.linear(levels.square(), abs_weight))


class FastAnalogConv2d(_FastAnalogLayer):
    """A programmed `AnalogConv2d`: one native `F.conv2d` per tile instead of im2col.

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
        self.channel_slices: list[slice] = []
        for k, (in_slice, raw) in enumerate(zip(self.in_slices, self.raw_kernels)):
            c0, c1 = in_slice.start // per_channel, -(-in_slice.stop // per_channel)
            offset = in_slice.start - c0 * per_channel

            def as_kernel(w: torch.Tensor) -> torch.Tensor:
                full = w.new_zeros(w.shape[0], (c1 - c0) * per_channel)
                full[:, offset:offset + w.shape[1]] = w
                return full.view(w.shape[0], c1 - c0, kh, kw)

            self.channel_slices.append(slice(c0, c1))
            setattr(self, f"weight{k}", as_kernel(getattr(self, f"weight{k}")))
            self.register_buffer(f"abs_weight{k}", as_kernel(raw.abs()) if read_noise > 0 else None)
        del self.raw_kernels

    def _select(self, x: torch.Tensor, k: int) -> torch.Tensor:
        c = self.channel_slices[k]
        return x if c.start == 0 and c.stop == x.shape[1] else x[:, c]

    def _mvm(self, levels: torch.Tensor, weight: torch.Tensor,
             abs_weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        y = F.conv2d(levels, weight, None, self.stride, self.padding, self.dilation)
        if abs_weight is None:
            return y, None
        return y, F.conv2d(levels.square(), abs_weight, None, self.stride, self.padding, self.dilation)


def noise_draws_per_read(chip: nn.Module, x: torch.Tensor) -> int:
    """Gaussian numbers one read of a fast chip on `x` draws: each tile's outputs once for the output
    noise and once more where per-read PCM noise is on. Any exact simulation of the same reads (aihwkit's
    tile included) draws as many, so their generation time is a floor under every simulator's read."""
    counts: list[int] = []

    def count(layer: _FastAnalogLayer, _, out: torch.Tensor) -> None:
        per_feature = out.numel() // layer.out_features
        counts.append(sum(per_feature * (s.stop - s.start) * ((layer.out_noise[k] > 0) + (layer.read_noise[k] > 0))
                          for k, s in enumerate(layer.out_slices)))

    handles = [m.register_forward_hook(count) for m in chip.modules() if isinstance(m, _FastAnalogLayer)]
    try:
        with torch.no_grad():
            chip(x)
    finally:
        for h in handles:
            h.remove()
    return sum(counts)


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
