"""The slice pipeline: every slice once, fan-out from the slice on screen, cancel, errors."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch

from engine.findings import slice_ranking
from engine.inference import Cancelled, Segmenter
from engine.pipeline import VolumeResult, fan_out_order, preview_while_programming, run_slices, segment_volume
from engine.preprocessing import get_slice
from engine.run_settings import RunSettings
from engine.volume import load_scan


def test_fan_out_order_covers_every_slice_once():
    assert fan_out_order(5, 2) == [2, 3, 1, 4, 0]
    assert fan_out_order(4, 0) == [0, 1, 2, 3]
    assert fan_out_order(4, 99) == [3, 2, 1, 0]
    for n in range(1, 12):
        for s in range(n):
            assert sorted(fan_out_order(n, s)) == list(range(n))


@pytest.fixture(scope="module")
def real_volume(lgg_case):
    return load_scan(lgg_case[0])


def test_every_slice_yielded_once_starting_at_the_requested_one(small_model, real_volume):
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=2))
    seen, progress = [], []
    for r in run_slices(seg, real_volume, "axial", start=7, progress=lambda d, t: progress.append((d, t))):
        seen.append(r.index)
        assert r.stats.segmentation.shape == (256, 256)
    n = real_volume.shape[2]
    assert seen[0] == 7
    assert sorted(seen) == list(range(n))
    assert progress[-1] == (n, n)


def test_preview_shows_the_slice_from_each_new_chip_and_ends_at_its_result(small_model, real_volume):
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=3, seed=4))
    previews = []
    for read, preview in preview_while_programming(seg, real_volume, 9, "axial"):
        assert len(seg.chips) == read, "each preview comes as soon as its chip is programmed"
        assert preview.index == 9 and preview.done == 0
        previews.append(preview.stats)
    assert len(previews) == 3
    assert (
        previews[0].mutual_information.max() == 0 and previews[0].std.max() == 0
    )  # one sample agrees with itself
    assert previews[2].std.max() > 0
    final = next(run_slices(seg, real_volume, "axial", indices=[9])).stats
    for name in ("probabilities", "entropy", "mutual_information", "std"):  # the same reads (the pipeline's
        np.testing.assert_allclose(
            getattr(previews[2], name), getattr(final, name), atol=1e-5
        )  # thread count aside)
    assert (previews[2].segmentation == final.segmentation).mean() > 0.999
    cancel = threading.Event()
    cancel.set()
    assert list(preview_while_programming(seg, real_volume, 9, "axial", cancel)) == []


def test_a_preview_shows_until_finished_or_dropped(small_model, real_volume):
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=2, seed=2))
    result = VolumeResult(real_volume, "axial", 2)
    (_, first), (_, second) = list(preview_while_programming(seg, real_volume, 9, "axial"))
    result.show(first, 1)
    assert result.previews == {9: 1} and not result.finished.any()
    assert np.array_equal(get_slice(result.maps["entropy"], "axial", 9), first.stats.entropy)
    result.drop_previews()  # the run stopped: nothing of it counts
    assert result.previews == {} and result.maps["entropy"][..., 9].max() == 0
    assert (result.probabilities[..., 9, 0] == 1).all() and result.segmentation[..., 9].max() == 0
    result.show(first, 1)
    result.add(second)
    assert result.previews == {} and result.finished[9]
    result.drop_previews()  # a finished slice stays
    assert np.array_equal(get_slice(result.maps["std"], "axial", 9), second.stats.std)


def test_cancel_stops_the_run(small_model, real_volume):
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=2))
    cancel = threading.Event()
    seen = []
    for r in run_slices(seg, real_volume, "axial", cancel=cancel):
        seen.append(r.index)
        if len(seen) == 2:
            cancel.set()
    assert 2 <= len(seen) < real_volume.shape[2] - 2


def test_cancel_acts_within_one_sample(small_model, real_volume):
    """A cancel lands between two Monte-Carlo samples: after it, a worker starts no new read (one
    already past its check may start one), and the run stops long before the volume is done."""
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=64))
    cancel = threading.Event()
    read = seg.read_batch
    after_cancel: list[tuple[list[int], int]] = []

    def counting_read(x, slice_indices: list[int], s: int):
        if cancel.is_set():
            after_cancel.append((slice_indices, s))
        elif s == 3:
            cancel.set()  # in the middle of the first slice's 64 samples
        return read(x, slice_indices, s)

    seg.read_batch = counting_read
    results = list(run_slices(seg, real_volume, "axial", cancel=cancel))
    assert len(after_cancel) <= os.cpu_count(), after_cancel
    assert len(results) < real_volume.shape[2]


def test_a_digital_batch_stops_between_slices_on_cancel(small_model):
    """An exact read of a wide model takes seconds per slice: a cancel must not wait for a whole batch."""
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="digital", mc_samples=1))
    cancel = threading.Event()
    read = seg.digital_read
    reads: list[int] = []

    def counting_read(x):
        reads.append(x.shape[0])
        cancel.set()  # during the batch's first slice
        return read(x)

    seg.digital_read = counting_read
    x = torch.zeros(4, small_model.preprocessing.in_channels, *small_model.preprocessing.input_size)
    with pytest.raises(Cancelled):
        seg.predict_batch(x, [0, 1, 2, 3], cancel)
    assert reads == [1]


def test_errors_in_a_stage_reach_the_caller(small_model, real_volume, monkeypatch):
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="digital", mc_samples=1))

    def broken(x, ks, cancel=None):
        raise RuntimeError("tile exploded")

    monkeypatch.setattr(seg, "predict_batch", broken)
    with pytest.raises(RuntimeError, match="tile exploded"):
        list(run_slices(seg, real_volume, "axial"))


def test_volume_result_collects_every_map(small_model, real_volume):
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=2))
    result = segment_volume(seg, real_volume)
    assert result.complete
    assert result.segmentation.shape == real_volume.shape
    assert np.allclose(result.probabilities.sum(-1), 1.0, atol=1e-4)
    assert result.maps["entropy"].max() > 0
    ranking = slice_ranking(result)
    assert {s for s, _ in ranking} <= set(range(real_volume.shape[2]))
    assert [v for _, v in ranking] == sorted((v for _, v in ranking), reverse=True)


def test_stages_run_on_one_torch_thread_each_and_the_callers_count_is_kept(
    small_model, real_volume, monkeypatch
):
    """Stages on full OpenMP teams oversubscribe the cores (1.7x slower on two)."""
    import torch

    import engine.pipeline as pipeline

    seen: dict[str, set[int]] = {"infer": set(), "post": set()}
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="digital"))
    predict, statistics = seg.predict_batch, pipeline.mc_statistics
    monkeypatch.setattr(
        seg, "predict_batch", lambda *a: seen["infer"].add(torch.get_num_threads()) or predict(*a)
    )
    monkeypatch.setattr(
        pipeline, "mc_statistics", lambda p: seen["post"].add(torch.get_num_threads()) or statistics(p)
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in run_slices(seg, real_volume, "axial", indices=[0, 1, 2]):
            pass
        caller = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    assert seen == {"infer": {1}, "post": {1}} and caller == 2


def test_two_inference_workers_read_at_once_and_the_slice_on_screen_still_comes_first(
    small_model, real_volume, monkeypatch
):
    seg = Segmenter(small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=2, seed=1))
    readers: set[str] = set()
    predict = seg.predict_batch

    def slow_on_the_first(x, ks, cancel=None):
        readers.add(threading.current_thread().name + str(threading.get_ident()))
        if 5 in ks:
            time.sleep(0.5)  # the other worker finishes slices meanwhile
        return predict(x, ks, cancel)

    monkeypatch.setattr(seg, "predict_batch", slow_on_the_first)
    seen = [r for r in run_slices(seg, real_volume, "axial", start=5)]
    assert len(readers) == 2
    assert seen[0].index == 5 and [r.done for r in seen] == list(range(1, len(seen) + 1))
    assert sorted(r.index for r in seen) == list(range(real_volume.shape[2]))
    # the reads do not depend on which worker made them, nor on what the other read meanwhile
    monkeypatch.setattr(seg, "predict_batch", predict)
    alone = {k: next(run_slices(seg, real_volume, "axial", indices=[k])).stats for k in (5, 6, 4)}
    for r in seen:
        if r.index in alone:
            np.testing.assert_allclose(r.stats.probabilities, alone[r.index].probabilities, atol=1e-6)


def test_aihwkit_chips_are_read_by_one_worker(small_model, real_volume, monkeypatch):
    """aihwkit's tile draws its noise from torch's global generator: one reader at a time."""
    seg = Segmenter(
        small_model, RunSettings(model=small_model.name, mode="analog", mc_samples=1), simulator="aihwkit"
    )
    assert not seg.concurrent_reads
    readers: set[int] = set()
    predict = seg.predict_batch
    monkeypatch.setattr(seg, "predict_batch", lambda *a: readers.add(threading.get_ident()) or predict(*a))
    assert len(list(run_slices(seg, real_volume, "axial", indices=[0, 1, 2, 3]))) == 4
    assert len(readers) == 1
