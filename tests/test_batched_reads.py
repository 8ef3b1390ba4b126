"""Batched reads: several slices per chip read, each slice seeing the noise it sees read alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.analog.periphery import add_gaussian_, seeded_reads
from engine.compute_device import available_devices
from engine.inference import Segmenter
from engine.pipeline import VolumeResult, run_slices, segment_slice, segment_slices
from engine.run_settings import RunSettings
from engine.volume import load_scan

SEEDS = [11, 12, 13, 14]


def _alone_and_batched(y: torch.Tensor, batch_dim: int, envelope: torch.Tensor | None):
    """y's slices noised one at a time, each with its seed, and all at once with one seed per slice."""
    alone = []
    for seed, part, env in zip(
        SEEDS,
        y.chunk(4, batch_dim),
        envelope.chunk(4, batch_dim) if envelope is not None else [None] * 4,
        strict=True,
    ):
        part = part.clone(memory_format=torch.preserve_format)
        with seeded_reads(seed):
            alone.append(add_gaussian_(part, 0.3, env, batch_dim))
    batched = y.clone(memory_format=torch.preserve_format)
    with seeded_reads(SEEDS):
        add_gaussian_(batched, 0.3, envelope, batch_dim)
    return torch.cat(alone, batch_dim), batched


@pytest.mark.parametrize(
    "layout",
    ["conv, contiguous", "conv, channels last", "linear, one tile", "linear, tiles split the rows"],
)
@pytest.mark.parametrize("envelope", [False, True])
def test_each_slice_of_a_batch_draws_the_noise_it_draws_alone(layout: str, envelope: bool) -> None:
    """The layouts of the fast layers' MVM results: the batch outermost along dimension 0, or (a
    layer split over several tiles) along the rows of dimension 1, in any memory format."""
    torch.manual_seed(0)
    if layout.startswith("conv"):
        y, batch_dim = torch.randn(4, 6, 5, 7), 0
        if layout.endswith("last"):
            y = y.contiguous(memory_format=torch.channels_last)
    elif layout == "linear, one tile":
        y, batch_dim = torch.randn(4 * 3, 9, 10), 0  # (slices x windows, tokens, outputs)
    else:
        y, batch_dim = torch.randn(2, 4 * 9, 10), 1  # (tiles, slices x tokens, outputs)
    env = torch.rand_like(y) if envelope else None
    alone, batched = _alone_and_batched(y, batch_dim, env)
    assert torch.equal(alone, batched)
    assert not torch.equal(batched, y)


def _same_to_float_rounding(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> None:
    """The same reads up to float rounding. A batched convolution may sum in another order than a
    single one (torch picks its algorithm by batch size) and, rarely, a last-bit difference crosses an
    ADC level and moves that read by one step, as another thread count does (see the golden test).
    Reading a batch with one generator instead of one per slice moves the probabilities of the bundled
    volume by 0.035 on average and flips 8 % of its labels; float rounding by 8e-5 and 0.02 %."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    assert diff.mean() < 1e-3 and diff.max() < 0.1, (diff.mean(), diff.max())


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("mode", ["digital", "analog"])
def test_batch_of_four_gives_what_four_single_reads_give(small_model, device: str, mode: str) -> None:
    seg = Segmenter(
        small_model, RunSettings(model=small_model.name, mode=mode, mc_samples=4, seed=0), device=device
    )
    torch.manual_seed(3)
    x = torch.rand(4, 1, 64, 64)
    batched = seg.predict_batch(x, [7, 8, 9, 10])
    alone = torch.cat([seg.predict_batch(x[i : i + 1], [7 + i]) for i in range(4)])
    assert batched.shape == (4, seg.samples, 2, 64, 64) and batched.device.type == "cpu"
    _same_to_float_rounding(batched, alone)
    assert torch.equal(seg.predict(x[1:2], 8), alone[1])


def test_a_volume_is_the_same_at_batch_size_one_and_four(small_model, lgg_case) -> None:
    volume = load_scan(lgg_case[0])
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=4, seed=0))
    results = {}
    for size in (1, 4):
        result = VolumeResult.for_model(volume, small_model)
        for r in run_slices(seg, volume, result.axis, start=5, batch_size=size):
            result.add(r)
        results[size] = result
    one, four = results[1], results[4]
    assert one.complete and four.complete
    _same_to_float_rounding(one.probabilities, four.probabilities)
    for name in one.maps:
        _same_to_float_rounding(one.maps[name], four.maps[name])
    assert (one.segmentation != four.segmentation).mean() < 1e-3


def test_segment_slices_batches_what_segment_slice_reads_alone(small_model) -> None:
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=2, seed=1))
    rng = np.random.default_rng(0)
    images = [rng.random((50, 60), dtype=np.float32) for _ in range(5)]
    together = segment_slices(seg, images, [3, 4, 5, 6, 7])
    for k, (image, stats) in enumerate(zip(images, together, strict=True)):
        _same_to_float_rounding(segment_slice(seg, image, 3 + k).probabilities, stats.probabilities)
