"""Nuclei as instances: touching nuclei split apart, counted, and listed one by one.

The network gives a foreground probability; the paper's third task is nuclei *detection*, so the
foreground is cut into one region per nucleus by the distance-transform watershed that is standard
for the Data Science Bowl 2018: the distance of each foreground pixel to the background peaks near a
nucleus' centre, peaks at least `h` pixels high (after smoothing by `sigma`) seed one nucleus each,
and the watershed of the inverted distance grows them until they meet. Regions smaller than
`min_area` pixels are dropped as debris. The parameters are chosen on the nuclei validation split
(`python -m training.nuclei_instances choose`); what was chosen and measured is in the README.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from engine.files import atomic_write
from engine.images2d import pixel_area
from engine.model_store import ModelSpec
from engine.pipeline import VolumeResult
from engine.preprocessing import get_slice, set_slice
from engine.volume import ScanError, save_nifti

INSTANCES = "instances.nii.gz"
NUCLEI_TABLE = "nuclei.csv"


@dataclass(frozen=True)
class WatershedParameters:
    """How foreground is split into nuclei (see the module's docstring)."""

    h: float = 0.5  # pixels of distance a peak must rise above its surroundings to seed a nucleus
    sigma: float = 2.0  # Gaussian smoothing (pixels) of the distance map before peaks are found
    min_area: int = 24  # pixels; smaller regions are debris


CHOSEN = WatershedParameters()  # the best of `training.nuclei_instances.GRID` on validation


@dataclass(frozen=True)
class Nucleus:
    """One nucleus of a 2D image; positions in the image's own pixel grid (row down, column across)."""

    label: int  # its value in the instance map
    pixels: int
    area: float  # in `Instances.area_unit`
    centroid: tuple[float, float]  # (row, column)
    centre: tuple[int, int, int]  # canonical voxel inside it nearest the centroid, to centre views on
    mean_uncertainty: float  # of the chosen map
    mean_probability: float  # foreground probability


@dataclass(frozen=True)
class Instances:
    """The instance map of a 2D result (display orientation: the image as stored) and its nuclei."""

    labels: np.ndarray  # (rows, cols) int32, 0 background, 1..n nuclei
    nuclei: list[Nucleus]
    area_unit: str  # "px" or "µm²"
    map_name: str

    @property
    def count(self) -> int:
        return len(self.nuclei)


def detects_instances(spec: ModelSpec) -> bool:
    """Models whose foreground is made of countable objects: 2D microscopy (nuclei)."""
    return spec.card is not None and spec.card.modality == "SM" and spec.card.dimensionality == "2D"


def split_instances(foreground: np.ndarray, params: WatershedParameters = CHOSEN) -> np.ndarray:
    """Instance labels (int32, 1..n in raster order) of a 2D foreground mask, touching objects apart."""
    return drop_small(watershed_regions(foreground, params.h, params.sigma), params.min_area)


def watershed_regions(foreground: np.ndarray, h: float, sigma: float) -> np.ndarray:
    """The watershed of a mask's smoothed distance map from its `h`-high peaks (one region per peak)."""
    mask = np.asarray(foreground, bool)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    distance = ndimage.distance_transform_edt(mask)
    smooth = ndimage.gaussian_filter(distance, sigma) if sigma > 0 else distance
    markers, n = ndimage.label(h_maxima(smooth, h) & mask)
    # A component too flat to hold an h-high peak is one nucleus: it seeds itself.
    components, _ = ndimage.label(mask)
    seeded = np.zeros(components.max() + 1, bool)
    seeded[np.unique(components[markers > 0])] = True
    unseeded = ~seeded[components] & mask
    extra, _ = ndimage.label(unseeded)
    markers[unseeded] = extra[unseeded] + n
    return watershed(-smooth, markers, mask=mask).astype(np.int32)


def drop_small(regions: np.ndarray, min_area: int) -> np.ndarray:
    """Regions under `min_area` pixels removed, the rest numbered 1..n in raster order of their first
    pixel (so the map reads the same every run)."""
    labels = regions.copy()
    if min_area > 1:
        sizes = np.bincount(labels.ravel())
        labels[sizes[labels] < min_area] = 0
    values, first = np.unique(labels.ravel(), return_index=True)
    order = values[np.argsort(first)]
    order = order[order > 0]
    lookup = np.zeros(int(labels.max()) + 1, np.int32)
    lookup[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lookup[labels]


def instances(
    result: VolumeResult, map_name: str = "entropy", params: WatershedParameters = CHOSEN
) -> Instances:
    """The nuclei of a one-slice result: its foreground (the segmentation) split into instances."""
    if result.segmentation.shape[2] != 1 or result.axis != "axial":
        raise ScanError(f"{result.volume.source}: nuclei are counted on 2D images (one axial slice)")
    foreground = get_slice(result.segmentation, "axial", 0) > 0
    labels = split_instances(foreground, params)
    uncertainty = get_slice(result.maps[map_name], "axial", 0)
    probability = get_slice(result.foreground_probability(), "axial", 0)
    per_pixel, unit = pixel_area(result.volume)
    n = int(labels.max())
    index = np.arange(1, n + 1)
    pixels = ndimage.sum_labels(np.ones_like(labels), labels, index) if n else []
    mean_u = ndimage.mean(uncertainty, labels, index) if n else []
    mean_p = ndimage.mean(probability, labels, index) if n else []
    centroids = ndimage.center_of_mass(np.ones_like(labels), labels, index) if n else []
    shape = result.volume.shape
    nuclei = []
    for k, (count, u, p, (r, c)) in enumerate(zip(pixels, mean_u, mean_p, centroids, strict=True), start=1):
        rows, cols = np.nonzero(labels == k)
        nearest = int(np.argmin((rows - r) ** 2 + (cols - c) ** 2))
        row, col = int(rows[nearest]), int(cols[nearest])
        nuclei.append(
            Nucleus(
                label=k,
                pixels=int(count),
                area=float(count) * per_pixel,
                centroid=(float(r), float(c)),
                centre=(shape[0] - 1 - col, shape[1] - 1 - row, 0),
                mean_uncertainty=float(u),
                mean_probability=float(p),
            )
        )
    return Instances(labels.astype(np.int32), nuclei, unit, map_name)


def instance_volume(result: VolumeResult, found: Instances) -> np.ndarray:
    """The instance map in the result's canonical voxel order (to write it aligned with the scan)."""
    out = np.zeros(result.volume.shape, np.int32)
    set_slice(out, "axial", 0, found.labels)
    return out


def nuclei_csv(found: Instances) -> str:
    """The per-nucleus table: id, area, centroid (row, column in the image's pixels), mean uncertainty."""
    area = "area_px" if found.area_unit == "px" else "area_um2"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["nucleus", area, "centroid_row", "centroid_col", f"mean_{found.map_name}", "mean_probability"]
    )
    for n in found.nuclei:
        writer.writerow(
            [
                n.label,
                n.pixels if found.area_unit == "px" else round(n.area, 3),
                round(n.centroid[0], 2),
                round(n.centroid[1], 2),
                round(n.mean_uncertainty, 6),
                round(n.mean_probability, 4),
            ]
        )
    return buffer.getvalue()


def write_instances(
    result: VolumeResult, spec: ModelSpec, out_dir: Path, map_name: str = "entropy"
) -> tuple[dict[str, Path], dict]:
    """For a nuclei model on a 2D image: the instance map (NIfTI aligned with the scan) and the nuclei
    table (CSV) in `out_dir`, and what summary.json says of them. Nothing for any other model or scan."""
    if not detects_instances(spec) or result.segmentation.shape[2] != 1:
        return {}, {}
    found = instances(result, map_name)
    out_dir = Path(out_dir)
    paths = {
        "instances": save_nifti(result.volume, instance_volume(result, found), out_dir / INSTANCES, np.int32)
    }
    table = out_dir / NUCLEI_TABLE
    try:
        atomic_write(table, lambda tmp: Path(tmp).write_text(nuclei_csv(found), encoding="utf-8"), ".csv")
    except OSError as exc:
        raise ScanError(f"{table}: could not write ({exc.strerror or exc})") from None
    paths["nuclei"] = table
    entry = {
        "count": found.count,
        "instance_map": INSTANCES,
        "table": NUCLEI_TABLE,
        "method": "distance-transform watershed",
        "parameters": {"h": CHOSEN.h, "sigma": CHOSEN.sigma, "min_area_px": CHOSEN.min_area},
    }
    return paths, {"nuclei": entry}
