"""Scans in and out: geometry survives a round trip, and every bad input gets a clear message."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from engine.volume import ScanError, load_scan, save_nifti


def _write_nifti(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _oblique_affine() -> np.ndarray:
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([0.8, 1.1, 3.0])
    a[:3, 3] = [-40.0, 12.5, 7.0]
    return a


AFFINES = {
    "RAS": np.diag([1.0, 1.0, 2.0, 1.0]),
    "LPS": np.array([[-0.9, 0, 0, 100.0], [0, -0.9, 0, 120.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]]),
    "PIR": np.array([[0, 0, 1.5, 5.0], [-1.0, 0, 0, 20.0], [0, -1.2, 0, 40.0], [0, 0, 0, 1]]),
    "oblique": _oblique_affine(),
}


@pytest.mark.parametrize("name", list(AFFINES))
def test_round_trip_keeps_voxels_and_geometry(tmp_path, name):
    rng = np.random.default_rng(0)
    data = rng.random((7, 9, 5)).astype(np.float32)
    src = _write_nifti(tmp_path / "scan.nii.gz", data, AFFINES[name])
    vol = load_scan(src)
    codes = nib.aff2axcodes(vol.affine)
    assert codes == ("R", "A", "S")
    # The same world point holds the same intensity in the canonical volume and the file.
    for ijk in [(0, 0, 0), (6, 8, 4), (3, 2, 1)]:
        world = AFFINES[name] @ np.array([*ijk, 1.0])
        cijk = np.rint(np.linalg.solve(vol.affine, world)[:3]).astype(int)
        assert vol.data[tuple(cijk)] == pytest.approx(data[ijk])
    out = save_nifti(vol, vol.data * 2, tmp_path / "out.nii.gz")
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, AFFINES[name], atol=1e-5)
    np.testing.assert_allclose(np.asanyarray(img.dataobj), data * 2, rtol=1e-6)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1


def test_labels_are_written_as_uint8(tmp_path):
    src = _write_nifti(tmp_path / "s.nii.gz", np.zeros((4, 4, 3), np.float32), AFFINES["LPS"])
    vol = load_scan(src)
    seg = np.zeros(vol.shape, np.uint8)
    seg[1, 2, 0] = 1
    out = nib.load(str(save_nifti(vol, seg, tmp_path / "seg.nii.gz", np.uint8)))
    assert out.get_data_dtype() == np.uint8
    assert np.asanyarray(out.dataobj).sum() == 1


def _write_dicom_series(
    folder,
    array_zyx,
    spacing,
    origin,
    direction,
    series_uid="1.2.826.0.1.3680043.2.1125.1.123456789",
    extra_tags=(),
    prefix="slice",
):
    image = sitk.GetImageFromArray(array_zyx.astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = np.array(direction).reshape(3, 3)
    orientation = "\\".join(f"{v:.6f}" for v in (*d[:, 0], *d[:, 1]))
    for z in range(image.GetDepth()):
        sl = image[:, :, z]
        position = "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, z)))
        for tag, value in [
            ("0008|0060", "MR"),
            ("0020|000e", series_uid),
            ("0020|000d", series_uid + ".1"),
            ("0020|0037", orientation),
            ("0020|0032", position),
            ("0020|0013", str(z + 1)),
            ("0008|0016", "1.2.840.10008.5.1.4.1.1.4"),
            ("0008|0018", f"{series_uid}.{z + 1}"),
            *extra_tags,
        ]:
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{z:03d}.dcm"))
        writer.Execute(sl)
    return image


def test_dicom_series_is_read_in_world_coordinates(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 1000, size=(6, 10, 8))  # z, y, x
    image = _write_dicom_series(
        tmp_path, arr, (0.7, 0.8, 2.0), (10.0, -20.0, 30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    vol = load_scan(tmp_path)
    assert vol.modality == "MR"
    assert vol.meta["format"] == "DICOM"
    np.testing.assert_allclose(sorted(vol.spacing), sorted((0.7, 0.8, 2.0)), atol=1e-4)
    for idx in [(0, 0, 0), (7, 9, 5), (3, 4, 2)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(idx))
        ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
        cijk = np.rint(np.linalg.solve(vol.affine, ras)[:3]).astype(int)
        assert vol.data[tuple(cijk)] == arr[idx[2], idx[1], idx[0]]
    # Exported maps of a DICOM scan land on the same world points.
    out = nib.load(str(save_nifti(vol, vol.data, tmp_path / "out" / "x.nii.gz")))
    world = out.affine @ np.array([0, 0, 0, 1.0])
    lps0 = np.array(image.TransformIndexToPhysicalPoint((0, 0, 0)))
    np.testing.assert_allclose(world[:3], [-lps0[0], -lps0[1], lps0[2]], atol=1e-4)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_formats(tmp_path, suffix):
    arr = np.arange(4 * 5 * 6, dtype=np.float32).reshape(6, 5, 4)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((1.0, 2.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / f"scan{suffix}"))
    vol = load_scan(tmp_path / f"scan{suffix}")
    assert vol.shape == (4, 5, 6)
    assert vol.data.sum() == pytest.approx(arr.sum())


def _expect(path, *words, **kw):
    with pytest.raises(ScanError) as err:
        load_scan(path, **kw)
    msg = str(err.value)
    assert str(path) in msg
    for w in words:
        assert w in msg.lower(), msg
    return msg


def test_missing_path(tmp_path):
    _expect(tmp_path / "nope.nii.gz", "no such file")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    _expect(tmp_path, "no dicom series")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.nii.gz"
    p.write_bytes(b"")
    _expect(p, "empty")


def test_truncated_gzip(tmp_path, lgg_case):
    p = tmp_path / "cut.nii.gz"
    p.write_bytes(lgg_case[0].read_bytes()[:5000])
    _expect(p, "truncated")


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.nii"
    p.write_text("this is not an image " * 40)
    _expect(p, "nifti")
    q = tmp_path / "notes.txt"
    q.write_text("hello")
    _expect(q, "unknown scan format")


def test_nan_voxels(tmp_path):
    data = np.ones((4, 4, 4), np.float32)
    data[1, 1, 1] = np.nan
    _expect(_write_nifti(tmp_path / "nan.nii.gz", data, np.eye(4)), "nan")


def test_2d_image(tmp_path):
    _expect(_write_nifti(tmp_path / "flat.nii.gz", np.ones((8, 8), np.float32), np.eye(4)), "2d")


def test_4d_needs_a_channel_choice(tmp_path):
    data = np.stack([np.full((3, 4, 5), c, np.float32) for c in range(3)], axis=-1)
    p = _write_nifti(tmp_path / "multi.nii.gz", data, np.eye(4))
    _expect(p, "3 channels", "--channel")
    assert load_scan(p, channel=2).data.mean() == pytest.approx(2.0)
    _expect(p, "does not exist", channel=5)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable(tmp_path):
    p = _write_nifti(tmp_path / "locked.nii.gz", np.ones((3, 3, 3), np.float32), np.eye(4))
    p.chmod(0)
    _expect(p, "permission")


def test_export_never_overwrites_the_input(tmp_path):
    p = _write_nifti(tmp_path / "scan.nii.gz", np.ones((3, 3, 3), np.float32), np.eye(4))
    vol = load_scan(p)
    with pytest.raises(ScanError, match="refusing to overwrite"):
        save_nifti(vol, vol.data, p)
    assert load_scan(p).data.sum() == 27


def test_export_to_a_refusing_disk_loses_nothing(tmp_path):
    p = _write_nifti(tmp_path / "scan.nii.gz", np.ones((3, 3, 3), np.float32), np.eye(4))
    vol = load_scan(p)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ScanError, match="could not write"):
        save_nifti(vol, vol.data, blocker / "sub" / "seg.nii.gz")
    assert blocker.read_text() == "x"
    assert not list(tmp_path.glob("**/.tmp-*"))
