"""Programmed chips on disk: a reopened run loads them, anything else misses, nothing stored is trusted."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from engine.analog.chip_store import DIR_ENV, SIZE_ENV, ChipStore, default_folder, default_store
from engine.analog.chips import ChipCache
from engine.files import TMP_PREFIX
from engine.inference import Segmenter
from engine.run_settings import RunSettings


def _run(spec, **changes: object) -> RunSettings:
    return RunSettings(**{"model": spec.name, "mode": "analog", "mc_samples": 3, "seed": 2, **changes})


def _reads(segmenter: Segmenter) -> torch.Tensor:
    torch.manual_seed(5)
    return segmenter.predict_batch(torch.rand(2, 1, 64, 64), [4, 9])


def test_a_second_build_loads_the_chips_and_reads_bit_identically(small_model, programmed) -> None:
    first = _reads(ChipCache().segmenter(small_model, _run(small_model)))
    assert len(programmed) == 3 and len(default_store().entries()) == 3
    again = ChipCache().segmenter(small_model, _run(small_model))  # a new process would build the same
    assert torch.equal(_reads(again), first)
    assert len(programmed) == 3 and again.chip_set.programmed == 0, "reopening reprograms nothing"
    assert torch.equal(_reads(Segmenter(small_model, _run(small_model))), first)
    assert len(programmed) == 3


@pytest.mark.parametrize("change", [{"seed": 3}, {"noise_level": 2.0}, {"drift_s": 60.0}])
def test_other_settings_miss(small_model, programmed, change: dict) -> None:
    Segmenter(small_model, _run(small_model)).program_all()
    assert len(programmed) == 3
    Segmenter(small_model, _run(small_model, **change)).program_all()
    assert len(programmed) == 6


def test_more_chips_load_the_stored_ones_and_program_the_rest(small_model, programmed) -> None:
    Segmenter(small_model, _run(small_model, mc_samples=2)).program_all()
    five = Segmenter(small_model, _run(small_model, mc_samples=5))
    five.program_all()
    assert five.chip_set.programmed == 3 and len(programmed) == 5


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # a bit flipped in the last tensor's bytes: still a readable file
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        ("a flipped bit", _corrupt),
        ("a truncated file", lambda p: p.write_bytes(p.read_bytes()[:100])),
        ("not a safetensors file", lambda p: p.write_bytes(b"\x80\x04pickled?")),
        ("an empty file", lambda p: p.write_bytes(b"")),
    ],
    ids=lambda d: d[0],
)
def test_a_damaged_entry_is_ignored_and_rebuilt(small_model, programmed, damage) -> None:
    first = _reads(Segmenter(small_model, _run(small_model)))
    entries = default_store().entries()
    for path in entries:
        damage[1](path)
    again = Segmenter(small_model, _run(small_model))
    assert torch.equal(_reads(again), first) and again.chip_set.programmed == 3
    third = Segmenter(small_model, _run(small_model))  # the rebuilt entries were stored over the damaged
    assert torch.equal(_reads(third), first) and third.chip_set.programmed == 0


def test_an_entry_under_another_key_or_for_another_network_is_not_trusted(small_model, programmed) -> None:
    Segmenter(small_model, _run(small_model, mc_samples=1)).program_all()
    store = default_store()
    (entry,) = store.entries()
    other_seed = Segmenter(small_model, _run(small_model, mc_samples=1, seed=7)).chip_set
    other_seed.chip(0)
    other_path = next(p for p in store.entries() if p != entry)
    other_path.write_bytes(entry.read_bytes())  # seed 2's chip filed under seed 7's name
    fresh = Segmenter(small_model, _run(small_model, mc_samples=1, seed=7))
    fresh.program_all()
    assert fresh.chip_set.programmed == 1, "the header's key is checked, not only the file name"
    # tensors that do not fit the network (the right key and checksum, other shapes)
    key = json.loads(_header(entry))["key"]
    store.save(key, {"model.0.weight": torch.zeros(3)})
    refit = Segmenter(small_model, _run(small_model, mc_samples=1))
    refit.program_all()
    assert refit.chip_set.programmed == 1


def _header(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["aimc_chip"]


def test_the_store_keeps_the_most_recently_used_within_its_size(tmp_path: Path) -> None:
    one_mb = {"w": torch.zeros(2**18)}  # 1 MiB of float32
    store = ChipStore(tmp_path, max_bytes=int(3.5 * 2**20))
    for k in range(3):
        store.save({"chip": k}, one_mb)
        time.sleep(0.02)  # distinct modification times
    assert store.load({"chip": 0}) is not None  # used: now the most recent
    time.sleep(0.02)
    store.save({"chip": 3}, one_mb)
    assert store.size_bytes() <= store.max_bytes
    assert store.load({"chip": 1}) is None, "the least recently used went first"
    assert all(store.load({"chip": k}) is not None for k in (0, 2, 3))
    ChipStore(tmp_path / "small", max_bytes=2**19).save({"chip": 9}, one_mb)  # larger than the store
    assert not (tmp_path / "small").exists() or not list((tmp_path / "small").glob("*.safetensors"))


def test_concurrent_writers_leave_whole_files_and_no_temporaries(tmp_path: Path) -> None:
    store = ChipStore(tmp_path, max_bytes=2**30)
    tensors = {k: {"w": torch.full((50_000,), float(k))} for k in range(4)}
    start = threading.Barrier(8)

    def write(k: int) -> None:
        start.wait()
        for _ in range(5):
            store.save({"chip": k}, tensors[k])

    threads = [threading.Thread(target=write, args=(k % 4,)) for k in range(8)]  # two writers per chip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not [p for p in tmp_path.iterdir() if p.suffix != ".safetensors"]  # no temporaries left
    for k in range(4):
        got = store.load({"chip": k})
        assert got is not None and torch.equal(got["w"], tensors[k]["w"])


def test_a_dead_writers_temporary_is_cleared_a_running_ones_kept(tmp_path: Path) -> None:
    store = ChipStore(tmp_path, max_bytes=2**30)
    dead = tmp_path / f"{TMP_PREFIX}killed.safetensors"  # a writer killed mid-write an hour ago
    dead.write_bytes(b"\0" * 1000)
    os.utime(dead, (time.time() - 7200, time.time() - 7200))
    running = tmp_path / f"{TMP_PREFIX}running.safetensors"  # one writing now is left alone
    running.write_bytes(b"\0" * 1000)
    store.save({"chip": 0}, {"w": torch.zeros(10)})
    assert not dead.exists() and running.exists() and store.load({"chip": 0}) is not None


def test_the_store_follows_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "here"))
    monkeypatch.setenv(SIZE_ENV, "5")
    store = default_store()
    assert store is not None and store.folder == tmp_path / "here" and store.max_bytes == 5 * 2**20
    monkeypatch.setenv(SIZE_ENV, "0")
    assert default_store() is None
    monkeypatch.setenv(SIZE_ENV, "lots")
    with pytest.raises(ValueError, match=SIZE_ENV):
        default_store()
    monkeypatch.delenv(SIZE_ENV)
    monkeypatch.delenv(DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_store().folder == default_folder() == tmp_path / "xdg" / "aimc-med" / "chips"


def test_with_the_store_off_chips_are_programmed_every_time(small_model, programmed, monkeypatch) -> None:
    monkeypatch.setenv(SIZE_ENV, "0")
    Segmenter(small_model, _run(small_model, mc_samples=1)).program_all()
    Segmenter(small_model, _run(small_model, mc_samples=1)).program_all()
    assert len(programmed) == 2 and not list(Path(os.environ[DIR_ENV]).iterdir())
