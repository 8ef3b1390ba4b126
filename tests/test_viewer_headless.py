"""The viewer's Qt-free logic: slice geometry, window/level, overlay tables, caches, ground truth."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine import display
from engine.ground_truth import dice_so_far, load_ground_truth
from engine.run_settings import RunSettings
from engine.pipeline import SliceResult, VolumeResult
from engine.preprocessing import get_slice
from engine.result_cache import ResultCache, missing_slices, result_key
from engine.uncertainty import SliceStats
from engine.volume import ScanError, Volume, load_scan, save_nifti

SHAPE = (5, 6, 7)


@pytest.mark.parametrize("view", display.VIEWS)
def test_voxel_at_matches_get_slice(view: str) -> None:
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    index = 2
    image = get_slice(data, view, index)
    assert image.shape == display.display_shape(SHAPE, view)
    for row in range(image.shape[0]):
        for col in range(image.shape[1]):
            ijk = display.voxel_at(SHAPE, view, index, row, col)
            assert image[row, col] == data[ijk]
            assert display.display_position(SHAPE, view, ijk) == (row, col)


def test_orientation_letters_follow_the_slice_directions() -> None:
    """Radiological convention: patient right on screen left; anterior/superior at the top."""
    shape = (4, 4, 4)
    # axial column 0 is the largest i (towards patient Right), row 0 the largest j (Anterior)
    assert display.voxel_at(shape, "axial", 0, 0, 0)[:2] == (3, 3)
    assert display.ORIENTATION_LETTERS["axial"] == ("R", "L", "A", "P")
    assert display.voxel_at(shape, "coronal", 0, 0, 0)[::2] == (3, 3)  # Right, Superior
    assert display.ORIENTATION_LETTERS["coronal"] == ("R", "L", "S", "I")
    assert display.voxel_at(shape, "sagittal", 0, 0, 0)[1:] == (3, 3)  # Anterior, Superior
    assert display.ORIENTATION_LETTERS["sagittal"] == ("A", "P", "S", "I")


def test_pixel_size_uses_the_in_plane_spacing() -> None:
    spacing = (0.5, 0.8, 3.0)
    assert display.pixel_size_mm(spacing, "axial") == (0.8, 0.5)
    assert display.pixel_size_mm(spacing, "coronal") == (3.0, 0.5)
    assert display.pixel_size_mm(spacing, "sagittal") == (3.0, 0.8)


def test_window_presets_and_auto_window() -> None:
    assert display.window_for("CT brain", np.zeros(3)) == display.WindowLevel(80, 40)
    lung = display.CT_PRESETS["CT lung"]
    assert (lung.low, lung.high) == (-1350, 150)
    data = np.zeros((10, 10, 10), np.float32)
    data[2:8, 2:8, 2:8] = np.linspace(100, 200, 216).reshape(6, 6, 6)
    wl = display.auto_window(data)
    assert 100 <= wl.low < 105 and 195 < wl.high <= 200  # background zeros ignored
    with pytest.raises(ValueError):
        display.window_for("nope", data)
    wider = wl.dragged(dx=10, dy=0, data_range=200)
    assert wider.width == pytest.approx(wl.width + 10) and wider.level == wl.level
    assert wl.dragged(dx=-10_000, dy=0, data_range=200).width > 0


def test_label_lut_hides_background_and_hidden_labels() -> None:
    lut = display.label_lut({0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0)}, {1: True, 2: False})
    assert lut.shape == (256, 4) and lut.dtype == np.uint8
    assert lut[0, 3] == 0 and tuple(lut[1]) == (255, 0, 0, 255) and lut[2, 3] == 0


def test_outline_keeps_only_boundaries() -> None:
    labels = np.zeros((7, 7), np.uint8)
    labels[1:6, 1:6] = 2
    edge = display.outline(labels)
    assert edge[3, 3] == 0 and edge[1, 3] == 2 and edge[0, 0] == 0
    assert (edge > 0).sum() == 16


def test_heatmap_lut_threshold_and_ranges() -> None:
    colors = np.array([[0, 0, 0, 1], [1, 1, 0, 1]], float)
    lut = display.heatmap_lut(colors, threshold=0.5)
    assert lut.shape == (256, 4) and (lut[:128, 3] == 0).all() and (lut[128:, 3] == 255).all()
    assert tuple(lut[-1, :3]) == (255, 255, 0)
    assert display.heatmap_lut(colors, 0.0)[0, 3] == 0  # zero uncertainty never tints
    assert display.map_range("entropy", 2) == (0.0, pytest.approx(math.log(2)))
    assert display.map_range("std", 3) == (0.0, 0.5)


def _volume(shape=(4, 4, 3)) -> Volume:
    return Volume(np.random.default_rng(0).random(shape, dtype=np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))


def _slice_result(volume: Volume, k: int, seg_value: int = 1) -> SliceResult:
    h, w = get_slice(volume.data, "axial", k).shape
    seg = np.full((h, w), seg_value, np.uint8)
    probs = np.stack([1.0 - seg, seg]).astype(np.float32)
    zeros = np.zeros((h, w), np.float32)
    return SliceResult(k, SliceStats(probs, seg, zeros + 0.1 * k, zeros, zeros), 0.01, 1, 3)


def test_result_cache_keys_and_resume_order() -> None:
    vol = _volume()
    cache = ResultCache()
    analog = RunSettings(model="m", mode="analog", mc_samples=4, noise_level=1.0, drift_s=3600.0)
    digital = RunSettings(model="m", mode="digital", mc_samples=4, noise_level=1.0, drift_s=3600.0)
    assert result_key(digital) == result_key(RunSettings(model="m", mode="digital", mc_samples=9, noise_level=2.0, drift_s=60.0))
    assert result_key(analog) == analog
    result = cache.get_or_create(analog, lambda: VolumeResult(vol, "axial", 2))
    assert cache.get(RunSettings(model="m", mode="analog", mc_samples=4, noise_level=1.0, drift_s=3600.0)) is result
    assert RunSettings(model="m", mode="analog", mc_samples=5, noise_level=1.0, drift_s=3600.0) not in cache
    result.add(_slice_result(vol, 1))
    assert missing_slices(result, 1) == [2, 0]
    digital_result = cache.get_or_create(digital, lambda: VolumeResult(vol, "axial", 2))
    assert cache.get(RunSettings(model="m", mode="digital", mc_samples=2, noise_level=0.5, drift_s=10.0)) is digital_result
    small = ResultCache(max_bytes=1)
    small.put(analog, result)
    small.put(digital, digital_result)
    assert len(small) == 1 and digital in small  # least recently used dropped, newest kept


def test_ground_truth_fit_and_dice_so_far(tmp_path: Path) -> None:
    vol = _volume()
    truth = np.zeros(vol.shape, np.uint8)
    truth[..., 0] = 1
    path = save_nifti(vol, truth, tmp_path / "gt.nii.gz", np.uint8)
    vol.source = str(tmp_path / "scan.nii.gz")
    loaded = load_ground_truth(path, vol)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, truth)
    result = VolumeResult(vol, "axial", 2)
    assert dice_so_far(result, loaded) == ({}, 0)
    result.add(_slice_result(vol, 0, 1))
    dice, n = dice_so_far(result, loaded)
    assert n == 1 and dice[1] == pytest.approx(1.0)
    result.add(_slice_result(vol, 1, 1))  # wrongly segmented slice halves the overlap
    assert dice_so_far(result, loaded)[0][1] == pytest.approx(2 * 16 / (32 + 16))
    other = save_nifti(Volume(np.zeros((4, 4, 2), np.float32), np.eye(4)), np.zeros((4, 4, 2)), tmp_path / "o.nii.gz")
    with pytest.raises(ScanError, match="does not match"):
        load_ground_truth(other, vol)
    nib.save(nib.Nifti1Image(np.full(vol.shape, 0.5, np.float32), vol.affine), tmp_path / "f.nii.gz")
    with pytest.raises(ScanError, match="not a label map"):
        load_ground_truth(tmp_path / "f.nii.gz", load_scan(tmp_path / "f.nii.gz"))


def test_worker_post_processes_the_complete_volume_off_the_ui_thread() -> None:
    pytest.importorskip("PySide6")
    from viewer.inference_worker import Job, PostProcessed, _postprocessed

    vol = _volume()
    result = VolumeResult(vol, "axial", 2, keep_largest=(1,))
    result.add(_slice_result(vol, 0, 1))  # done by an earlier job: a 4x4 block
    empty = _slice_result(vol, 1, 0)
    island = _slice_result(vol, 2, 0)
    island.stats.segmentation[0, 0] = 1  # one voxel, not touching the block

    def run(items, cancel=False):
        job = Job(None, None, vol, result, [r.index for r in items])
        if cancel:
            job.cancel.set()
        return list(_postprocessed(job, iter(items)))

    out = run([empty, island])
    assert out[:2] == [empty, island]
    assert isinstance(out[2], PostProcessed)
    assert get_slice(out[2].labels, "axial", 0).all() and not get_slice(out[2].labels, "axial", 2).any()
    assert not get_slice(result.segmentation, "axial", 2).any()  # the result itself is the UI thread's
    assert run([empty]) == [empty]  # slice 2 missing: no post-processing yet
    assert run([empty, island], cancel=True) == [empty, island]
    result.keep_largest = ()
    assert run([empty, island]) == [empty, island]
