"""DICOM out, what is refused: a DICOM SEG of a scan not read from a DICOM series (a NIfTI, a single 2D
DICOM image), an unknown format, a source series gone since reading, and writes that fail (a file in
the way, a full disk, a read-only folder). Each is one message, and nothing is left behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from cli.main import main
from engine.export import write_results
from engine.export_formats import check_formats, parse_formats, write_formats
from engine.volume import ScanError, load_scan
from tests.conftest import REPO, SAMPLES
from tests.test_corpus import _RUN
from tests.test_dicom_export import RUN, _result, lgg_series, write_series


def test_dicom_seg_for_a_nifti_scan_is_exit_2_and_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["predict", str(SAMPLES / "lgg_sample.nii.gz"), "--mode", "digital", "--format", "dicom-seg"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "DICOM SEG" in err and "not read from a DICOM series" in err
    assert not out.exists()


def test_dicom_seg_of_a_single_2d_dicom_image_says_why_not(tmp_path) -> None:
    image = sitk.GetImageFromArray(np.arange(48, dtype=np.int16).reshape(1, 6, 8))
    image.SetMetaData("0008|0060", "OT")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(tmp_path / "one.dcm"))
    writer.Execute(image)
    with pytest.raises(ScanError, match="single 2D DICOM image: the SEG references the slices of a DICOM"):
        check_formats(load_scan(tmp_path / "one.dcm"), ("nifti", "dicom-seg"))
    check_formats(load_scan(tmp_path / "one.dcm"), ("nifti", "seg-nrrd"))  # these it can have


def test_an_unknown_format_is_exit_2(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert (
        main(["predict", str(SAMPLES / "lgg_sample.nii.gz"), "--format", "nifti,dicom", "--out", str(out)])
        == 2
    )
    assert "unknown export format dicom" in capsys.readouterr().err and not out.exists()
    assert parse_formats(["seg-nrrd", "NIfTI , dicom-seg"]) == ("nifti", "dicom-seg", "seg-nrrd")
    with pytest.raises(ScanError, match="no export format chosen"):  # the viewer with every format unticked
        check_formats(load_scan(SAMPLES / "lgg_sample.nii.gz"), ())


def test_a_source_series_gone_since_reading_is_one_message(tmp_path, small_model) -> None:
    series = write_series(tmp_path / "series", np.ones((3, 4, 5)))
    result = _result(load_scan(series), small_model)
    next(series.glob("*.dcm")).unlink()
    with pytest.raises(ScanError, match="can no longer be read"):
        write_results(result, tmp_path / "out", small_model, RUN, formats=("nifti", "dicom-seg"))
    assert not (tmp_path / "out").exists()


def test_a_refused_write_leaves_nothing_behind(tmp_path, small_model, monkeypatch) -> None:
    result = _result(load_scan(write_series(tmp_path / "series", np.ones((3, 4, 5)))), small_model)
    blocked = tmp_path / "a_file"
    blocked.write_text("a file where the export folder should be")
    with pytest.raises(ScanError, match="could not write"):
        write_formats(result, blocked / "out", small_model, RUN, ("dicom-seg", "seg-nrrd"))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    out = tmp_path / "out"  # the DICOM files are written, then the seg.nrrd fails: none is left
    monkeypatch.setattr("engine.segnrrd.nrrd.write", disk_full)
    with pytest.raises(ScanError, match="No space left"):
        write_formats(result, out, small_model, RUN, ("dicom-seg", "seg-nrrd"))
    assert sorted(p.name for p in out.iterdir()) == []


def _without_root_override() -> list[str]:
    """A command prefix under which a read-only folder refuses files: root ignores folder modes unless
    it drops its DAC capabilities (util-linux's setpriv)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot refuse files")
    dropped = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={dropped}", f"--bounding-set={dropped}", "--"]


@pytest.mark.slow
def test_predict_into_a_read_only_folder_is_refused_before_the_work(tmp_path) -> None:
    """All three formats asked into a folder that refuses files: one line, exit 2, before torch is
    imported (nothing computed for nothing), and the folder left empty."""
    series = lgg_series(tmp_path / "series")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    record = tmp_path / "record"
    argv = [
        "predict",
        str(series),
        "--mode",
        "digital",
        "--format",
        "nifti,dicom-seg,seg-nrrd",
        "--out",
        str(out),
    ]
    try:
        done = subprocess.run(
            [*_without_root_override(), sys.executable, "-c", _RUN, *argv],
            capture_output=True,
            encoding="utf-8",
            env={**os.environ, "PYTHONPATH": str(REPO), "AIMC_RECORD": str(record)},
            timeout=600,
        )
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "could not write into this folder" in done.stderr and "Permission denied" in done.stderr
        assert record.read_text().split()[1:] == []  # no torch, aihwkit or MONAI: refused before the work
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_message(tmp_path, small_model) -> None:
    result = _result(load_scan(write_series(tmp_path / "series", np.ones((3, 4, 5)))), small_model)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(ScanError, match="could not write"):
            write_results(result, out, small_model, RUN, formats=("nifti", "dicom-seg", "seg-nrrd"))
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)
