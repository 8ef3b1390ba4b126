"""The DICOM series a scan was read from, as exports need it: the source instances' headers (to reference
them and copy the patient and study), and each result map cut into frames that lie exactly on the source
slices, pixel for pixel, whatever the series' orientation and file order.

The frames are found by geometry, not by file order: every source pixel's position (Image Position and
Orientation, Pixel Spacing) is taken to the scan's canonical voxel grid, where the result maps live.
"""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from engine.volume import DICOM_FILES, ScanError, Volume

# How far (in voxels) a source pixel may lie from the scan's grid before we refuse: the scan was read
# from these files, so anything beyond rounding means the files changed since.
_GRID_TOLERANCE = 0.1
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
NOT_DICOM = (
    "cannot export a DICOM SEG: this scan was not read from a DICOM series, and a SEG must reference the "
    "DICOM images it segments (open the DICOM folder, or export NIfTI or seg.nrrd)"
)
NOT_A_SERIES = (
    "cannot export a DICOM SEG of a single 2D DICOM image: the SEG references the slices of a DICOM series "
    "placed in the patient (export NIfTI or seg.nrrd)"
)


def is_dicom(volume: Volume) -> bool:
    """Whether the scan came from a DICOM series whose files we know."""
    return bool(volume.meta.get(DICOM_FILES))


def why_not_dicom(volume: Volume) -> str:
    """Why a DICOM SEG of `volume` cannot be written: not DICOM at all, or a single 2D DICOM image."""
    return NOT_A_SERIES if volume.meta.get("format") == "DICOM" and volume.meta.get("planar") else NOT_DICOM


def source_headers(volume: Volume) -> list[Dataset]:
    """The source instances' headers (no pixel data), in the order the series was read.

    Raises `ScanError` for a scan not read from DICOM, or a series whose files are gone or changed.
    """
    if not is_dicom(volume):
        raise ScanError(f"{volume.source}: {why_not_dicom(volume)}")
    headers: list[Dataset] = []
    for name in volume.meta[DICOM_FILES]:
        try:
            header = pydicom.dcmread(name, stop_before_pixels=True)
        except (OSError, InvalidDicomError) as exc:
            raise ScanError(
                f"{name}: the source DICOM file can no longer be read ({exc}); open the series again"
            ) from None
        for keyword in ("SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if keyword not in header:
                raise ScanError(f"{name}: the source DICOM image has no {keyword}; it cannot be referenced")
        if not header.get("FrameOfReferenceUID"):
            raise ScanError(
                f"{name}: the source DICOM image has no Frame of Reference UID, so no DICOM object can "
                "share its geometry"
            )
        headers.append(header)
    _fill_slice_thickness(headers)
    return headers


def _fill_slice_thickness(headers: list[Dataset]) -> None:
    """Slice Thickness is Type 2 (may be empty) in the source, but a SEG's pixel measures need one:
    where it is missing, the distance between the source slices stands in for it (in memory only)."""
    if all(h.get("SliceThickness") for h in headers):
        return
    normal = np.cross(*np.reshape(np.asarray(headers[0].ImageOrientationPatient, float), (2, 3)))
    positions = sorted(float(np.dot(np.asarray(h.ImagePositionPatient, float), normal)) for h in headers)
    spacing = float(np.median(np.diff(positions))) if len(positions) > 1 else 1.0
    for header in headers:
        if not header.get("SliceThickness"):
            header.SliceThickness = round(spacing, 6)


def _pixel_indices(volume: Volume, header: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical voxel indices (i, j, k), each (rows, columns), of every pixel of one source image."""
    rows, columns = int(header.Rows), int(header.Columns)
    cosines = np.asarray(header.ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in header.PixelSpacing)
    to_index = np.linalg.inv(volume.affine)
    origin = to_index @ np.append(_LPS_TO_RAS @ np.asarray(header.ImagePositionPatient, float), 1.0)
    # Along a row (the column index grows) DICOM moves by the first cosine triplet times the column
    # spacing; down a column by the second triplet times the row spacing.
    step_column = to_index[:3, :3] @ (_LPS_TO_RAS @ cosines[:3]) * column_spacing
    step_row = to_index[:3, :3] @ (_LPS_TO_RAS @ cosines[3:]) * row_spacing
    r = np.arange(rows, dtype=float)[:, None, None]
    c = np.arange(columns, dtype=float)[None, :, None]
    exact = origin[:3] + r * step_row + c * step_column
    index = np.rint(exact).astype(np.int64)
    off = float(np.abs(exact - index).max())
    inside = (index >= 0).all() and (index < np.array(volume.shape)).all()
    if off > _GRID_TOLERANCE or not inside:
        raise ScanError(
            f"{header.get('SOPInstanceUID', '?')}: the source slice does not lie on the scan's voxel grid "
            "(the DICOM files changed since the scan was read); open the series again"
        )
    return index[..., 0], index[..., 1], index[..., 2]


def source_frames(volume: Volume, headers: list[Dataset], array: np.ndarray) -> np.ndarray:
    """`array` (canonical order, the scan's shape, optionally a trailing channel axis) cut into one frame
    per source image: (frames, rows, columns[, channels]), frame f lying on `headers[f]`'s slice."""
    if tuple(array.shape[:3]) != volume.shape:
        raise ScanError(
            f"{volume.source}: map of shape {array.shape} does not match the scan's {volume.shape}"
        )
    return np.stack([array[_pixel_indices(volume, h)] for h in headers])
