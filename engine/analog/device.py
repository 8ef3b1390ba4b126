"""The simulated analog chip: one dataclass of device settings, turned into an aihwkit RPU config.

We use aihwkit's pure-PyTorch inference tile (`TorchInferenceRPUConfig`): it works with every torch
release aihwkit 1.1.0 supports and has autograd for hardware-aware training.

The noise model is aihwkit's `PCMLikeNoiseModel` (Nandakumar et al. 2019 / Le Gallo et al. 2023 PCM
statistics): programming noise, conductance drift and accumulated 1/f read noise, with global drift
compensation. A single `noise_level` scales all three and the per-read output noise together:
0 is an ideal device (only DAC/ADC quantisation remains), 1 is nominal PCM, 3 is three times worse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from engine.run_settings import MAX_DRIFT_S, MAX_NOISE_LEVEL, MIN_DRIFT_S

if TYPE_CHECKING:  # aihwkit is imported where a tile is configured, so that reading settings stays light
    from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
    from aihwkit.simulator.configs import TorchInferenceRPUConfig

TILE_SIZE = 512


@dataclass(frozen=True)
class DeviceSettings:
    """Analog device settings; stored in each model.json and used unchanged at inference."""

    noise_level: float = 1.0
    drift_s: float = 3600.0  # time between programming and inference
    dac_bits: int = 8  # input (DAC) resolution
    adc_bits: int = 8  # output (ADC) resolution
    out_noise: float = 0.04  # per-read additive output noise at noise level 1, relative to the output bound
    g_max: float = 25.0  # µS, PCM maximal conductance
    tile_size: int = TILE_SIZE
    # Hardware-aware training only (Rasch et al. 2023): weight noise injected in the forward pass.
    train_weight_noise: float = 0.08
    train_clip_sigma: float = 2.5
    # per-read PCM noise (aihwkit's compiled-tile PCM_READ w_noise) at noise level 1; 0 = off.
    # Only the fast simulator (engine.analog.fast_layers) draws it; aihwkit's torch tile has no such noise.
    read_noise_per_read: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise_level <= MAX_NOISE_LEVEL:
            raise ValueError(f"noise level must be within 0..{MAX_NOISE_LEVEL}, got {self.noise_level}")
        if not MIN_DRIFT_S <= self.drift_s <= MAX_DRIFT_S:
            raise ValueError(f"drift time must be within 1 s..1 year, got {self.drift_s} s")
        if not (1 <= self.dac_bits <= 16 and 1 <= self.adc_bits <= 16):
            raise ValueError("DAC/ADC resolution must be 1..16 bits")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DeviceSettings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def with_(self, **changes) -> DeviceSettings:
        return DeviceSettings.from_dict({**self.to_dict(), **changes})


def noise_model(settings: DeviceSettings) -> PCMLikeNoiseModel:
    """PCM statistics scaled by the noise level (0 = ideal)."""
    from aihwkit.inference.noise.pcm import PCMLikeNoiseModel

    s = settings.noise_level
    return PCMLikeNoiseModel(g_max=settings.g_max, prog_noise_scale=s, read_noise_scale=s, drift_scale=s)


def rpu_config(settings: DeviceSettings, training: bool = False) -> TorchInferenceRPUConfig:
    """The aihwkit tile configuration for inference, or for hardware-aware training.

    Both share the forward path (DAC/ADC, output noise, noise and bound management, learned input
    ranges, output scales, 512x512 tiles); training adds weight-noise injection and clipping.
    """
    from aihwkit.inference.compensation.drift import GlobalDriftCompensation
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import (
        BoundManagementType,
        NoiseManagementType,
        WeightClipType,
        WeightModifierType,
        WeightNoiseType,
        WeightRemapType,
    )

    cfg = TorchInferenceRPUConfig()
    cfg.mapping.max_input_size = settings.tile_size
    cfg.mapping.max_output_size = settings.tile_size
    cfg.mapping.digital_bias = True
    cfg.mapping.weight_scaling_omega = 1.0
    cfg.mapping.weight_scaling_columnwise = True
    cfg.mapping.learn_out_scaling = True
    cfg.mapping.out_scaling_columnwise = True

    cfg.forward.inp_res = 1.0 / (2**settings.dac_bits - 2)
    cfg.forward.out_res = 1.0 / (2**settings.adc_bits - 2)
    cfg.forward.out_noise = settings.out_noise * (settings.noise_level if not training else 1.0)
    cfg.forward.out_bound = 10.0
    cfg.forward.noise_management = NoiseManagementType.NONE  # input ranges are learned instead
    cfg.forward.bound_management = BoundManagementType.NONE
    cfg.forward.w_noise_type = WeightNoiseType.NONE

    cfg.pre_post.input_range.enable = True
    cfg.pre_post.input_range.learn_input_range = True
    cfg.pre_post.input_range.init_from_data = 50
    cfg.pre_post.input_range.init_std_alpha = 3.0
    cfg.pre_post.input_range.decay = 0.01

    cfg.noise_model = noise_model(settings)
    cfg.drift_compensation = GlobalDriftCompensation()

    if training:
        cfg.modifier.type = WeightModifierType.ADD_NORMAL
        cfg.modifier.std_dev = settings.train_weight_noise
        cfg.modifier.per_batch_sample = True
        cfg.clip.type = WeightClipType.LAYER_GAUSSIAN
        cfg.clip.sigma = settings.train_clip_sigma
        cfg.remap.type = WeightRemapType.CHANNELWISE_SYMMETRIC
    return cfg
