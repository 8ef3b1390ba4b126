"""Nuclei instances (`engine.instances`) and the Data Science Bowl metric (`engine.metrics`), on constructed
maps whose answers are known by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.images2d import image_volume
from engine.instances import (
    WatershedParameters,
    instance_volume,
    instances,
    nuclei_csv,
    split_instances,
)
from engine.metrics import DSB_THRESHOLDS, dsb_average_precision, instance_f1, instance_iou
from engine.pipeline import VolumeResult
from engine.preprocessing import get_slice, set_slice
from viewer.session.display import display_position


def _disc(shape: tuple[int, int], centre: tuple[int, int], radius: float) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def test_dsb_thresholds_are_the_ten_of_the_challenge() -> None:
    assert DSB_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_dsb_score_and_f1_on_maps_with_known_answers() -> None:
    truth = np.zeros((10, 10), int)
    truth[0:4, 0:4] = 1
    truth[6:10, 6:10] = 2  # 16 pixels
    pred = np.zeros((10, 10), int)
    pred[0:4, 0:4] = 7  # the same object under another number
    pred[6:10, 7:10] = 3  # 12 of its 16 pixels: IoU 0.75
    iou = instance_iou(pred, truth)
    assert iou.shape == (2, 2) and sorted(iou.max(1)) == [0.75, 1.0]
    # IoU 0.75 counts at 0.50..0.70 (5 thresholds: 2 TP) and not from 0.75 (TP 1, FP 1, FN 1: 1/3)
    assert dsb_average_precision(pred, truth) == pytest.approx((5 * 1.0 + 5 / 3) / 10)
    assert instance_f1(pred, truth) == 1.0
    assert instance_f1(pred, truth, threshold=0.8) == pytest.approx(2 / 4)
    assert dsb_average_precision(truth, truth) == 1.0


def test_dsb_score_counts_misses_and_false_detections() -> None:
    truth = np.zeros((12, 12), int)
    truth[0:3, 0:3], truth[5:8, 5:8], truth[9:12, 0:3] = 1, 2, 3
    pred = np.zeros((12, 12), int)
    pred[0:3, 0:3], pred[9:12, 9:12] = 1, 2  # one hit, one false detection, two misses
    assert dsb_average_precision(pred, truth) == pytest.approx(1 / 4)  # TP 1 / (1 + 1 + 2) at every threshold
    assert instance_f1(pred, truth) == pytest.approx(2 / (2 + 1 + 2))
    merged = np.zeros((12, 12), int)
    merged[0:8, 0:8] = 1  # one region over two nuclei: IoU below 0.5 with each
    assert dsb_average_precision(merged, truth) == 0.0


def test_dsb_score_of_empty_maps() -> None:
    empty, one = np.zeros((5, 5), int), np.zeros((5, 5), int)
    one[1:3, 1:3] = 4
    assert dsb_average_precision(empty, empty) == 1.0 and instance_f1(empty, empty) == 1.0
    assert dsb_average_precision(empty, one) == 0.0 and dsb_average_precision(one, empty) == 0.0


def test_touching_nuclei_are_split_and_a_lone_one_kept_whole() -> None:
    shape = (64, 64)
    pair = _disc(shape, (20, 20), 9) | _disc(shape, (20, 36), 9)  # overlapping discs: one blob
    lone = _disc(shape, (48, 48), 7)
    labels = split_instances(pair | lone)
    assert labels.max() == 3 and labels.dtype == np.int32
    assert len(np.unique(labels[pair])) == 2 and len(np.unique(labels[lone])) == 1
    assert labels[20, 20] != labels[20, 36]
    # numbered in raster order of their first pixel, so the map reads the same every run
    assert labels[20, 20] == 1 and labels[48, 48] == 3
    assert (labels > 0).sum() == (pair | lone).sum()


def test_debris_is_dropped_and_an_empty_mask_has_no_nuclei() -> None:
    mask = _disc((32, 32), (16, 16), 6)
    mask[1, 1] = True
    assert split_instances(mask, WatershedParameters(min_area=8)).max() == 1
    assert split_instances(mask, WatershedParameters(min_area=0)).max() == 2
    assert split_instances(np.zeros((8, 8), bool)).max() == 0


def _planar_result(mask: np.ndarray, pixel_mm: tuple[float, float] | None) -> VolumeResult:
    """A one-slice result whose segmentation is `mask` (rows, cols as the image shows it)."""
    volume = image_volume(mask.astype(np.uint8) * 200, Path("x.png"), "PNG", pixel_mm)
    result = VolumeResult(volume, "axial", 2)
    seg = np.zeros(volume.shape, np.uint8)
    set_slice(seg, "axial", 0, mask.astype(np.uint8))
    result.segmentation = seg
    result.probabilities[..., 1] = seg * 0.9
    result.probabilities[..., 0] = 1 - result.probabilities[..., 1]
    unc = np.zeros(volume.shape, np.float32)
    set_slice(unc, "axial", 0, np.where(mask, 0.25, 0.0).astype(np.float32))
    result.maps["entropy"] = unc
    result.finished[:] = True
    return result


def test_instances_of_a_2d_result_their_table_and_their_place_in_the_image() -> None:
    shape = (40, 60)
    mask = _disc(shape, (10, 45), 5) | _disc(shape, (30, 12), 4)
    result = _planar_result(mask, None)
    found = instances(result)
    assert found.count == 2 and found.area_unit == "px"
    first = found.nuclei[0]  # raster order: the upper one
    assert first.centroid == pytest.approx((10.0, 45.0)) and first.pixels == _disc(shape, (10, 45), 5).sum()
    assert first.mean_uncertainty == pytest.approx(0.25) and first.mean_probability == pytest.approx(0.9)
    # the centre voxel is shown at the nucleus' own pixel in the image's view
    assert display_position(result.volume.shape, "axial", first.centre) == (10, 45)
    assert np.array_equal(get_slice(instance_volume(result, found), "axial", 0), found.labels)
    table = nuclei_csv(found).splitlines()
    assert table[0] == "nucleus,area_px,centroid_row,centroid_col,mean_entropy,mean_probability"
    assert len(table) == 3 and table[1].startswith(f"1,{first.pixels},10.0,45.0,")


def test_areas_are_in_square_micrometres_when_the_pixel_size_is_known() -> None:
    mask = _disc((30, 30), (15, 15), 5)
    found = instances(_planar_result(mask, (0.0005, 0.0005)))  # 0.5 µm pixels
    assert found.area_unit == "µm²"
    assert found.nuclei[0].area == pytest.approx(mask.sum() * 0.25)
    assert nuclei_csv(found).splitlines()[0].split(",")[1] == "area_um2"
