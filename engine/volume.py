"""Scans in and out: one `Volume` type, read from NIfTI, DICOM series, MHA/MHD or NRRD, written as NIfTI.

Orientation is handled once, here. Every reader returns the voxels reoriented (flips and axis
permutations only, never resampling) to RAS+ canonical order: index i grows towards the patient's
Right, j towards Anterior, k towards Superior. The volume remembers how to undo that, so what we
write has the voxel order and affine of the file that was read, and overlays it exactly.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

from engine.dicom_series import DicomSeries, list_series
from engine.files import atomic_write

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")  # 2D images: engine.images2d
SCAN_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + IMAGE_SUFFIXES
_RAS = ornt.axcodes2ornt(("R", "A", "S"))
# The largest scan we read: 2^28 voxels (e.g. 512 x 512 x 1024), about 1 GiB as float32 before the
# result maps (several times that) are allocated. A header declaring more is refused before any read.
MAX_VOXELS = 2**28
# What a DICOM series says about itself, kept in `Volume.meta` (the model gate reads them).
DICOM_DESCRIPTORS = {
    "body_part": "0018|0015",
    "series_description": "0008|103e",
    "patient_id": "0010|0020",
    "study_date": "0008|0020",
    "patient_name": "0010|0010",
    "study_description": "0008|1030",
}
# The series' files in reading order, kept in `Volume.meta` so exports can reference the source
# instances (engine/dicom_source.py reads their headers).
DICOM_FILES = "dicom_files"


class ScanError(Exception):
    """A scan that cannot be read or written; the message names the file and the problem."""


@dataclass
class Volume:
    """A 3D scan in RAS+ canonical voxel order.

    `data` is float32 (i, j, k); `affine` maps canonical voxel indices to RAS millimetres.
    `source_affine` and `source_shape` describe the file it came from, so that
    results can be written back in that file's own voxel order.
    """

    data: np.ndarray
    affine: np.ndarray
    source: str = ""
    modality: str = "unknown"
    source_affine: np.ndarray | None = None
    source_shape: tuple[int, ...] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source_affine is None:
            self.source_affine = self.affine.copy()
            self.source_shape = tuple(self.data.shape)

    @property
    def shape(self) -> tuple[int, int, int]:
        i, j, k = self.data.shape
        return int(i), int(j), int(k)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical axes (i, j, k)."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def world(self, ijk: tuple[float, float, float]) -> np.ndarray:
        """RAS millimetres of a canonical voxel index."""
        return (self.affine @ np.array([*ijk, 1.0]))[:3]

    def to_source_order(self, array: np.ndarray) -> np.ndarray:
        """Undo the canonical reorientation so `array` has the voxel order of the source file."""
        inverse = ornt.ornt_transform(_RAS, ornt.io_orientation(self.source_affine))
        return np.ascontiguousarray(ornt.apply_orientation(array, inverse))


def _canonical(data: np.ndarray, affine: np.ndarray, source: str, modality: str, meta: dict) -> Volume:
    """Reorient voxels to RAS+ by flips and permutations, keeping the source geometry to undo it."""
    transform = ornt.ornt_transform(ornt.io_orientation(affine), _RAS)
    canonical = np.ascontiguousarray(ornt.apply_orientation(data, transform))
    new_affine = affine @ ornt.inv_ornt_aff(transform, data.shape)
    return Volume(
        canonical.astype(np.float32, copy=False),
        new_affine,
        source,
        modality,
        affine.copy(),
        tuple(data.shape),
        meta,
    )


def _check_values(data: np.ndarray, path: str) -> np.ndarray:
    if data.size == 0:
        raise ScanError(f"{path}: the image holds no voxels")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int((~finite).sum())
        if bad == data.size:
            raise ScanError(f"{path}: every voxel is NaN or infinite")
        raise ScanError(f"{path}: {bad} voxels are NaN or infinite; fix the file or convert it first")
    return data


def _pick_3d(data: np.ndarray, path: str, channel: int | None) -> np.ndarray:
    """Reduce 4D (channels or time points) to 3D by an explicit choice, or say how to choose."""
    data = np.asarray(data)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        raise ScanError(f"{path}: this is a 2D image {data.shape}; a 3D volume is needed")
    if data.ndim < 2:
        raise ScanError(f"{path}: this is not an image volume (shape {data.shape})")
    if data.ndim == 3 and channel is not None:
        raise ScanError(f"{path}: the volume has a single channel; --channel is for 4D scans, leave it out")
    if data.ndim == 4:
        n = data.shape[3]
        if channel is None:
            raise ScanError(
                f"{path}: the volume has {n} channels or time points; choose one (--channel 0..{n - 1})"
            )
        if not 0 <= channel < n:
            raise ScanError(f"{path}: channel {channel} does not exist; it has {n} (0..{n - 1})")
        data = data[..., channel]
    elif data.ndim > 4:
        raise ScanError(f"{path}: {data.ndim}D images are not supported (shape {data.shape})")
    return data


def _check_declared_size(shape: tuple[int, ...], path: Path) -> None:
    """Refuse a header that declares more voxels than `MAX_VOXELS`, before anything is allocated."""
    voxels = int(np.prod([max(int(n), 1) for n in shape], dtype=np.float64))
    if voxels > MAX_VOXELS:
        size = " x ".join(str(int(n)) for n in shape)
        raise ScanError(
            f"{path}: the header declares {size} voxels, more than the {MAX_VOXELS:,} this program reads"
        )


@contextlib.contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """nibabel logs header problems to stderr before raising; our own one-line message says it instead."""
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _nifti_header(path: Path) -> nib.Nifti1Image:
    """The image with its header checked: readable, of a sane size, and (uncompressed) backed by data."""
    try:
        with _quiet_nibabel():
            img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image):  # NIfTI-2 is a subclass
            raise ValueError(f"a {type(img).__name__}, not a NIfTI image")
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise ScanError(f"{path}: the file is truncated or not a valid NIfTI ({exc})") from None
    except (
        nib.filebasedimages.ImageFileError,
        nib.spatialimages.HeaderDataError,
        ValueError,
        TypeError,
        KeyError,
        OverflowError,
    ) as exc:
        raise ScanError(f"{path}: not a readable NIfTI image ({str(exc).splitlines()[0][:200]})") from None
    _check_declared_size(img.shape, path)
    if not path.name.lower().endswith(".gz"):
        header = img.header
        needed = int(header.get_data_offset()) + int(np.prod(img.shape)) * header.get_data_dtype().itemsize
        if needed > path.stat().st_size:
            raise ScanError(
                f"{path}: the file is truncated: the header declares {needed:,} bytes, "
                f"the file holds {path.stat().st_size:,}"
            )
    return img


def _read_nifti(path: Path, channel: int | None) -> Volume:
    img = _nifti_header(path)
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise ScanError(f"{path}: the file is truncated or not a valid NIfTI ({exc})") from None
    except (nib.spatialimages.HeaderDataError, ValueError, TypeError) as exc:
        raise ScanError(f"{path}: not a readable NIfTI image ({str(exc).splitlines()[0][:200]})") from None
    except MemoryError:
        raise ScanError(f"{path}: the image does not fit in memory") from None
    if data.ndim == 2:
        raise ScanError(f"{path}: this is a 2D image {data.shape}; a 3D volume is needed")
    if np.iscomplexobj(data) or data.dtype.fields is not None:
        raise ScanError(f"{path}: complex or RGB voxels are not supported ({data.dtype})")
    data = _pick_3d(data, str(path), channel)
    affine = img.affine
    if affine is None or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ScanError(f"{path}: the header's affine is missing or singular")
    data = _check_values(np.asarray(data, dtype=np.float32), str(path))
    meta = {
        "format": "NIfTI",
        "qform_code": int(img.header["qform_code"]),
        "sform_code": int(img.header["sform_code"]),
    }
    return _canonical(data, affine.astype(np.float64), str(path), "unknown", meta)


def _itk_to_volume(image, path: str, channel: int | None, fmt: str) -> Volume:
    import SimpleITK as sitk

    if image.GetDimension() == 2:
        raise ScanError(f"{path}: this is a 2D image {image.GetSize()}; a 3D volume is needed")
    if channel is not None and image.GetNumberOfComponentsPerPixel() == 1 and image.GetDimension() == 3:
        raise ScanError(f"{path}: the volume has a single channel; --channel is for 4D scans, leave it out")
    if image.GetNumberOfComponentsPerPixel() > 1:
        n = image.GetNumberOfComponentsPerPixel()
        if channel is None:
            raise ScanError(
                f"{path}: the image has {n} components per voxel; choose one (--channel 0..{n - 1})"
            )
        if not 0 <= channel < n:
            raise ScanError(f"{path}: channel {channel} does not exist; it has {n} (0..{n - 1})")
        image = sitk.VectorIndexSelectionCast(image, channel)
    if image.GetDimension() == 4:
        n = image.GetSize()[3]
        if channel is None:
            raise ScanError(f"{path}: the volume has {n} time points; choose one (--channel 0..{n - 1})")
        if not 0 <= channel < n:
            raise ScanError(f"{path}: channel {channel} does not exist; it has {n} (0..{n - 1})")
        size = list(image.GetSize())
        size[3] = 0
        image = sitk.Extract(image, size, [0, 0, 0, channel])
    if image.GetDimension() != 3:
        raise ScanError(f"{path}: {image.GetDimension()}D images are not supported")
    # SimpleITK arrays are (z, y, x); the geometry is LPS. Bring both to (x, y, z) and RAS.
    data = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)).astype(np.float32)
    data = _check_values(data, path)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.array(image.GetSpacing(), dtype=np.float64)
    origin = np.array(image.GetOrigin(), dtype=np.float64)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = origin
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    modality = "unknown"
    meta = {"format": fmt}
    return _canonical(data, affine, path, modality, meta)


@contextlib.contextmanager
def _itk_path(path: Path) -> Iterator[str]:
    """A name SimpleITK can take. Its C++ core aborts the whole process on a name that is not valid
    UTF-8, so such a file or folder is handed over through an ASCII-named link to it."""
    try:
        os.fsencode(path).decode("utf-8")
        yield str(path)
        return
    except UnicodeDecodeError:
        pass
    with tempfile.TemporaryDirectory(prefix="aimc-scan-") as tmp:
        link = Path(tmp) / ("scan" + "".join(path.suffixes[-2:]).encode("ascii", "replace").decode())
        link.symlink_to(path.resolve())
        yield str(link)


def _read_itk(path: Path, channel: int | None) -> Volume:
    import SimpleITK as sitk

    with _itk_path(path) as name:
        try:
            info = sitk.ImageFileReader()
            info.SetFileName(name)
            info.ReadImageInformation()
            _check_declared_size(info.GetSize(), path)
            image = sitk.ReadImage(name)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise ScanError(f"{path}: not a readable image ({first[:200]})") from None
        except MemoryError:
            raise ScanError(f"{path}: the image does not fit in memory") from None
    return _itk_to_volume(image, str(path), channel, path.suffix.lstrip(".").upper())


def _check_even_spacing(reader, files: list[str], folder: Path) -> None:
    """Refuse a series with missing, unevenly spaced or repeated slices: read as a regular grid, every
    distance and volume past the gap would be wrong. Positions come from each file's ImagePositionPatient."""
    positions, normal = [], None
    for i in range(len(files)):
        try:
            position = [float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")]
            cosines = [float(v) for v in reader.GetMetaData(i, "0020|0037").split("\\")]
        except (RuntimeError, ValueError):
            return  # no geometry per slice to check: ITK's own spacing stands
        if normal is None:
            normal = np.cross(cosines[:3], cosines[3:])
        positions.append(float(np.dot(position, normal)))
    gaps = np.diff(np.sort(positions))
    if len(gaps) and gaps.min() < 1e-3:
        raise ScanError(
            f"{folder}: the DICOM series has {len(positions)} slices at only {int((gaps >= 1e-3).sum()) + 1} "
            "positions: it holds several acquisitions (echoes, time points) or repeated slices; "
            "read as one volume it would be wrong"
        )
    if len(gaps) and (gaps.max() - gaps.min()) > 0.01 * np.median(gaps) + 1e-3:
        raise ScanError(
            f"{folder}: the DICOM series has uneven slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm): "
            "slices are missing or the series mixes acquisitions; distances and volumes would be wrong"
        )


def _utf8(name: bytes) -> bool:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@contextlib.contextmanager
def _itk_folder(folder: Path) -> Iterator[tuple[str, Callable[[str], str]]]:
    """A DICOM folder's name SimpleITK can take, and how to turn a file name it returns back into ours.

    GDCM lists the folder itself: it aborts the process on a folder name that is not valid UTF-8, and a
    file of such a name in the folder comes back as a name SimpleITK then refuses. Such a folder is
    handed over as a temporary folder of ASCII-named links to its files."""
    raw = os.fsencode(folder)
    try:
        entries = os.listdir(raw)
    except OSError as exc:
        raise ScanError(f"{folder}: cannot be opened ({exc.strerror or exc})") from None
    if _utf8(raw) and all(_utf8(entry) for entry in entries):
        yield str(folder), str
        return
    with tempfile.TemporaryDirectory(prefix="aimc-series-") as tmp:
        real = {}
        for k, entry in enumerate(sorted(entries)):
            target = os.path.join(os.path.abspath(raw), entry)
            if os.path.isfile(target):
                os.symlink(target, os.path.join(tmp, f"{k:06d}.dcm"))
                real[f"{k:06d}.dcm"] = os.fsdecode(target)
        yield tmp, lambda name: real.get(os.path.basename(name), name)


def _series_in(name: str, folder: Path) -> list[DicomSeries]:
    try:
        return list_series(name)
    except RuntimeError as exc:
        raise ScanError(f"{folder}: a DICOM header could not be read ({str(exc).strip()[:200]})") from None


def list_dicom_series(path: str | os.PathLike) -> list[DicomSeries]:
    """The series of a DICOM folder (or of a .dcm file's folder), most slices first; headers only."""
    p = Path(path)
    folder = p.parent if p.is_file() else p
    with _itk_folder(folder) as (name, real):
        found = _series_in(name, folder)
    return [replace(s, files=tuple(real(f) for f in s.files)) for s in found]


def _read_dicom_series(folder: Path, channel: int | None, series: str | None = None) -> Volume:
    """The series `series` (a SeriesInstanceUID) of `folder`; without one, the one with the most slices
    (`meta["series_count"]` says how many there were to choose from)."""
    import SimpleITK as sitk

    with _itk_folder(folder) as (name, real):
        # ITK's warnings go to stderr beside our one line; what they warn of (uneven spacing) we say ourselves
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        found = _series_in(name, folder)
        if not found:
            raise ScanError(f"{folder}: the folder holds no DICOM series")
        chosen = found[0] if series is None else next((s for s in found if s.uid == series), None)
        if chosen is None:
            raise ScanError(f"{folder}: no DICOM series {series}; it holds {', '.join(s.uid for s in found)}")
        files = chosen.files
        reader = sitk.ImageSeriesReader()
        if len(files) < 2:  # one image: a 2D picture, not a volume
            from engine.images2d import read_dicom_image

            return read_dicom_image(Path(real(files[0])), channel)
        reader.SetFileNames(files)
        reader.MetaDataDictionaryArrayUpdateOn()
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise ScanError(
                f"{folder}: the DICOM series could not be read ({str(exc).strip()[:200]})"
            ) from None
        except MemoryError:
            raise ScanError(f"{folder}: the series does not fit in memory") from None
        _check_even_spacing(reader, list(files), folder)
        kept = tuple(real(f) for f in files)
    volume = _itk_to_volume(image, str(folder), channel, "DICOM")
    volume.meta[DICOM_FILES] = kept
    volume.modality = _dicom_tag(reader, "0008|0060") or "unknown"
    for key, tag in DICOM_DESCRIPTORS.items():
        if value := _dicom_tag(reader, tag):
            volume.meta[key] = value
    volume.meta.update(series_uid=chosen.uid, series_count=len(found))
    return volume


def _dicom_tag(reader, tag: str) -> str:
    """A tag of the series' first file, "" where it is absent."""
    try:
        return reader.GetMetaData(0, tag).strip() if reader.HasMetaDataKey(0, tag) else ""
    except RuntimeError:
        return ""


def load_scan(path: str | os.PathLike, channel: int | None = None, series: str | None = None) -> Volume:
    """Read a scan; raise `ScanError` with a message for the user on anything unreadable.

    `series` chooses a DICOM folder's series by SeriesInstanceUID (`list_dicom_series` lists them).
    A scan within `MAX_VOXELS` may still not fit a small machine's memory once converted (float32,
    canonical order): that too is one message, wherever the allocation fails.
    """
    try:
        return _read(Path(path), channel, series)
    except MemoryError:
        raise ScanError(f"{path}: the scan does not fit in this computer's memory") from None


def _read(p: Path, channel: int | None, series: str | None) -> Volume:
    try:
        if not p.exists():
            raise ScanError(f"{p}: no such file or folder")
        if p.is_dir():
            return _read_dicom_series(p, channel, series)
        if not os.access(p, os.R_OK):
            raise ScanError(f"{p}: permission denied")
        if p.stat().st_size == 0:
            raise ScanError(f"{p}: the file is empty")
    except OSError as exc:  # a name too long, a symlink loop, ...
        raise ScanError(f"{p}: cannot be opened ({exc.strerror or exc})") from None
    name = p.name.lower()
    if series is not None and not name.endswith(".dcm"):
        raise ScanError(f"{p}: not DICOM; a series is chosen only in a DICOM folder")
    if name.endswith(NIFTI_SUFFIXES):
        return _read_nifti(p, channel)
    if name.endswith(IMAGE_SUFFIXES):
        from engine.images2d import read_image

        return read_image(p, channel)
    if name.endswith(ITK_SUFFIXES) or name.endswith(".dcm"):
        if name.endswith(".dcm"):
            return _read_dicom_series(p.parent, channel, series)
        return _read_itk(p, channel)
    raise ScanError(
        f"{p}: unknown scan format; open NIfTI (.nii, .nii.gz), MHA/MHD, NRRD, a DICOM folder, "
        "or a PNG, TIFF or JPEG image"
    )


def save_nifti(
    volume: Volume, array: np.ndarray, path: str | os.PathLike, dtype: np.dtype | type = np.float32
) -> Path:
    """Write `array` (canonical order, the scan's shape) as NIfTI in the scan's own voxel order and affine.

    The write is atomic (a temporary file in the same folder, then a rename) and refuses to
    replace the scan that was read.
    """
    out = Path(path)
    name = out.name.lower()
    if not name.endswith(NIFTI_SUFFIXES):
        raise ScanError(f"{out}: exports are NIfTI; end the name with .nii.gz or .nii")
    if tuple(array.shape[:3]) != volume.shape:
        raise ScanError(f"{out}: map of shape {array.shape} does not match the scan's {volume.shape}")
    if volume.source and out.exists() and os.path.samefile(out, volume.source):
        raise ScanError(f"{out}: refusing to overwrite the input scan")
    data = np.asarray(array).astype(dtype, copy=False)
    data = (
        volume.to_source_order(data)
        if data.ndim == 3
        else np.stack([volume.to_source_order(data[..., c]) for c in range(data.shape[3])], axis=-1)
    )
    img = nib.Nifti1Image(data, volume.source_affine)
    img.set_qform(volume.source_affine, code=1)
    img.set_sform(volume.source_affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if np.issubdtype(data.dtype, np.integer):
        img.header.set_intent("label")
    try:
        atomic_write(out, lambda tmp: nib.save(img, tmp), ".nii.gz" if name.endswith(".gz") else ".nii")
    except OSError as exc:
        raise ScanError(f"{out}: could not write ({exc.strerror or exc})") from None
    return out
