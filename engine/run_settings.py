"""What determines a result: the model and how it is run (mode, MC samples, device noise, drift, seed).

Kept free of torch so that the command line and the viewer can check settings before loading a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_MC = 64
MAX_NOISE_LEVEL = 3.0  # 0 = ideal device, 1 = nominal PCM, 3 = three times worse
MIN_DRIFT_S = 1.0
MAX_DRIFT_S = 365.0 * 24 * 3600
MAX_SEED = 2**32 - 1  # chip seeds (seed x 100 003 + chip) must stay within torch's 64-bit seeds


class Mode(StrEnum):
    """Digital runs the exact floating-point network once; analog reads simulated chips."""

    DIGITAL = "digital"
    ANALOG = "analog"


class Simulator(StrEnum):
    """How an analog chip is read: our fast path, or aihwkit's own tile (the reference)."""

    FAST = "fast"
    AIHWKIT = "aihwkit"


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Everything that determines a result; results and chips are cached under it."""

    model: str
    mode: Mode = Mode.ANALOG
    mc_samples: int = 8
    noise_level: float = 1.0
    drift_s: float = 3600.0
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise ValueError(f"mode must be digital or analog, not {self.mode!r}") from None
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be within 0..{MAX_SEED}, got {self.seed}")
        if not 1 <= self.mc_samples <= MAX_MC:
            raise ValueError(f"Monte-Carlo samples must be 1..{MAX_MC}, got {self.mc_samples}")
        if not 0.0 <= self.noise_level <= MAX_NOISE_LEVEL:
            raise ValueError(f"noise level must be within 0..{MAX_NOISE_LEVEL:g}, got {self.noise_level}")
        if self.mode is Mode.ANALOG and not MIN_DRIFT_S <= self.drift_s <= MAX_DRIFT_S:
            raise ValueError(f"drift must be within {MIN_DRIFT_S:g}..{MAX_DRIFT_S:g} s, got {self.drift_s}")
