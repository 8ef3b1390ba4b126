"""Segmenters kept between runs, so that analog chips are programmed once per device configuration."""

from __future__ import annotations

from pathlib import Path

from engine.run_settings import RunSettings
from engine.segmenter_pool import SegmenterPool, chip_key, with_settings


class _FakeSegmenter:
    def __init__(self, spec, run) -> None:
        self.spec, self.run, self.chips = spec, run, []

    def chip(self, s: int) -> str:
        while len(self.chips) <= s:
            self.chips.append(f"chip{len(self.chips)}")
        return self.chips[s]


def test_segmenter_pool_shares_chips_across_mc_counts(monkeypatch) -> None:
    import engine.segmenter_pool as pool_module

    built: list[RunSettings] = []

    def fake(spec, run):
        built.append(run)
        return _FakeSegmenter(spec, run)

    monkeypatch.setattr(pool_module, "Segmenter", fake)
    spec = type("Spec", (), {"folder": Path("/models/m"), "name": "m"})()
    pool = SegmenterPool(capacity=2)
    two = pool.get(spec, RunSettings(model="m", mode="analog", mc_samples=2, noise_level=1.0, drift_s=3600.0))
    two.chip(1)
    four = pool.get(
        spec, RunSettings(model="m", mode="analog", mc_samples=4, noise_level=1.0, drift_s=3600.0)
    )
    assert four.run.mc_samples == 4 and four.chips is two.chips and len(built) == 1
    four.chip(3)
    assert (
        pool.programmed_chips(
            spec, RunSettings(model="m", mode="analog", mc_samples=1, noise_level=1.0, drift_s=3600.0)
        )
        == 4
    )
    pool.get(
        spec, RunSettings(model="m", mode="analog", mc_samples=2, noise_level=2.0, drift_s=3600.0)
    )  # other noise: other chips
    pool.get(spec, RunSettings(model="m", mode="digital"))
    assert len(built) == 3 and len(pool) == 2
    assert chip_key(spec, RunSettings(model="m", mode="digital", mc_samples=3)) == chip_key(
        spec, RunSettings(model="m", mode="digital", mc_samples=9, noise_level=2.0)
    )


def test_with_settings_shares_the_real_segmenters_chips() -> None:
    """Guards the shallow-copy contract against changes in `engine.inference.Segmenter`."""
    from engine.inference import Segmenter

    base = Segmenter.__new__(Segmenter)
    base.run, base.chips = RunSettings(model="m", mode="analog", mc_samples=2), ["c0"]
    view = with_settings(base, RunSettings(model="m", mode="analog", mc_samples=5))
    assert view.chips is base.chips and view.samples == 5 and base.samples == 2
