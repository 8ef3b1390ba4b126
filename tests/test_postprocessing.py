"""Post-processing: largest connected component, applied once a volume is complete, chosen on val."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from conftest import SHARED_DATA

from engine.inference import Segmenter
from engine.model_store import ModelSpec, read_spec, validate_description
from engine.pipeline import VolumeResult, run_slices, segment_volume
from engine.postprocessing import keep_large_components, keep_largest_component
from engine.run_settings import RunSettings
from engine.volume import load_scan


def test_largest_component_kept_per_label_with_full_connectivity():
    seg = np.zeros((12, 12, 6), np.uint8)
    seg[1:3, 1:3, 1:3] = 1  # 8 voxels
    seg[6:9, 6:9, 1:4] = 1  # 27 voxels
    seg[9, 9, 4] = 1  # touches the big blob only at a corner: full connectivity keeps it
    seg[0, 11, 0] = 2  # another label is left alone
    before = seg.copy()
    out = keep_largest_component(seg, [1])
    assert np.array_equal(seg, before)  # the input is not edited
    assert out.dtype == seg.dtype
    assert (out == 1).sum() == 28
    assert out[1, 1, 1] == 0 and out[9, 9, 4] == 1
    assert out[0, 11, 0] == 2
    assert np.array_equal(keep_largest_component(seg, []), seg)
    assert np.array_equal(keep_largest_component(np.zeros_like(seg), [1]), np.zeros_like(seg))


def test_components_down_to_a_fraction_of_the_largest_are_kept():
    seg = np.zeros((12, 12, 8), np.uint8)
    seg[6:9, 6:9, 1:4] = 1  # 27 voxels
    seg[1:3, 1:3, 1:3] = 1  # 8 voxels: 0.30 of the largest
    seg[11, 0, 7] = 1  # 1 voxel
    seg[0, 11, 0] = 2  # another label, two components, left alone
    seg[0, 0, 7] = 2
    before = seg.copy()
    out = keep_large_components(seg, [1], 0.2)
    assert np.array_equal(seg, before) and out.dtype == seg.dtype
    assert (out == 1).sum() == 35 and out[11, 0, 7] == 0
    assert (out == 2).sum() == 2
    assert (keep_large_components(seg, [1], 0.5) == 1).sum() == 27
    assert np.array_equal(keep_large_components(seg, [1], 1.0), keep_largest_component(seg, [1]))
    assert np.array_equal(keep_large_components(seg, [1, 2], 0.2), np.where(seg == 2, 2, out))
    assert np.array_equal(keep_large_components(np.zeros_like(seg), [1], 0.2), np.zeros_like(seg))


def test_volume_result_for_model_applies_the_fraction(small_model):
    from engine.volume import Volume

    seg = np.zeros((12, 12, 8), np.uint8)
    seg[6:9, 6:9, 1:4] = 1
    seg[1:3, 1:3, 1:3] = 1
    spec = dataclasses.replace(small_model, keep_largest=[1], component_fraction=0.2)
    result = VolumeResult.for_model(Volume(seg.astype(np.float32), np.eye(4)), spec)
    assert result.component_fraction == 0.2
    result.segmentation[...] = seg
    result.finished[:] = True
    result.finalise()
    assert np.array_equal(result.segmentation, seg)  # the 8-voxel lesion is kept
    result.component_fraction = 1.0
    result.finalise()
    assert (result.segmentation == 1).sum() == 27


def test_model_json_round_trip_keeps_the_choice(small_model):
    spec = dataclasses.replace(small_model, keep_largest=[1])
    assert ModelSpec.from_dict(spec.to_dict()).keep_largest == [1]
    assert ModelSpec.from_dict({**small_model.to_dict(), "postprocessing": {}}).keep_largest == []
    spec = dataclasses.replace(small_model, keep_largest=[1], component_fraction=0.2)
    assert ModelSpec.from_dict(spec.to_dict()).component_fraction == 0.2
    old = {**small_model.to_dict(), "postprocessing": {"keep_largest_component": [1]}}
    assert ModelSpec.from_dict(old).component_fraction == 1.0  # model.json written before the fraction
    old.pop("inference")
    assert ModelSpec.from_dict(old).flip_average is False  # ... and before mirror averaging
    flipping = dataclasses.replace(small_model, flip_average=True)
    assert ModelSpec.from_dict(flipping.to_dict()).flip_average is True
    validate_description(flipping.to_dict())
    for wrong in ("yes", 1):
        with pytest.raises(ValueError, match="average_left_right_flip|inference"):
            validate_description({**flipping.to_dict(), "inference": {"average_left_right_flip": wrong}})
    validate_description(spec.to_dict())
    for wrong in (0, 1.5, "0.2"):
        bad = {
            **spec.to_dict(),
            "postprocessing": {"keep_largest_component": [1], "keep_components_of_fraction": wrong},
        }
        with pytest.raises(ValueError, match="keep_components_of_fraction|postprocessing"):
            validate_description(bad)


def test_volume_result_post_processes_on_finalise_once_complete(shipped_model, lgg_case):
    volume = load_scan(lgg_case[0])
    plain = dataclasses.replace(shipped_model, keep_largest=[])
    seg = Segmenter(plain, RunSettings(model=plain.name, mode="digital", mc_samples=1))
    raw = segment_volume(seg, volume).segmentation
    assert keep_largest_component(raw, [1]).sum() < raw.sum()  # this patient has stray islands
    result = VolumeResult(volume, "axial", 2, keep_largest=(1,))
    slices = list(run_slices(seg, volume, "axial"))
    for r in slices[:-1]:
        result.add(r)
    result.finalise()  # incomplete: nothing to do yet
    done = [r.index for r in slices[:-1]]
    assert np.array_equal(result.segmentation[..., done], raw[..., done])
    result.add(slices[-1])
    assert np.array_equal(result.segmentation, raw)
    result.finalise()
    assert np.array_equal(result.segmentation, keep_largest_component(raw, [1]))
    cut = dataclasses.replace(shipped_model, keep_largest=[1])
    assert np.array_equal(
        segment_volume(
            Segmenter(cut, RunSettings(model=cut.name, mode="digital", mc_samples=1)), volume
        ).segmentation,
        result.segmentation,
    )


def test_choice_made_on_validation_patients_and_recorded(shipped_model, tmp_path):
    from training.postprocessing import FLIP_MIN_GAIN, FRACTIONS, choose_postprocessing

    lgg = SHARED_DATA / "lgg"
    if not lgg.exists():  # the validation patients are not shipped: CI has them beside the clone
        pytest.skip(f"real LGG data not found at {lgg}")
    folder = tmp_path / shipped_model.name
    shutil.copytree(shipped_model.folder, folder)
    spec = read_spec(folder)
    spec.keep_largest = []
    assert choose_postprocessing(spec, lgg, progress=False, log=lambda _: None) == [1]
    stored = read_spec(folder)
    assert stored.keep_largest == [1]
    numbers = stored.metrics["val"]["postprocessing"]["1"]
    assert numbers["dice_largest_component"] > numbers["dice_raw"] > 0.5
    assert stored.component_fraction in FRACTIONS
    tried = {f: numbers[f"dice_components_of_fraction_{f:g}"] for f in FRACTIONS[1:]}
    best = max(tried.values())  # the recorded choice is the best of the rules tried on validation
    assert max(numbers["dice_largest_component"], best) == (
        numbers["dice_largest_component"]
        if stored.component_fraction == 1.0
        else tried[stored.component_fraction]
    )
    from training.postprocessing import WINDOW_MIN_GAIN

    windows = stored.metrics["val"]["sliding_window"]  # trained on 128 patches of 256 slices: tried
    assert windows["window"] == [128, 128]
    adopted = windows["dice_windows"] >= windows["dice_whole"] + WINDOW_MIN_GAIN
    assert stored.sliding_window == ((128, 128) if adopted else None)
    flips = stored.metrics["val"]["flip_average"]
    assert flips["dice_plain"] == pytest.approx(windows["dice_windows"] if adopted else windows["dice_whole"])
    assert stored.flip_average == (flips["dice_flip_average"] >= flips["dice_plain"] + FLIP_MIN_GAIN)
    # the recorded numbers are those of the chosen reading
    assert max(numbers["dice_largest_component"], best) == pytest.approx(
        flips["dice_flip_average"] if stored.flip_average else flips["dice_plain"]
    )
