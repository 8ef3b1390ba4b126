"""Networks on simulated AIMC tiles (aihwkit): conversion, input-range calibration, stored tiles, a report.

The analog model made here is a template: `engine.analog.chips` programs chips from it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from aihwkit.inference.calibration import InputRangeCalibrationType, calibrate_input_ranges
from aihwkit.nn.conversion import convert_to_analog
from torch import nn

from engine.analog.device import DeviceSettings, rpu_config
from engine.model_store import ModelError


def to_analog(digital: nn.Module, settings: DeviceSettings, exact: bool = False) -> nn.Module:
    """An analog copy of `digital` on inference tiles configured by `settings`.

    `exact` reads the tiles perfectly (no DAC, ADC or output noise) while keeping the learned
    input clipping and output scales: the trained network itself, computed in floating point.
    """
    cfg = rpu_config(settings)
    cfg.forward.is_perfect = exact
    return convert_to_analog(copy.deepcopy(digital).eval(), cfg).eval()


def calibrated_analog(
    digital: nn.Module, settings: DeviceSettings, images: torch.Tensor, batch_size: int = 16
) -> nn.Module:
    """Convert a digitally trained network and set each tile's input range from real inputs.

    Input ranges are learned during HWA training; a digitally trained network needs them set
    from data before it can run on tiles (aihwkit's `calibrate_input_ranges`).
    """
    model = to_analog(digital, settings)
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    calibrate_input_ranges(
        model,
        InputRangeCalibrationType.CACHE_QUANTILE,
        iter([((b,), {}) for b in batches]),
        quantile=0.9995,
        max_samples=4000,
    )
    return model.eval()


def load_analog(
    digital_template: nn.Module,
    state: dict[str, torch.Tensor],
    settings: DeviceSettings,
    exact: bool = False,
    source: str | Path = "analog weights",
) -> nn.Module:
    """Rebuild tiles from `settings` and load stored tensors (weights, input ranges, output scales).

    Tensors that do not fit the network described in model.json (missing, unexpected, or of another
    shape) are a `ModelError` naming `source`, in one line, not torch's multi-line report."""
    model = to_analog(digital_template, settings, exact)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError, KeyError, IndexError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = (lines[1] if len(lines) > 1 else lines[0]) if lines else type(exc).__name__
        raise ModelError(
            f"{source}: the analog weights do not fit the network described in model.json ({detail[:200]})"
        ) from None
    real_missing = [k for k in missing if not k.endswith(("analog_ctx", "analog_tile_state"))]
    if real_missing or unexpected:
        raise ModelError(
            f"{source}: the analog weights do not fit the network described in model.json: "
            f"missing {real_missing[:3]}, unexpected {unexpected[:3]}"
        )
    return model.eval()


@dataclass
class LayerInfo:
    name: str
    kind: str
    parameters: int
    on_tiles: bool


def layer_report(analog_model: nn.Module) -> list[LayerInfo]:
    """Every layer with weights, and whether it runs on analog tiles or stays digital."""
    rows: list[LayerInfo] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            full = f"{prefix}{name}"
            if hasattr(child, "analog_module"):  # AnalogConv*/AnalogLinear: matrix-vector products on tiles
                analog: Any = child
                n = sum(t.tile.weight.numel() for t in analog.analog_tiles())
                rows.append(LayerInfo(full, type(child).__name__, n, True))
                continue
            own = sum(p.numel() for p in child.parameters(recurse=False))
            if own:
                rows.append(LayerInfo(full, type(child).__name__, own, False))
            visit(child, full + ".")

    visit(analog_model, "")
    return rows
