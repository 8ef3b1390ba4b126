"""The chip lifecycle: seeds, keys, chip sets that grow with the MC count, and the one cache of them."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import engine.analog.chips as chips_module
from engine.analog.chips import ChipCache, ChipKey, chip_seed, read_seed
from engine.inference import Segmenter
from engine.run_settings import Mode, RunSettings, Simulator


def test_seeds_are_the_ones_the_golden_results_were_made_with() -> None:
    assert [chip_seed(s, k) for s, k in [(0, 0), (0, 5), (4, 2), (123, 7)]] == [0, 5, 400014, 12300376]
    reads = [read_seed(*t) for t in [(0, 0, 0), (0, 9, 3), (7, 120, 15), (123, 5, 63)]]
    assert reads == [360982090, 1710969282, 823865691, 507278835]


def test_chip_keys_follow_what_chips_depend_on() -> None:
    spec = SimpleNamespace(folder=Path("/models/m"), name="m")

    def key(**changes: object) -> ChipKey:
        return ChipKey.of(spec, RunSettings(**{"model": "m", "mode": "analog", "mc_samples": 2, **changes}))

    assert key(mc_samples=16) == key()
    assert len({key(), key(noise_level=2.0), key(drift_s=60.0), key(seed=1)}) == 4
    assert ChipKey.of(spec, RunSettings(model="m", mode="analog"), Simulator.AIHWKIT) != key()
    assert key(mode="digital", mc_samples=3) == key(mode="digital", mc_samples=9, noise_level=2.0)
    assert (
        key(mode="digital")
        == ChipKey(str(Path("/models/m")), Mode.DIGITAL)
        != key(noise_level=0.0, drift_s=1.0)
    )
    nameless = SimpleNamespace(folder=None, name="m")
    assert ChipKey.of(nameless, RunSettings(model="m")).model == "m" and key().model == str(Path("/models/m"))


class _FakeChipSet:
    def __init__(self, spec, key: ChipKey) -> None:
        self.key, self.chips, self.digital, self.settings = key, [], None, None

    def __len__(self) -> int:
        return len(self.chips)

    def chip(self, s: int) -> str:
        while len(self.chips) <= s:
            self.chips.append(f"chip{len(self.chips)}")
        return self.chips[s]


def test_cache_shares_chips_across_mc_counts_and_drops_the_least_recently_used(monkeypatch) -> None:
    built: list[ChipKey] = []

    def fake(spec, key: ChipKey) -> _FakeChipSet:
        built.append(key)
        return _FakeChipSet(spec, key)

    monkeypatch.setattr(chips_module, "ChipSet", fake)
    spec = SimpleNamespace(folder=Path("/models/m"), name="m")
    cache = ChipCache(capacity=2)
    two = cache.segmenter(
        spec, RunSettings(model="m", mode="analog", mc_samples=2, noise_level=1.0, drift_s=3600.0)
    )
    two.chip(1)
    four = cache.segmenter(
        spec, RunSettings(model="m", mode="analog", mc_samples=4, noise_level=1.0, drift_s=3600.0)
    )
    assert four.run.mc_samples == 4 and four.chips is two.chips and len(built) == 1
    assert four.samples == 4 and two.samples == 2
    four.chip(3)
    one = RunSettings(model="m", mode="analog", mc_samples=1, noise_level=1.0, drift_s=3600.0)
    assert cache.programmed_chips(spec, one) == 4
    cache.segmenter(
        spec, RunSettings(model="m", mode="analog", mc_samples=2, noise_level=2.0, drift_s=3600.0)
    )
    cache.segmenter(spec, RunSettings(model="m", mode="digital"))  # beyond capacity: the MC-2 chips go
    assert len(built) == 3 and len(cache) == 2
    assert cache.programmed_chips(spec, one) == 0
    cache.segmenter(
        spec, RunSettings(model="m", mode="analog", mc_samples=2, noise_level=2.0, drift_s=3600.0)
    )
    assert len(built) == 3, "a recently used chip set stays"


def test_a_chip_set_grows_with_the_mc_count_and_reads_as_a_fresh_segmenter(small_model, programmed) -> None:
    cache = ChipCache()
    run = RunSettings(model=small_model.name, mode="analog", mc_samples=2, seed=3)
    x = torch.rand(1, 1, 64, 64)
    segmenter = cache.segmenter(small_model, run)
    two, first = segmenter.predict(x, 5), segmenter.chip(0)
    assert programmed == [chip_seed(3, 0), chip_seed(3, 1)]
    eight = cache.segmenter(
        small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=8, seed=3)
    )
    eight.program_all()
    assert programmed == [chip_seed(3, k) for k in range(8)] and eight.chip(0) is first
    assert torch.equal(eight.predict(x, 5)[:2], two)
    cache.segmenter(small_model, run).program_all()
    assert len(programmed) == 8, "fewer samples program nothing"
    assert torch.equal(Segmenter(small_model, run).predict(x, 5), two)
    with pytest.raises(ValueError, match="chips programmed for"):
        Segmenter(
            small_model, RunSettings(model=small_model.name, mode="analog", seed=4), chips=eight.chip_set
        )


def test_threads_growing_one_chip_set_program_each_chip_once(small_model, programmed) -> None:
    cache = ChipCache()
    run = RunSettings(model=small_model.name, mode="analog", mc_samples=6, seed=9)
    start = threading.Barrier(3)
    got: list[torch.nn.Module] = []

    def grow() -> None:
        segmenter = cache.segmenter(small_model, run)
        start.wait()
        got.append(segmenter.chip(5))

    threads = [threading.Thread(target=grow) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert programmed == [chip_seed(9, k) for k in range(6)]
    assert len(got) == 3 and got[0] is got[1] is got[2] and cache.programmed_chips(small_model, run) == 6
