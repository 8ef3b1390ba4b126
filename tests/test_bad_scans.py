"""A corpus of broken scans, generated at test time: each is refused with one `ScanError` naming it.

Headers that lie (absurd sizes, unknown data types, infinite scaling), decompression bombs, names
SimpleITK cannot take, names too long for the file system, DICOM series with a missing slice.
"""

from __future__ import annotations

import gzip
import os
import resource
import struct
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from engine.volume import MAX_VOXELS, ScanError, load_scan
from tests.conftest import REPO
from tests.test_engine_volume import _write_dicom_series


def _nifti(path, patch: dict[int, tuple[str, tuple]] | None = None, shape=(4, 4, 4)) -> str:
    """A small valid NIfTI-1 file, then header fields overwritten in place (offset -> format, values)."""
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), np.eye(4)), str(path))
    raw = bytearray(path.read_bytes())
    for offset, (fmt, values) in (patch or {}).items():
        struct.pack_into(fmt, raw, offset, *values)
    path.write_bytes(bytes(raw))
    return str(path)


DIM, DATATYPE, SCL = 40, 70, 112  # NIfTI-1 header offsets of dim[8], datatype + bitpix, scl_slope + scl_inter


def _expect(path, *words) -> str:
    with pytest.raises(ScanError) as err:
        load_scan(path)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg.lower(), msg
    return msg


@pytest.mark.parametrize("dims", [(3, 32767, 32767, 32767), (3, 1300, 1300, 1300)])
def test_absurd_declared_size_is_refused_before_reading(tmp_path, dims):
    path = _nifti(tmp_path / "huge.nii", {DIM: ("<4h", dims)})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _expect(path, "declares", f"{MAX_VOXELS:,}")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing allocated


def test_truncated_uncompressed_data_is_named_before_reading(tmp_path):
    path = _nifti(tmp_path / "short.nii", {DIM: ("<4h", (3, 300, 300, 300))})
    _expect(path, "truncated", "declares")


def test_decompression_bomb_is_refused(tmp_path):
    """A 1024^3 volume of zeros compresses to about a megabyte; reading it would need 4 GiB."""
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 1024))
    header.set_data_dtype(np.uint8)
    header.set_qform(np.eye(4), 1)
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header.binaryblock + b"\0" * 4)
        f.write(b"\0" * (1 << 20))  # the header alone decides: the data need not be all there
    _expect(str(path), "declares")


@pytest.mark.parametrize(
    "patch, word",
    [
        ({DIM: ("<h", (9,))}, "not a readable"),
        ({DATATYPE: ("<2h", (9999, 8))}, "9999"),
        ({DATATYPE: ("<2h", (1, 1))}, "not a readable"),
        ({DATATYPE: ("<2h", (1536, 128))}, "1536"),
        ({SCL: ("<2f", (1.0, float("inf")))}, "intercept"),
    ],
)
def test_broken_header_fields(tmp_path, capfd, patch, word):
    _expect(_nifti(tmp_path / "bad.nii", patch), word)
    assert capfd.readouterr().err == ""  # nibabel's own log lines do not leak to the terminal


def test_name_too_long(tmp_path):
    _expect(str(tmp_path / ("a" * 300 + ".nii.gz")), "cannot be opened")


def test_non_utf8_names_reach_simpleitk_safely(tmp_path):
    """SimpleITK aborts the whole process (C++ logic_error) on such a name; we hand it a safe link."""
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    name = os.fsdecode(b"scan-\xff\xfe.mha")
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "ok.mha"))
    os.rename(tmp_path / "ok.mha", tmp_path / name)
    assert load_scan(tmp_path / name).data.sum() == pytest.approx(arr.sum())
    assert load_scan(_series_at(tmp_path, b"dicom-\xff")).shape == (5, 4, 3)


def _series_at(tmp_path, raw_name: bytes):
    """A 3-slice DICOM series in a folder named `raw_name` (written under an ASCII name: SimpleITK's
    writer cannot take such a name either)."""
    (tmp_path / "dicom").mkdir()
    identity = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    _write_dicom_series(
        tmp_path / "dicom", np.arange(60).reshape(3, 4, 5), (1.0, 1.0, 2.0), (0, 0, 0), identity
    )
    folder = tmp_path / os.fsdecode(raw_name)
    os.rename(tmp_path / "dicom", folder)
    return folder


def test_non_utf8_names_inside_a_dicom_folder_and_in_a_batch(tmp_path):
    """GDCM lists the folder itself: a file of such a name came back as a name SimpleITK refused
    (TypeError), and a batch's search of a folder of such a name aborted the process."""
    from engine.batch import discover
    from engine.batch_run import _FIXED, _TAIL, write_table
    from engine.volume import DICOM_FILES, list_dicom_series

    patient = _series_at(tmp_path, b"patient-\xe9")
    odd = patient / os.fsdecode(b"slice\xff.dcm")
    os.rename(patient / "slice001.dcm", odd)
    volume = load_scan(patient)
    assert volume.shape == (5, 4, 3) and str(odd) in volume.meta[DICOM_FILES]  # the file's own name
    assert str(odd) in list_dicom_series(patient)[0].files
    (case,) = discover([str(tmp_path)])
    assert case.source == str(patient) and case.load().shape == (5, 4, 3)
    row = {**dict.fromkeys([*_FIXED, *_TAIL], ""), "case": case.name, "scan": case.source, "volume_ml": {}}
    csv_path, _ = write_table([row], tmp_path)  # the table names the scan as it can: escaped
    assert "patient-\\udce9" in csv_path.read_text()


def _six_slices_2mm_apart(folder) -> None:
    identity = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    _write_dicom_series(
        folder, np.arange(6 * 4 * 5).reshape(6, 4, 5), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), identity
    )


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    _six_slices_2mm_apart(tmp_path)
    (tmp_path / "slice003.dcm").unlink()  # a 4 mm gap in a 2 mm series
    _expect(tmp_path, "uneven slice spacing", "2 to 4 mm")


def test_dicom_series_with_slices_at_one_position_is_refused(tmp_path):
    """A second echo in the same series: ITK stacked 12 slices 0.9 mm apart out of 6 slices 2 mm apart."""
    import pydicom

    _six_slices_2mm_apart(tmp_path)
    for z in range(6):
        ds = pydicom.dcmread(tmp_path / f"slice{z:03d}.dcm")
        ds.SOPInstanceUID, ds.InstanceNumber = f"{ds.SOPInstanceUID}.2", 100 + z
        ds.save_as(tmp_path / f"echo2_{z:03d}.dcm")
    _expect(tmp_path, "12 slices at only 6 positions")


def test_regular_dicom_series_still_reads(tmp_path):
    _six_slices_2mm_apart(tmp_path)
    assert load_scan(tmp_path).shape == (5, 4, 6)


def test_a_scan_larger_than_the_memory_left_is_one_message(tmp_path):
    """512^3 voxels are within MAX_VOXELS but need about 1.2 GB once read as float32 and reoriented: in a
    process limited to 1 GiB the allocation fails, and that is a ScanError, not a MemoryError."""
    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 512))
    header.set_data_dtype(np.uint8)
    header.set_qform(np.diag([-1, 1, 1, 1]), 1)  # not RAS: the canonical copy is a second array
    path = tmp_path / "large.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header.binaryblock + b"\0" * 4)
        for _ in range(512):
            f.write(b"\1" * (512 * 512))
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from engine.volume import ScanError, load_scan\n"
        "try:\n"
        "    load_scan(sys.argv[1])\n"
        "except ScanError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0 and "does not fit in this computer's memory" in done.stdout, done.stderr[
        -800:
    ]
