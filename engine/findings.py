"""What a reader reviews: each lesion of a result with its size and uncertainty, and the slices to look at.

Uncertainty is averaged where it can mean something: inside a lesion, or in the region of interest
of a slice (the segmentation and whatever the model gave some foreground probability next to it,
widened by `NEAR_MM` in the slice plane). Averaged over a whole head, nearly every voxel is trivially certain
background and the signal is washed out (the orbits outranked the lesion).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.measure import regionprops

from engine.pipeline import VolumeResult
from engine.preprocessing import AXES, get_slice

NEAR_MM = 10.0  # how far around the segmentation a slice's region of interest reaches
CONSIDERED = 0.1  # foreground probability above which the model "considered" a voxel


@dataclass(frozen=True)
class Lesion:
    """One connected component of one label (26-connected in 3D)."""

    label: int
    voxels: int
    volume_ml: float
    diameter_mm: float  # largest in-plane diameter over its slices (maximum Feret diameter)
    first_slice: int  # along the result's slice axis
    last_slice: int
    centre: tuple[int, int, int]  # canonical voxel nearest its centroid that lies inside it
    mean_uncertainty: float
    review: bool  # its uncertainty is above the model's review threshold


def _in_plane_spacing(result: VolumeResult) -> tuple[float, float]:
    """Row and column pixel size of a display slice along the result's axis (rows, cols of `get_slice`)."""
    k = AXES[result.axis]
    i, j = [a for a in range(3) if a != k]
    spacing = result.volume.spacing
    return spacing[j], spacing[i]  # get_slice swaps the two remaining axes


def _largest_diameter(mask: np.ndarray, axis: str, span: range, pixel: tuple[float, float]) -> float:
    best = 0.0
    for s in span:
        cut = get_slice(mask, axis, s)
        if cut.any():
            best = max(best, float(regionprops(cut.astype(np.uint8), spacing=pixel)[0].feret_diameter_max))
    return best


def lesions(
    result: VolumeResult, map_name: str = "entropy", review_above: float | None = None
) -> list[Lesion]:
    """Every lesion of every foreground label, most uncertain first.

    `review_above`: the mean uncertainty above which a lesion is flagged for review (the model's
    threshold, fitted on validation cases); None flags none.
    """
    uncertainty = result.maps[map_name]
    k = AXES[result.axis]
    pixel = _in_plane_spacing(result)
    found = []
    for label in range(1, result.num_classes):
        components, n = ndimage.label(result.segmentation == label, structure=np.ones((3, 3, 3)))
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            if box is None:
                continue
            mask = np.zeros(components.shape, bool)
            mask[box] = components[box] == index
            voxels = int(mask.sum())
            coords = np.argwhere(mask)
            centre = coords[np.argmin(((coords - coords.mean(0)) ** 2).sum(1))]
            span = range(box[k].start, box[k].stop)
            mean_u = float(uncertainty[mask].mean())
            found.append(
                Lesion(
                    label=label,
                    voxels=voxels,
                    volume_ml=voxels * result.volume.voxel_volume_ml,
                    diameter_mm=_largest_diameter(mask, result.axis, span, pixel),
                    first_slice=span.start,
                    last_slice=span.stop - 1,
                    centre=(int(centre[0]), int(centre[1]), int(centre[2])),
                    mean_uncertainty=mean_u,
                    review=review_above is not None and mean_u > review_above,
                )
            )
    return sorted(found, key=lambda lesion: -lesion.mean_uncertainty)


def attended(segmentation: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """The segmentation, and what the model considered where it touches the segmentation.

    Considered regions that the post-processing cut away (a false region far from the lesion) are not
    where a reader should look; they count only when nothing was segmented at all.
    """
    kept = segmentation > 0
    considered = foreground > CONSIDERED
    if not kept.any():
        return considered
    regions, _ = ndimage.label(considered | kept, structure=np.ones((3,) * kept.ndim))
    return kept | (considered & np.isin(regions, np.unique(regions[kept])))


def region_of_interest(seeds: np.ndarray, pixel: tuple[float, float]) -> np.ndarray:
    """A slice's voxels within `NEAR_MM` of its attended voxels (`attended`)."""
    if not seeds.any():
        return seeds
    return ndimage.distance_transform_edt(~seeds, sampling=pixel) <= NEAR_MM


def slice_ranking(result: VolumeResult, map_name: str = "entropy") -> list[tuple[int, float]]:
    """Finished slices with a region of interest, by decreasing mean uncertainty inside it."""
    pixel = _in_plane_spacing(result)
    uncertainty = result.maps[map_name]
    seeds = attended(result.segmentation, result.foreground_probability())
    scores = []
    for s in map(int, np.flatnonzero(result.finished)):
        roi = region_of_interest(get_slice(seeds, result.axis, s), pixel)
        if roi.any():
            scores.append((s, float(get_slice(uncertainty, result.axis, s)[roi].mean())))
    return sorted(scores, key=lambda sv: -sv[1])
