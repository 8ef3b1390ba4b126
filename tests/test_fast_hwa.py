"""The fast HWA training forward against aihwkit's own tile: same outputs, same gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from aihwkit.nn.conversion import convert_to_analog
from aihwkit.simulator.parameters.enums import NoiseManagementType
from torch import nn

from engine.analog.device import DeviceSettings, rpu_config
from engine.analog.hwa_forward import use_fast_hwa


def _pair(net: nn.Module, noise: bool):
    cfg = rpu_config(DeviceSettings(), training=True)
    if not noise:
        cfg.modifier.std_dev = 0.0
        cfg.forward.out_noise = 0.0

    def convert(digital: nn.Module) -> nn.Module:
        # Converted separately (not deep-copied) so each keeps aihwkit's weight-gradient hook.
        torch.manual_seed(0)
        model = convert_to_analog(digital, cfg).train()
        for _, tile in model.named_analog_tiles():
            tile.input_range.data.fill_(1.5)
            tile.input_range_update_idx.data.fill_(10_000)
            if tile.out_scaling_alpha is not None:
                tile.out_scaling_alpha.data.uniform_(0.5, 1.5)
        return model

    return convert(copy.deepcopy(net)), use_fast_hwa(convert(copy.deepcopy(net)))


NETS = {
    "single-tile conv": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1)
        ),
        (2, 3, 12, 12),
    ),
    "multi-tile conv": (lambda: nn.Sequential(nn.Conv2d(64, 600, 3, padding=1)), (2, 64, 6, 6)),
    "multi-tile linear": (lambda: nn.Sequential(nn.Linear(600, 520)), (3, 5, 600)),
}


@pytest.mark.parametrize("name", list(NETS))
def test_forward_and_gradients_match_aihwkit(name):
    build, shape = NETS[name]
    torch.manual_seed(1)
    ref, fast = _pair(build(), noise=False)
    x = torch.randn(shape)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fast(xf)
    step = 2 * 10.0 / (2**8 - 2) * 1.5 * 2  # one ADC level in output units (upper bound over scales)
    assert (yr - yf).abs().max() <= step
    assert ((yr - yf).abs() > 1e-4).float().mean() < 0.01  # rounding ties flip only a few outputs
    g = torch.randn_like(yr)
    (yr * g).sum().backward()
    (yf * g).sum().backward()
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-3, atol=1e-3)
    for (n, pr), (_, pf) in zip(ref.named_parameters(), fast.named_parameters(), strict=True):
        if pr.grad is None:  # aihwkit's context and counters carry no gradient
            assert pf.grad is None, n
            continue
        torch.testing.assert_close(
            pf.grad, pr.grad, rtol=2e-3, atol=2e-3 * pr.grad.abs().max().item() + 1e-6, msg=n
        )


def test_noise_is_injected_in_training_only():
    build, shape = NETS["single-tile conv"]
    torch.manual_seed(2)
    ref, fast = _pair(build(), noise=True)
    x = torch.randn(shape)
    with torch.no_grad():
        spread_fast = torch.stack([fast(x) for _ in range(20)]).std(0).mean()
        spread_ref = torch.stack([ref(x) for _ in range(20)]).std(0).mean()
    assert spread_fast > 0
    assert spread_fast == pytest.approx(spread_ref.item(), rel=0.25)


def test_refuses_the_settings_the_inference_path_refuses_but_stochastic_rounding():
    """One check of supported settings for both fast paths; aihwkit's quantiser rounds stochastically here."""
    cfg = rpu_config(DeviceSettings(), training=True)
    cfg.forward.inp_sto_round = True
    model = convert_to_analog(nn.Linear(4, 3), cfg)
    for _, tile in model.named_analog_tiles():
        tile.input_range_update_idx.data.fill_(10_000)
    use_fast_hwa(model)
    cfg.forward.noise_management = NoiseManagementType.ABS_MAX
    with pytest.raises(NotImplementedError, match="noise management"):
        use_fast_hwa(convert_to_analog(nn.Linear(4, 3), cfg))
