"""Per-lesion findings and the slice ranking, on volumes whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from engine.findings import lesions, slice_ranking
from engine.pipeline import VolumeResult
from engine.volume import Volume


def _result(spacing=(0.5, 0.5, 2.0)) -> VolumeResult:
    volume = Volume(np.zeros((40, 40, 10), np.float32), np.diag([*spacing, 1.0]))
    result = VolumeResult(volume, "axial", 2)
    result.finished[:] = True
    seg = result.segmentation
    seg[2:12, 2:6, 1:4] = 1  # a 10 x 4 voxel box over slices 1..3: 5 mm x 2 mm in plane
    seg[30:33, 30:33, 7] = 1  # a small one on slice 7
    result.maps["entropy"][seg > 0] = 0.1
    result.maps["entropy"][30:33, 30:33, 7] = 0.6
    result.probabilities[..., 1] = (seg > 0).astype(np.float32)
    result.probabilities[..., 0] = 1 - result.probabilities[..., 1]
    return result


def test_two_components_with_size_extent_and_uncertainty():
    result = _result()
    found = lesions(result, review_above=0.3)
    assert len(found) == 2
    small, big = found  # most uncertain first
    assert (small.voxels, big.voxels) == (9, 120)
    assert big.volume_ml == pytest.approx(120 * 0.5 * 0.5 * 2.0 / 1000)
    assert (big.first_slice, big.last_slice) == (1, 3) and (small.first_slice, small.last_slice) == (7, 7)
    assert big.diameter_mm == pytest.approx(np.hypot(4.5, 1.5), abs=0.6)  # Feret across pixel centres
    assert small.mean_uncertainty == pytest.approx(0.6) and small.review and not big.review
    assert result.segmentation[small.centre] == 1 and result.segmentation[big.centre] == 1


def test_no_threshold_flags_nothing():
    assert not any(lesion.review for lesion in lesions(_result()))


def test_slices_rank_by_uncertainty_near_the_segmentation_not_over_the_whole_slice():
    result = _result()
    result.maps["entropy"][:, :, 5] = 0.3  # uniformly uncertain slice, nothing segmented or considered there
    ranking = slice_ranking(result)
    assert [s for s, _ in ranking][0] == 7
    assert 5 not in [s for s, _ in ranking]  # no region of interest: not a place to look
    assert set(s for s, _ in ranking) == {1, 2, 3, 7}


def test_a_considered_region_far_from_the_segmentation_is_not_a_place_to_look():
    """The orbits case: foreground probability the post-processing cut away, very uncertain."""
    result = _result()
    far = (slice(20, 24), slice(2, 6), 9)  # slice 9: nothing segmented, probability 0.4, entropy 0.69
    result.probabilities[far + (1,)] = 0.4
    result.probabilities[far + (0,)] = 0.6
    result.maps["entropy"][:, :, 9] = 0.69
    assert 9 not in [s for s, _ in slice_ranking(result)]
    # next to the segmentation, the same hesitation is where to look
    near = (slice(12, 14), slice(2, 6), 3)
    result.probabilities[near + (1,)] = 0.4
    result.maps["entropy"][near] = 0.69
    assert slice_ranking(result)[0][0] == 3


def test_with_nothing_segmented_the_hesitations_are_all_there_is():
    result = _result()
    result.segmentation[:] = 0
    result.probabilities[..., 1], result.probabilities[..., 0] = 0.0, 1.0
    result.probabilities[20:24, 2:6, 9, 1], result.probabilities[20:24, 2:6, 9, 0] = 0.4, 0.6
    result.maps["entropy"][20:24, 2:6, 9] = 0.69
    assert [s for s, _ in slice_ranking(result)] == [9]
