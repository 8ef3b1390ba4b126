"""2D images (PNG, TIFF, JPEG, a single DICOM image) read as one-slice volumes, and their units.

A microscopy image reaches the network as the nuclei models were trained on it
(`training.data.read_nuclei_image`): colour is the mean of the red, green and blue channels (alpha
dropped), grey levels are kept as they are, 8 or 16 bit; the volume normalises them later, as for
every scan. The image is stored so that the axial slice `engine.preprocessing.get_slice` cuts is
the image as the file holds it (rows down, columns across), which is how SimpleITK maps a 2D
image into patient space (x along columns, y along rows).

Pixel size comes from the file where it records a physical one (TIFF resolution tags or an ImageJ
unit, PNG pHYs in metres, JPEG JFIF density); otherwise a pixel is 1 unit, and sizes are said in
pixels, never in mm or mL. 72 and 96 dpi are the screen defaults image programs write without
measuring anything, so they count as unknown.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from engine.volume import (
    DICOM_DESCRIPTORS,
    ScanError,
    Volume,
    _canonical,
    _check_declared_size,
    _check_values,
    _itk_path,
)

SCREEN_DPI = (72.0, 96.0)
_MM_PER = {"inch": 25.4, "centimeter": 10.0, "cm": 10.0, "mm": 1.0, "millimeter": 1.0}
_MM_PER_UNIT_NAME = {"micron": 1e-3, "um": 1e-3, "µm": 1e-3, "\\u00b5m": 1e-3, "mm": 1.0, "nm": 1e-6}


def is_planar(volume: Volume) -> bool:
    """A one-slice volume read from a 2D image (not a slab cut from a 3D scan)."""
    return bool(volume.meta.get("planar", False))


def pixel_size_known(volume: Volume) -> bool:
    """Whether distances in `volume` are physical (mm) or counted in pixels."""
    return not is_planar(volume) or volume.meta.get("pixel_size_mm") is not None


def length_unit(volume: Volume) -> str:
    """The unit a 2D image's lengths are given in: µm when its pixel size is known, px otherwise."""
    return "µm" if pixel_size_known(volume) else "px"


def pixel_area(volume: Volume) -> tuple[float, str]:
    """The area of one pixel of a 2D image and its unit: (1, "px") when the pixel size is unknown."""
    if not pixel_size_known(volume):
        return 1.0, "px"
    sx, sy, _ = volume.spacing
    return sx * sy * 1e6, "µm²"


def area_text(volume: Volume, pixels: int) -> str:
    """`412 px` or `103.0 µm²`: an area of a 2D image as the reader sees it."""
    per_pixel, unit = pixel_area(volume)
    return f"{pixels} px" if unit == "px" else f"{pixels * per_pixel:.1f} {unit}"


def position_text(volume: Volume, ijk: tuple[int, int, int]) -> str:
    """Where a pixel of a 2D image is: its row and column in the file, and the physical position if known."""
    shape = volume.shape
    row, col = shape[1] - 1 - int(ijk[1]), shape[0] - 1 - int(ijk[0])
    text = f"pixel (row {row}, col {col})"
    if pixel_size_known(volume):
        sx, sy, _ = volume.spacing
        text += f"   ({col * sx * 1e3:.1f}, {row * sy * 1e3:.1f}) µm"
    return text


def in_image_units(report: dict, volume: Volume, segmentation: np.ndarray) -> dict:
    """summary.json of a 2D image: label areas in pixels (or µm² where the pixel size is known) and the
    pixel size, in place of millilitres that would rest on a nominal slice thickness. A volume's
    report is returned as it is."""
    if not is_planar(volume):
        return report
    per_pixel, unit = pixel_area(volume)
    counts = np.bincount(np.asarray(segmentation).ravel())
    report = {k: v for k, v in report.items() if k != "voxel_volume_ml"}
    for entry in report.get("labels", {}).values():
        n = int(counts[entry["value"]]) if entry["value"] < len(counts) else 0
        entry.pop("volume_ml", None)
        entry["area_px" if unit == "px" else "area_um2"] = n if unit == "px" else round(n * per_pixel, 3)
    sx, sy, _ = volume.spacing
    report["pixel_size"] = (
        "unknown: distances and areas are in pixels"
        if unit == "px"
        else {"x_um": round(sx * 1e3, 6), "y_um": round(sy * 1e3, 6)}
    )
    return report


def _grey(pixels: np.ndarray, path: Path, channel: int | None) -> np.ndarray:
    """(H, W) float32 grey levels: one chosen channel, or the nuclei models' training reduction."""
    if pixels.ndim == 2:
        if channel not in (None, 0):
            raise ScanError(f"{path}: channel {channel} does not exist; the image is grey (channel 0)")
        return pixels.astype(np.float32)
    if pixels.ndim != 3 or not 2 <= pixels.shape[-1] <= 4:
        raise ScanError(f"{path}: not a grey, RGB or RGBA image (pixel array of shape {pixels.shape})")
    n = pixels.shape[-1]
    if channel is not None:
        if not 0 <= channel < n:
            raise ScanError(f"{path}: channel {channel} does not exist; it has {n} (0..{n - 1})")
        return pixels[..., channel].astype(np.float32)
    if n == 2:  # grey and alpha
        return pixels[..., 0].astype(np.float32)
    return pixels[..., :3].mean(axis=-1).astype(np.float32)  # as training.data.read_nuclei_image


def image_volume(
    pixels: np.ndarray,
    path: Path,
    fmt: str,
    pixel_mm: tuple[float, float] | None,
    channel: int | None = None,
    meta: dict | None = None,
) -> Volume:
    """A one-slice `Volume` from an image's pixel array (rows, cols[, channels]) and its pixel size.

    `pixel_mm`: (column width, row height) in mm, or None where the file records none (1 unit).
    """
    grey = _check_values(_grey(pixels, path, channel), str(path))
    sx, sy = pixel_mm if pixel_mm is not None else (1.0, 1.0)
    # SimpleITK's placement of a 2D image: x along columns, y along rows, LPS; here in RAS.
    affine = np.diag([-sx, -sy, min(sx, sy), 1.0])
    info = {
        "format": fmt,
        "planar": True,
        "pixel_size_mm": [float(sx), float(sy)] if pixel_mm is not None else None,
        "channels": 1 if pixels.ndim == 2 else int(pixels.shape[-1]),
        "bits": int(pixels.dtype.itemsize * 8),
        **(meta or {}),
    }
    data = np.ascontiguousarray(grey.T)[:, :, None]
    return _canonical(data, affine, str(path), str((meta or {}).get("modality", "unknown")), info)


def _physical(dpi_x: float, dpi_y: float) -> tuple[float, float] | None:
    """mm per pixel from dots per inch, or None for a missing, absurd or screen-default resolution."""
    if not (np.isfinite(dpi_x) and np.isfinite(dpi_y)) or min(dpi_x, dpi_y) <= 0:
        return None
    if any(abs(dpi_x - d) < 0.5 and abs(dpi_y - d) < 0.5 for d in SCREEN_DPI):
        return None
    return 25.4 / dpi_x, 25.4 / dpi_y


def _deep_colour(im) -> bool:  # noqa: ANN001 (a PIL image, opened lazily)
    """16 bits per colour channel, which Pillow would cut to 8."""
    return im.mode in ("RGB", "RGBA") and any(";16" in str(tile.args) for tile in im.tile)


def _plain_mode(im):  # noqa: ANN001, ANN202 (a PIL image)
    """Grey, grey+alpha, RGB or RGBA as they are; palette, bilevel and other colour spaces converted."""
    if im.mode not in ("1", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        return im
    alpha = im.mode == "PA" or "transparency" in im.info
    return im.convert("L" if im.mode == "1" else "RGBA" if alpha else "RGB")


def _read_picture(path: Path, channel: int | None) -> Volume:
    """PNG or JPEG: decoded by Pillow (clean errors, no libpng noise on stderr), 16-bit colour by
    SimpleITK; the declared size is checked before any pixel is decoded."""
    from PIL import Image

    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_declared_size(im.size, path)
                dpi = im.info.get("dpi")
                deep = _deep_colour(im)
                if not deep:
                    pixels = np.asarray(_plain_mode(im))
    except ScanError:
        raise
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ScanError(
            f"{path}: the header declares more pixels than Pillow decodes safely ({limit:,}); "
            "a decompression bomb, or an image to tile first"
        ) from None
    except MemoryError:
        raise ScanError(f"{path}: the image does not fit in memory") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ScanError(f"{path}: not a readable image ({str(exc).splitlines()[0][:200]})") from None
    if deep:
        pixels = _read_deep_colour(path)
    size = _physical(float(dpi[0]), float(dpi[1])) if dpi and len(dpi) == 2 else None
    return image_volume(pixels, path, fmt, size, channel)


def _read_deep_colour(path: Path) -> np.ndarray:
    """A 16-bit colour PNG's pixels through SimpleITK."""
    import SimpleITK as sitk

    with _itk_path(path) as name:
        try:
            return sitk.GetArrayFromImage(sitk.ReadImage(name))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise ScanError(f"{path}: not a readable image ({first[:200]})") from None
        except MemoryError:
            raise ScanError(f"{path}: the image does not fit in memory") from None


def _tiff_pixel_size(tif) -> tuple[float, float] | None:  # noqa: ANN001 (tifffile.TiffFile)
    """mm per pixel from XResolution/YResolution and ResolutionUnit, or ImageJ's unit when that is none."""
    tags = tif.pages[0].tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None

    def ratio(value: tuple[int, int]) -> float:
        return value[0] / value[1] if value[1] else float("nan")

    per_x, per_y = ratio(tags["XResolution"].value), ratio(tags["YResolution"].value)
    unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 2  # TIFF's default: inch
    unit = {1: "none", 2: "inch", 3: "centimeter"}.get(int(unit), "none")
    if unit == "none":
        name = str((tif.imagej_metadata or {}).get("unit", "")).strip().lower()
        if name not in _MM_PER_UNIT_NAME or min(per_x, per_y) <= 0:
            return None
        return _MM_PER_UNIT_NAME[name] / per_x, _MM_PER_UNIT_NAME[name] / per_y
    return _physical(per_x * 25.4 / _MM_PER[unit], per_y * 25.4 / _MM_PER[unit])


def _read_tiff(path: Path, channel: int | None) -> Volume:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            _check_declared_size(shape, path)
            extra = [a for a, n in zip(axes, shape, strict=True) if a not in "YXSC" and n > 1]
            if extra or len(tif.pages) > 1 and "C" not in axes:
                raise ScanError(
                    f"{path}: a TIFF stack ({axes} {shape}); a single 2D image was expected "
                    "(save the plane to segment as its own file)"
                )
            pixels = np.squeeze(series.asarray())
            if "C" in axes and pixels.ndim == 3 and pixels.shape[0] <= 4:  # planar colour: channels first
                pixels = np.moveaxis(pixels, 0, -1)
            size = _tiff_pixel_size(tif)
    except ScanError:
        raise
    except MemoryError:
        raise ScanError(f"{path}: the image does not fit in memory") from None
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ScanError(f"{path}: not a readable TIFF ({str(exc).splitlines()[0][:200]})") from None
    if np.iscomplexobj(pixels) or pixels.dtype.fields is not None or pixels.dtype == bool:
        raise ScanError(f"{path}: {pixels.dtype} pixels are not supported")
    return image_volume(pixels, path, "TIFF", size, channel)


def read_image(path: Path, channel: int | None = None) -> Volume:
    """A PNG, TIFF or JPEG file as a one-slice volume; `ScanError` for anything unreadable."""
    if path.suffix.lower() in (".tif", ".tiff"):
        return _read_tiff(path, channel)
    return _read_picture(path, channel)


def _functional_group_spacing(file: Path) -> str:
    """PixelSpacing ("row\\column", mm) from a multi-frame header's Pixel Measures (shared, else the
    first frame's), where whole-slide microscopy keeps it; "" where there is none."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(file, stop_before_pixels=True)
        for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            for measures in (header.get(groups) or [{}])[0].get("PixelMeasuresSequence") or []:
                if spacing := measures.get("PixelSpacing"):
                    return "\\".join(str(v) for v in spacing)
    except (OSError, ValueError, TypeError, AttributeError, InvalidDicomError):
        return ""
    return ""


def read_dicom_image(file: Path, channel: int | None = None) -> Volume:
    """A single-frame DICOM image (a radiograph, a microscopy or secondary-capture image) as one slice.

    It is placed like a PNG (rows down, columns across) at its PixelSpacing (or ImagerPixelSpacing, or
    for a whole-slide or enhanced image the Pixel Measures of its functional groups); without any, a
    pixel is 1 unit.
    """
    import SimpleITK as sitk

    with _itk_path(file) as name:
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(name)
            reader.ReadImageInformation()
            _check_declared_size(reader.GetSize(), file)
            image = reader.Execute()
        except RuntimeError as exc:
            raise ScanError(f"{file}: the DICOM image could not be read ({str(exc).strip()[:200]})") from None
        except MemoryError:
            raise ScanError(f"{file}: the image does not fit in memory") from None
    pixels = sitk.GetArrayFromImage(image)
    if pixels.ndim >= 3 and image.GetDimension() == 3:
        if pixels.shape[0] != 1:
            raise ScanError(f"{file}: a multi-frame DICOM image ({pixels.shape[0]} frames) is not supported")
        pixels = pixels[0]

    def tag(key: str) -> str:
        return image.GetMetaData(key).strip() if image.HasMetaDataKey(key) else ""

    size = None
    if spacing := tag("0028|0030") or tag("0018|1164") or _functional_group_spacing(file):  # mm
        try:
            row_mm, col_mm = (float(v) for v in spacing.split("\\")[:2])
            size = (col_mm, row_mm) if min(row_mm, col_mm) > 0 else None
        except ValueError:
            size = None
    meta = {"modality": tag("0008|0060") or "unknown"}
    meta.update({key: value for key, t in DICOM_DESCRIPTORS.items() if (value := tag(t))})
    return image_volume(pixels, file, "DICOM", size, channel, meta)
