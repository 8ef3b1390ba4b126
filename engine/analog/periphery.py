"""The periphery of an analog tile read: what happens to a layer's input and output around the MVM.

Per tile, in aihwkit's order (`TorchInferenceTile.forward` -> `AnalogMVM._compute_analog_mv` ->
`InferenceTileWithPeriphery.post_forward` -> `apply_out_scaling`):

1. clip the input to the tile's learned input range r and divide by r (`pre_forward`);
2. DAC: round to steps of 2 * inp_res * inp_bound, clip to +-inp_bound (`_prepare_input`);
3. the MVM with the tile's programmed, drifted conductances (`tile.weight`), supplied by a subclass
   of `PeripheryLayer` (`engine.analog.fast_layers`);
4. optional per-read PCM noise (see below), then output noise out_noise * N(0, 1) (`_finalize_output`);
5. ADC: round to steps of 2 * out_res * out_bound, clip to +-out_bound;
6. multiply by r, the mapping scales, the drift-compensation factor alpha and the learned output
   scales; sum the tiles that split the input; add the digital bias.

Steps 2 and 5 are computed in units of quantisation levels: the integer DAC levels are multiplied
by weights pre-multiplied by (DAC step / ADC step), so the MVM result is in ADC levels and rounding
it is the ADC. Only the order of float additions differs from aihwkit, so outputs agree to float
rounding, apart from a rare ADC level flipped where a value lies on a rounding boundary.

Variance, as the Monte-Carlo sampler uses it:
- between chips (drawn once by aihwkit's `program_analog_weights` + `drift_analog_weights`, and
  frozen into the weights read here): PCM programming noise, drift coefficients, and the 1/f read
  noise accumulated up to the inference time, with the drift compensation alpha measured on it;
- within a chip (redrawn on every read here): the output noise before the ADC and, if enabled,
  per-read PCM noise y_i += w_noise * sqrt(sum_j |W_ij| x_j^2) * N(0, 1) (aihwkit's compiled-tile
  `WeightNoiseType.PCM_READ`, which its torch tile lacks), computed as one more MVM of x^2 with |W|.

The tile enumeration (`layer_tiles`) and the check of supported forward settings (`check_supported`)
are shared with the training-time forward, `engine.analog.hwa_forward`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from aihwkit.simulator.parameters.enums import AnalogMVType, BoundManagementType, NoiseManagementType
from aihwkit.simulator.parameters.io import IOParameters
from aihwkit.simulator.tiles.array import TileModuleArray
from torch import nn

from engine.analog.device import DeviceSettings

_reads = threading.local()  # the generators `seeded_reads` set for this thread's reads, if any


def _draw_(y: torch.Tensor, std: float, envelope: torch.Tensor | None, generator: Any) -> None:
    """y += std * envelope * N(0, 1) in place, the numbers drawn into a tensor with y's memory layout and
    filled as flat memory: torch's generator is vectorised only on contiguous memory (slower on a
    channels-last view), and adding tensors of the same layout is one pass."""
    noise = torch.empty_like(y)  # dense: empty_like keeps y's strides only where they are dense
    noise.as_strided((noise.numel(),), (1,)).normal_(0.0, std, generator=generator)
    y.add_(noise) if envelope is None else y.addcmul_(noise, envelope)


def add_gaussian_(
    y: torch.Tensor, std: float, envelope: torch.Tensor | None = None, batch_dim: int = 0
) -> torch.Tensor:
    """y += std * envelope * N(0, 1) in place, one number per element, from torch's global generator
    or the ones `seeded_reads` set for this thread.

    With one generator per slice of a batch, y splits along `batch_dim` into that many equal parts
    (the slices, outermost in that dimension) and each part draws from its own slice's generator
    exactly the numbers, in the same order, that it draws when read alone: a slice's noise does not
    depend on the batch it is read in.
    """
    generators: list[torch.Generator] | None = getattr(_reads, "generators", None)
    if generators is None or len(generators) == 1:
        _draw_(y, std, envelope, None if generators is None else generators[0])
        return y
    n = len(generators)
    if y.shape[batch_dim] % n:
        raise ValueError(
            f"{y.shape[batch_dim]} rows along dimension {batch_dim} do not split into {n} slices"
        )
    rows = y.shape[batch_dim] // n
    for i, generator in enumerate(generators):
        env = None if envelope is None else envelope.narrow(batch_dim, i * rows, rows)
        _draw_(y.narrow(batch_dim, i * rows, rows), std, env, generator)
    return y


@contextlib.contextmanager
def seeded_reads(seeds: int | Sequence[int], device: torch.device | str = "cpu") -> Iterator[None]:
    """Within the block, reads of fast chips on this thread draw their noise from generators seeded with
    `seeds` (one per slice of the batch read) instead of torch's global one, so reads on several
    threads at once, and in batches of any size, stay reproducible (on the CPU, the same numbers as
    after `torch.manual_seed(seed)`; a GPU's generator draws other numbers from the same seed).
    """
    previous = getattr(_reads, "generators", None)
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    _reads.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    try:
        yield
    finally:
        _reads.generators = previous


def per_read_pcm_noise(settings: DeviceSettings) -> float:
    """PCM_READ w_noise at these settings, scaled by the noise level like the output noise."""
    return settings.read_noise_per_read * settings.noise_level


def quantisation_step(res: float, bound: float) -> float:
    """aihwkit's `UniformQuantize` step (DAC or ADC); `res` may also be given as a number of states."""
    return (1.0 / res if res > 1.0 else res) * 2.0 * bound


def check_supported(io: IOParameters, name: str, *, stochastic_rounding: bool = False) -> None:
    """Refuse forward settings a fast path does not reproduce, rather than differ silently.

    `stochastic_rounding`: the caller quantises with aihwkit's own `UniformQuantize`, which rounds
    stochastically where asked (the training-time forward), instead of rounding to nearest.
    """
    unsupported = {
        "noise management": io.noise_management != NoiseManagementType.NONE,
        "bound management": io.bound_management != BoundManagementType.NONE,
        "mv_type other than ONE_PASS": io.mv_type != AnalogMVType.ONE_PASS and not io.is_perfect,
        "inp_noise": io.inp_noise > 0.0,
        "in/out asymmetry": io.inp_asymmetry != 0.0 or io.out_asymmetry != 0.0,
        "stochastic rounding": not stochastic_rounding and (io.inp_sto_round or io.out_sto_round),
        "out_noise_std": io.out_noise_std > 0.0,
        "out_scale": io.out_scale != 1.0,
    }
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise NotImplementedError(f"{name}: the fast analog path does not support {', '.join(bad)}")


def layer_tiles(layer: nn.Module) -> tuple[list[tuple[slice, slice, Any]], torch.Tensor | None]:
    """Each physical tile of an aihwkit layer with the input and output slices it holds, and the layer's
    digital bias: a layer larger than a tile is split over a grid of tiles (`TileModuleArray`)."""
    module: Any = layer.analog_module  # an aihwkit tile, or a TileModuleArray of them
    if not isinstance(module, TileModuleArray):
        bias = module.bias if module.digital_bias else None
        return [(slice(0, module.in_size), slice(0, module.out_size), module)], bias
    tiles, i0 = [], 0
    for in_size, row in zip(module.in_sizes, module.array, strict=True):
        o0 = 0
        for out_size, tile in zip(module.out_sizes, row, strict=True):
            tiles.append((slice(i0, i0 + in_size), slice(o0, o0 + out_size), tile))
            o0 += out_size
        i0 += in_size
    return tiles, module.bias


class PeripheryLayer(nn.Module):
    """The periphery of a fast analog layer's tiles: input ranges, DAC, read noise, ADC and scales, all
    tiles at once; a subclass supplies the MVM (`_gather`, `_mvm`, `_layout_outputs`, `_combine`).

    A layer's T tiles run as one batched product (a grouped convolution, a batched matmul) on their
    gathered inputs, each clipped and quantised with its tile's own input range; every tile's outputs
    get their own noise, ADC and scales, as on separate tiles; then the tiles that split the input are
    summed and those that split the output concatenated. One op per step instead of one per tile:
    most layers that need several tiles are small, where per-op overhead is the cost.
    """

    feature_dim = -1  # where the output features lie
    batch_dim = 0  # where a batch's slices lie in the MVM result (outermost along it)
    out_index: torch.Tensor | None  # buffer: the real outputs among the tiles' padded ones, if any are padded

    def __init__(self, layer: Any, read_noise: float) -> None:
        super().__init__()
        if layer.training:
            raise ValueError("fast analog layers reproduce aihwkit's eval forward; call .eval() first")
        tiles, bias = layer_tiles(layer)
        name = type(layer).__name__
        io = tiles[0][2].rpu_config.forward
        check_supported(io, name)
        if any(tile.rpu_config.forward != io for _, _, tile in tiles):
            raise NotImplementedError(f"{name}: tiles of one layer with different forward settings")
        ranges = [tile.input_range.item() if tile.input_range is not None else None for _, _, tile in tiles]
        if None in ranges and any(r is not None for r in ranges):
            raise NotImplementedError(f"{name}: some tiles with a learned input range, some without")
        self.in_slices = [t[0] for t in tiles]  # row-major: input splits, then output splits within each
        self.out_slices = [t[1] for t in tiles]
        self.out_features = layer.out_features
        self.tiles = len(tiles)
        self.in_splits = len({s.start for s in self.in_slices})
        self.out_splits = self.tiles // self.in_splits
        self.out_width = max(s.stop - s.start for s in self.out_slices)  # shorter tiles padded with zeros

        # a perfect read (the exact network of an HWA model) is aihwkit's plain matmul between the
        # input range's clipping and the scales: no DAC, ADC, bounds or noise
        perfect = io.is_perfect
        inp_step = quantisation_step(io.inp_res, io.inp_bound) if io.inp_res > 0 and not perfect else None
        out_step = quantisation_step(io.out_res, io.out_bound) if io.out_res > 0 and not perfect else 1.0
        level_step = inp_step or 1.0
        max_level = round(1.0 / level_step) if ranges[0] is not None else math.inf  # |x / r| <= 1
        # a float32 scalar, so that dividing by it is aihwkit's division without a conversion per call
        self.inp_step = None if inp_step is None else torch.tensor(inp_step, dtype=torch.float32)
        self.level_limit = (
            io.inp_bound / level_step  # inp_bound in DAC levels, where it can clip
            if io.inp_bound > 0 and max_level * level_step > io.inp_bound and not perfect
            else None
        )
        self.out_bound = io.out_bound / out_step if io.out_bound > 0 and not perfect else None  # ADC levels
        self.out_noise = 0.0 if perfect else io.out_noise / out_step  # output noise std in ADC levels
        self.read_noise = 0.0 if perfect else read_noise * level_step / out_step  # PCM w_noise, ADC levels
        self.adc = io.out_res > 0 and not perfect

        # per tile: conductances in aihwkit's (out, in) layout, pre-multiplied so the product is in ADC
        # levels, and the output scale; the subclass lays them out for its batched product
        self.tile_weights = [tile.tile.weight.detach() * (level_step / out_step) for _, _, tile in tiles]
        self.tile_abs_weights: list[Any] = [
            tile.tile.weight.detach().abs() if read_noise > 0 else None for _, _, tile in tiles
        ]
        scales = torch.zeros(self.tiles, self.out_width, dtype=torch.float64)
        for k, ((_, out_slice, tile), r) in enumerate(zip(tiles, ranges, strict=True)):
            scale = torch.full(
                (out_slice.stop - out_slice.start,),
                out_step * (r if r is not None else 1.0),
                dtype=torch.float64,
            )
            if tile.mapping_scales is not None:
                scale = scale * tile.get_mapping_scales().double()
            if getattr(tile.rpu_config, "drift_compensation", None) is not None:
                scale = scale * tile.alpha.detach().double()
            if tile.out_scaling_alpha is not None:
                scale = scale * tile.out_scaling_alpha.detach().double()
            scales[k, : len(scale)] = scale
        self.tile_ranges = None if ranges[0] is None else torch.tensor(ranges, dtype=torch.float32)  # signed
        self.register_buffer("scale", self._layout_outputs(scales.float()))
        self.register_buffer("bias", None if bias is None else self._broadcast(bias.detach().clone()))
        real = [
            k * self.out_width + i
            for k, s in enumerate(self.out_slices[: self.out_splits])
            for i in range(s.stop - s.start)
        ]
        padded = len(real) < self.out_splits * self.out_width
        self.register_buffer("out_index", torch.tensor(real) if padded else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        buffers: dict[str, Any] = self._buffers  # direct lookups: this runs for every layer of every read
        levels = self._levels(x, buffers["input_range"])
        y, pcm_variance = self._mvm(levels, x)
        y = self._read(y, pcm_variance)
        bias = buffers["bias"]
        if self.tiles == 1:
            return y.mul_(buffers["scale"]) if bias is None else torch.addcmul(bias, y, buffers["scale"])
        y = self._combine(y.mul_(buffers["scale"]), x)
        return y if bias is None else y.add_(bias)

    def _levels(self, x: torch.Tensor, input_range: torch.Tensor | None) -> torch.Tensor:
        """Steps 1-2 for every tile: its part of the input clipped to its range, normalised, in DAC levels.

        Bit for bit aihwkit's clamp(x, -|r|, |r|) / r / step: division is monotonic, so clipping
        after dividing by r gives the same floats.
        """
        gathered = self._gather(x)
        if input_range is not None:
            levels = gathered.div_(input_range) if gathered is not x else x.div(input_range)
            levels.clamp_(-1.0, 1.0)
        else:
            levels = gathered.clone() if gathered is x else gathered
        if self.inp_step is not None:
            levels.div_(self.inp_step).round_()
        if self.level_limit is not None:
            levels.clamp_(-self.level_limit, self.level_limit)
        return levels

    def _read(self, y: torch.Tensor, pcm_variance: torch.Tensor | None) -> torch.Tensor:
        """Steps 4-5 on the MVM results y of all tiles, in ADC levels, in place."""
        if pcm_variance is not None:
            add_gaussian_(y, self.read_noise, pcm_variance.sqrt_(), self.batch_dim)
        if self.out_noise > 0:
            add_gaussian_(y, self.out_noise, None, self.batch_dim)
        if self.adc:
            y.round_()
        if self.out_bound is not None:
            y.clamp_(-self.out_bound, self.out_bound)
        return y

    def draws_per_position(self) -> int:
        """Gaussian numbers a read draws per output position (pixel or token): one per tile output
        for the output noise and one more with per-read PCM noise; aihwkit's tile draws as many
        (padding a shorter output split adds a few here)."""
        return sum(s.stop - s.start for s in self.out_slices) * ((self.out_noise > 0) + (self.read_noise > 0))

    def _broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """A per-feature vector shaped to broadcast against the output."""
        return t.view(1, -1, 1, 1) if self.feature_dim == 1 else t

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """Each tile's part of the input, side by side in the layout of `_mvm` (x itself for one tile)."""
        raise NotImplementedError

    def _mvm(self, levels: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Step 3 for all tiles on the levels of input x, and the PCM variance sum_j |W_ij| levels_j^2
        where per-read PCM noise is on."""
        raise NotImplementedError

    def _layout_outputs(self, per_tile: torch.Tensor) -> torch.Tensor:
        """(tiles, out_width) per-output values shaped to broadcast against the MVM result."""
        raise NotImplementedError

    def _combine(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Scaled tile outputs (of input x) to the layer's output: input splits summed, output splits
        concatenated."""
        raise NotImplementedError


def noise_draws_per_read(chip: nn.Module, x: torch.Tensor) -> int:
    """Gaussian numbers one read of a fast chip on `x` draws: each tile's outputs once for the output
    noise and once more where per-read PCM noise is on. Any exact simulation of the same reads (aihwkit's
    tile included) draws as many, so their generation time is a floor under every simulator's read."""
    counts: list[int] = []

    def count(layer: Any, _: Any, out: torch.Tensor) -> None:
        counts.append(out.numel() // layer.out_features * layer.draws_per_position())

    handles = [m.register_forward_hook(count) for m in chip.modules() if isinstance(m, PeripheryLayer)]
    try:
        with torch.no_grad():
            chip(x)
    finally:
        for h in handles:
            h.remove()
    return sum(counts)
