"""Monte-Carlo statistics and what device noise does to them on real LGG slices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.inference import Segmenter
from engine.preprocessing import input_slices, normalise_volume, to_model_input
from engine.run_settings import RunSettings
from engine.uncertainty import mc_statistics
from engine.volume import load_scan


def test_agreeing_samples_carry_no_device_uncertainty():
    p = torch.softmax(torch.randn(1, 3, 8, 8), 1).repeat(5, 1, 1, 1)
    st = mc_statistics(p)
    assert np.abs(st.mutual_information).max() < 1e-6
    assert np.abs(st.std).max() < 1e-6
    expected = -(p[0] * p[0].log()).sum(0).numpy()
    np.testing.assert_allclose(st.entropy, expected, rtol=1e-5)
    np.testing.assert_array_equal(st.segmentation, p[0].argmax(0).numpy())


def test_disagreeing_samples_have_mutual_information():
    a = torch.tensor([[0.9, 0.1], [0.1, 0.9]]).reshape(2, 2, 1, 1)
    st = mc_statistics(a)
    assert st.mutual_information[0, 0] > 0.3
    assert st.std[0, 0] == pytest.approx(0.4, abs=1e-6)
    assert st.probabilities[:, 0, 0] == pytest.approx([0.5, 0.5])


def _tumour_slices(lgg_case, spec, n=3):
    image, label = lgg_case
    vol, lab = load_scan(image), load_scan(label)
    data = normalise_volume(vol.data, spec.preprocessing)
    area = lab.data.sum(axis=(0, 1))
    idx = [int(k) for k in np.argsort(-area)[:n]]
    prep = spec.preprocessing
    return [(k, to_model_input(input_slices(data, "axial", k, prep)[None], prep)) for k in idx]


def _mean_mi(spec, slices, noise, mc=6):
    seg = Segmenter(
        spec,
        RunSettings(model=spec.name, mode="analog", mc_samples=mc, noise_level=noise, drift_s=3600.0, seed=0),
    )
    return float(np.mean([mc_statistics(seg.predict(x, k)).mutual_information.mean() for k, x in slices]))


def test_uncertainty_grows_with_noise_on_real_slices(shipped_model, lgg_case):
    """Up to nominal noise. Far above it (3x) the round-2 U-Net's chips collapse to a confident
    background on these slices and the mutual information falls again (0.0053 at 1x, 0.0006 at 3x)."""
    slices = _tumour_slices(lgg_case, shipped_model)
    low, mid, high = (_mean_mi(shipped_model, slices, s) for s in (0.25, 0.5, 1.0))
    assert low < mid < high, (low, mid, high)


def _digital_and_ideal_chips(spec, lgg_case):
    """Digital-mode and noise-0 analog predictions of the same real tumour slices."""
    digital = Segmenter(spec, RunSettings(model=spec.name, mode="digital", mc_samples=1))
    ideal = Segmenter(spec, RunSettings(model=spec.name, mode="analog", mc_samples=2, noise_level=0.0))
    return [(digital.predict(x, k), ideal.predict(x, k)) for k, x in _tumour_slices(lgg_case, spec)]


def test_analog_at_noise_zero_matches_digital(shipped_model, lgg_case):
    for d, a in _digital_and_ideal_chips(shipped_model, lgg_case):
        assert (d.argmax(1) == a.argmax(1)).float().mean() > 0.99
        assert (d[0] - a.mean(0)).abs().mean() < 0.02


def test_results_are_reproducible_with_a_seed(small_model):
    x = torch.rand(1, 1, 64, 64)
    run = RunSettings(
        model=small_model.name, mode="analog", mc_samples=3, noise_level=1.0, drift_s=3600.0, seed=7
    )
    a = Segmenter(small_model, run).predict(x, 4)
    b = Segmenter(small_model, run).predict(x, 4)
    c = Segmenter(
        small_model,
        RunSettings(
            model=small_model.name, mode="analog", mc_samples=3, noise_level=1.0, drift_s=3600.0, seed=8
        ),
    ).predict(x, 4)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_hwa_model_digital_mode_keeps_its_learned_clipping(lgg_case):
    from engine.model_store import MODELS_DIR, find_model

    if not (MODELS_DIR / "lgg_unet_hwa" / "model.json").exists():
        pytest.skip("the shipped HWA U-Net is not installed")
    for d, a in _digital_and_ideal_chips(find_model("lgg_unet_hwa"), lgg_case):
        assert (d.argmax(1) == a.argmax(1)).float().mean() > 0.99
