"""2D images as one-slice volumes (`engine.images2d`): formats, bit depths, channels, pixel sizes, bad files,
the model gate's 2D/3D refusals, and `aimc predict` on a nuclei image. Images are made at test time; the
real nuclei image of ../shared/data is used where it is present."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from cli.main import main
from engine.compatibility import assess, dimension_mismatch
from engine.images2d import area_text, is_planar, pixel_size_known, position_text
from engine.model_store import MODELS_DIR, find_model
from engine.preprocessing import Preprocessing, get_slice, normalise_volume
from engine.volume import ScanError, load_scan
from tests.conftest import SAMPLES, SHARED_DATA
from training.data import Case, read_nuclei_image

NUCLEI = SHARED_DATA / "nuclei"
NUCLEI_MODEL = "nuclei_unet_hwa"


def _pattern(rows: int = 24, cols: int = 40) -> np.ndarray:
    """Grey levels that tell rows from columns and every corner from the others."""
    r, c = np.mgrid[:rows, :cols]
    return (r * 5 + c * 2 + (r * c) % 7).astype(np.float64)


def _shown(path: Path, **kwargs) -> np.ndarray:
    volume = load_scan(path, **kwargs)
    assert volume.shape[2] == 1 and is_planar(volume)
    return get_slice(volume.data, "axial", 0)


@pytest.fixture
def needs_nuclei_model():
    if not (MODELS_DIR / NUCLEI_MODEL / "model.json").exists():
        pytest.skip(f"the nuclei model {NUCLEI_MODEL} is not installed")


def test_rgb_png_reaches_the_network_as_in_training(tmp_path) -> None:
    rgb = np.stack([_pattern(), _pattern()[::-1], _pattern()[:, ::-1]], axis=-1).astype(np.uint8)
    path = tmp_path / "cells.png"
    Image.fromarray(rgb).save(path)
    shown = _shown(path)
    assert shown.shape == rgb.shape[:2]  # rows down, columns across: the image as the file holds it
    np.testing.assert_allclose(shown, rgb.mean(axis=-1), rtol=0, atol=1e-4)
    prep = Preprocessing()
    trained, _ = read_nuclei_image(Case("cells", path, path, "cells"), prep)
    np.testing.assert_array_equal(normalise_volume(shown, prep), trained)


def test_rgba_drops_alpha_grey_keeps_16_bits_and_16_bit_colour_is_not_cut(tmp_path) -> None:
    base = _pattern().astype(np.uint8)
    rgba = np.stack([base, base + 1, base + 2, np.full_like(base, 7)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_allclose(_shown(tmp_path / "rgba.png"), base + 1.0, atol=1e-4)
    grey16 = (_pattern() * 300).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    np.testing.assert_array_equal(_shown(tmp_path / "grey16.png"), grey16)
    rgb16 = np.stack([grey16, grey16, grey16 + 3], axis=-1)
    sitk.WriteImage(sitk.GetImageFromArray(rgb16, isVector=True), str(tmp_path / "rgb16.png"))
    np.testing.assert_allclose(_shown(tmp_path / "rgb16.png"), grey16 + 1.0, atol=1e-2)
    volume = load_scan(tmp_path / "rgb16.png")
    assert volume.meta["bits"] == 16 and volume.meta["channels"] == 3
    np.testing.assert_array_equal(_shown(tmp_path / "rgb16.png", channel=2), grey16 + 3)
    with pytest.raises(ScanError, match="channel 5 does not exist; it has 3"):
        load_scan(tmp_path / "rgb16.png", channel=5)


def test_palette_png_is_read_as_its_colours(tmp_path) -> None:
    grey = np.repeat(np.array([[0, 60, 120, 240]], np.uint8), 3, axis=0)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).quantize(4).save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    np.testing.assert_allclose(_shown(tmp_path / "palette.png"), grey, atol=1e-4)


def test_jpeg_opens_in_pixels(tmp_path) -> None:
    Image.fromarray(_pattern().astype(np.uint8)).save(tmp_path / "cells.jpg", quality=95)
    volume = load_scan(tmp_path / "cells.jpg")
    assert volume.shape == (40, 24, 1) and volume.meta["format"] == "JPEG"
    assert not pixel_size_known(volume)  # Pillow writes no density; a viewer must not invent one


def test_tiff_resolution_gives_the_pixel_size(tmp_path) -> None:
    image = (_pattern() * 100).astype(np.uint16)
    # 20000 pixels per cm: 0.5 µm pixels, 0.25 µm rows
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(20000, 40000), resolutionunit="CENTIMETER")
    volume = load_scan(tmp_path / "cm.tif")
    assert pixel_size_known(volume) and volume.meta["pixel_size_mm"] == pytest.approx([0.0005, 0.00025])
    np.testing.assert_array_equal(get_slice(volume.data, "axial", 0), image)
    assert area_text(volume, 8) == "1.0 µm²"
    tifffile.imwrite(
        tmp_path / "imagej.tif", image, imagej=True, resolution=(4.0, 4.0), metadata={"unit": "um"}
    )
    assert load_scan(tmp_path / "imagej.tif").meta["pixel_size_mm"] == pytest.approx([0.00025, 0.00025])
    tifffile.imwrite(tmp_path / "screen.tif", image, resolution=(72, 72), resolutionunit="INCH")
    unknown = load_scan(tmp_path / "screen.tif")
    assert not pixel_size_known(unknown) and area_text(unknown, 8) == "8 px"
    assert position_text(unknown, (39, 23, 0)) == "pixel (row 0, col 0)"


def test_png_physical_resolution_and_a_single_dicom_image(tmp_path) -> None:
    Image.fromarray(_pattern().astype(np.uint8)).save(tmp_path / "phys.png", dpi=(25400, 25400))  # 1 µm
    assert load_scan(tmp_path / "phys.png").meta["pixel_size_mm"] == pytest.approx([0.001, 0.001], rel=1e-3)
    image = sitk.GetImageFromArray(_pattern().astype(np.int16)[None])
    image.SetSpacing((0.2, 0.1, 1.0))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(folder / "one.dcm"))
    image.SetMetaData("0008|0060", "SM")
    writer.Execute(image)
    for path in (folder, folder / "one.dcm"):
        volume = load_scan(path)
        assert is_planar(volume) and volume.modality == "SM" and volume.meta["format"] == "DICOM"
        np.testing.assert_array_equal(get_slice(volume.data, "axial", 0), _pattern())
    assert not pixel_size_known(volume)  # GDCM writes a whole-slide image without its pixel size
    # whole-slide microscopy keeps PixelSpacing (row, column) in its functional groups' Pixel Measures
    header = pydicom.dcmread(folder / "one.dcm")
    measures = pydicom.Dataset()
    measures.PixelSpacing = [0.0001, 0.0002]
    shared = pydicom.Dataset()
    shared.PixelMeasuresSequence = [measures]
    header.SharedFunctionalGroupsSequence = [shared]
    header.save_as(folder / "one.dcm")
    volume = load_scan(folder / "one.dcm")
    assert volume.meta["pixel_size_mm"] == pytest.approx([0.0002, 0.0001])  # (column width, row height)
    assert area_text(volume, 10) == "0.2 µm²"
    # a secondary capture keeps it at the top level
    del header.SharedFunctionalGroupsSequence
    header.SOPClassUID = header.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    header.Modality, header.PixelSpacing = "OT", [0.0005, 0.00025]
    header.save_as(folder / "one.dcm")
    assert load_scan(folder / "one.dcm").meta["pixel_size_mm"] == pytest.approx([0.00025, 0.0005])


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` 8-bit grey pixels and holds almost none (a decompression
    bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_images_are_one_clear_message(tmp_path) -> None:
    Image.fromarray(_pattern().astype(np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "huge.png").write_bytes(_png_header(60000, 60000))
    (tmp_path / "text.tif").write_text("not a tiff")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 8, 8), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "nan.tif", np.full((8, 8), np.nan, np.float32))
    expected = {
        "cut.png": "not a readable image",
        "huge.png": "the header declares more pixels than Pillow decodes safely",
        "text.tif": "not a readable TIFF",
        "stack.tif": "a TIFF stack",
        "nan.tif": "every voxel is NaN",
    }
    for name, message in expected.items():
        with pytest.raises(ScanError, match=message) as err:
            load_scan(tmp_path / name)
        assert "\n" not in str(err.value) and str(tmp_path / name) in str(err.value)


def test_the_gate_refuses_2d_images_to_3d_models_and_volumes_to_2d_models(
    tmp_path, needs_nuclei_model
) -> None:
    Image.fromarray(_pattern().astype(np.uint8)).save(tmp_path / "cells.png")
    image, scan = load_scan(tmp_path / "cells.png"), load_scan(SAMPLES / "lgg_sample.nii.gz")
    nuclei, lgg = find_model(NUCLEI_MODEL), find_model("lgg_unet_hwa")
    assert dimension_mismatch(image, nuclei) is None and dimension_mismatch(scan, lgg) is None
    assert dimension_mismatch(image, lgg) == "the scan is a 2D image; the model reads 3D scans"
    assert dimension_mismatch(scan, nuclei) == "the scan is a 3D volume; the model reads 2D scans"
    assert not assess(image, lgg).fits and not assess(scan, nuclei).fits


CENTRES = ((30, 30), (30, 46), (60, 100), (90, 40), (100, 100))  # (row, column), in raster order


def _cells(tmp_path: Path) -> Path:
    """A fluorescence-like image: bright round nuclei, the first two touching, on a dark background."""
    rows, cols = np.mgrid[:128, :128]
    image = np.full((128, 128), 12.0)
    for r, c in CENTRES:
        image[(rows - r) ** 2 + (cols - c) ** 2 <= 81] = 200
    path = tmp_path / "cells.png"
    Image.fromarray(np.stack([image] * 3, axis=-1).astype(np.uint8)).save(path)
    return path


def _predict(image: Path, out: Path, *extra: str) -> int:
    return main(["predict", str(image), "--mode", "digital", "--out", str(out), *extra])


def test_predict_counts_nuclei_in_a_png_in_pixels(tmp_path, capsys, needs_nuclei_model) -> None:
    out = tmp_path / "out"
    assert _predict(_cells(tmp_path), out, "--model", NUCLEI_MODEL) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    count = summary["nuclei"]["count"]
    assert "\n5 nuclei" in printed and count == 5  # the touching pair split in two
    rows = (out / "nuclei.csv").read_text().splitlines()
    assert rows[0].startswith("nucleus,area_px,centroid_row,centroid_col,mean_entropy") and len(rows) == 6
    centroids = [tuple(float(v) for v in row.split(",")[2:4]) for row in rows[1:]]
    np.testing.assert_allclose(centroids, CENTRES, atol=1.0)  # where they are in the image, not mirrored
    instances = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "instances.nii.gz")))
    assert int(instances.max()) == count and instances.size == 128 * 128
    label = summary["labels"]["nucleus"]
    assert "volume_ml" not in label and label["area_px"] > 0 and "voxel_volume_ml" not in summary
    assert summary["pixel_size"].startswith("unknown")
    # no lesions in mL and mm for an image whose pixel size is unknown: its objects are the nuclei
    assert "lesions" not in summary and " mL" not in printed and " mm" not in printed


def test_predict_refuses_mismatched_dimensions_unless_forced(tmp_path, capsys, needs_nuclei_model) -> None:
    cells = _cells(tmp_path)
    assert _predict(cells, tmp_path / "gate", "--quiet") == 0  # the gate chooses a model that reads 2D
    assert "nuclei" in json.loads((tmp_path / "gate" / "summary.json").read_text())
    assert _predict(cells, tmp_path / "a", "--model", "lgg_unet_hwa") == 2  # it reads 3D volumes
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "2D image" in err and "--force" in err and "models for it: " in err and NUCLEI_MODEL in err
    assert not (tmp_path / "a").exists()
    assert _predict(SAMPLES / "lgg_sample.nii.gz", tmp_path / "b", "--model", NUCLEI_MODEL) == 2
    err = capsys.readouterr().err
    assert "the scan is a 3D volume; the model reads 2D scans" in err and "lgg_unet_hwa" in err
    assert _predict(cells, tmp_path / "c", "--model", "lgg_unet_hwa", "--force", "--quiet") == 0
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["gate"]["outside_training_domain"] and "nuclei" not in summary


@pytest.mark.slow
def test_predict_on_a_real_nuclei_image_counts_its_nuclei(tmp_path, capsys, needs_nuclei_model) -> None:
    model = find_model(NUCLEI_MODEL)
    image_id = model.data["split"]["test"][0]
    image = NUCLEI / "images" / f"{image_id}.png"
    if not image.exists():
        pytest.skip(f"the nuclei data set is not at {NUCLEI}")
    assert _predict(image, tmp_path / "out", "--model", NUCLEI_MODEL, "--quiet") == 0
    truth = np.asarray(Image.open(NUCLEI / "labels" / f"{image_id}.png"))
    true_count = len(np.unique(truth[truth > 0]))
    count = json.loads((tmp_path / "out" / "summary.json").read_text())["nuclei"]["count"]
    assert abs(count - true_count) <= max(3, 0.25 * true_count), (count, true_count)
