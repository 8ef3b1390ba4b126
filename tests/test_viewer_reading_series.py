"""DICOM folders holding several series: listed from their headers (engine), said clearly by the CLI, and
chosen in the viewer's series browser. The folder is made at test time from the bundled LGG sample: the
scan itself and a flipped, cropped copy, with their own SeriesInstanceUID and description."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cli.main import build_parser
from cli.main import main as aimc
from cli.predict import say_which_series
from engine.dicom_series import list_series
from engine.volume import ScanError, list_dicom_series, load_scan
from tests.test_engine_volume import _write_dicom_series

FLAIR_UID = "1.2.826.0.1.3680043.2.1125.7.1"
CROP_UID = "1.2.826.0.1.3680043.2.1125.7.2"
CROP_SLICES = 12
PATIENT = (("0010|0010", "Doe^Jane"), ("0010|0020", "P-7"), ("0008|1030", "MRI BRAIN"))


@pytest.fixture(scope="module")
def two_series(lgg_case, tmp_path_factory) -> Path:
    """One folder, two series: the sample (27 slices) and its left-right flipped, cropped copy (12)."""
    folder = tmp_path_factory.mktemp("dicom") / "study"
    folder.mkdir()
    zyx = np.transpose(np.asanyarray(nib.load(str(lgg_case[0])).dataobj), (2, 1, 0)).astype(np.int16)
    crop = np.ascontiguousarray(zyx[5 : 5 + CROP_SLICES, 40:200, ::-1])
    for array, origin, uid, tags, prefix in (
        (zyx, (0.0, 0.0, 0.0), FLAIR_UID, (("0008|103e", "AX T2 FLAIR"), ("0008|0021", "20240131")), "flair"),
        (crop, (0.0, 40.0, 5.0), CROP_UID, (("0008|103e", "FLAIR flipped crop"),), "crop"),
    ):
        identity = (1, 0, 0, 0, 1, 0, 0, 0, 1)
        _write_dicom_series(
            folder, array, (1.0, 1.0, 1.0), origin, identity, dict((*PATIENT, *tags)), uid, prefix
        )
    return folder


def test_series_are_listed_from_their_headers_most_slices_first(two_series) -> None:
    found = list_dicom_series(two_series)
    assert [s.uid for s in found] == [FLAIR_UID, CROP_UID]
    flair, crop = found
    assert (flair.description, flair.modality, flair.size, flair.date) == (
        "AX T2 FLAIR",
        "MR",
        "256 x 256 x 27",
        "2024-01-31",
    )
    assert crop.size == f"256 x 160 x {CROP_SLICES}" and len(crop.date) == 10  # the writer dated it
    assert flair.patient_name == "Doe Jane" and flair.study_description == "MRI BRAIN"
    assert "AX T2 FLAIR · MR · 256 x 256 x 27 · 2024-01-31 · " + FLAIR_UID == flair.summary()
    assert list_dicom_series(two_series / "crop000.dcm") == found  # a file of the folder: the same list
    assert list_series(str(two_series / "nothing")) == []


def test_a_chosen_series_is_read_and_its_identity_kept(two_series, lgg_case) -> None:
    crop = load_scan(two_series, series=CROP_UID)
    assert crop.shape == (256, 160, CROP_SLICES)
    assert crop.meta["series_uid"] == CROP_UID and crop.meta["series_count"] == 2
    assert crop.meta["series_description"] == "FLAIR flipped crop" and crop.meta["patient_name"] == "Doe^Jane"
    largest = load_scan(two_series)  # no choice: the most slices, as before, and it says there were two
    assert largest.shape == (256, 256, 27) and largest.meta["series_uid"] == FLAIR_UID
    sample = load_scan(lgg_case[0])
    assert np.array_equal(largest.data, sample.data)
    with pytest.raises(ScanError, match="no DICOM series 9.9"):
        load_scan(two_series, series="9.9")
    with pytest.raises(ScanError, match="not DICOM"):
        load_scan(lgg_case[0], series=FLAIR_UID)


def test_cli_says_which_series_it_read_and_how_to_choose(two_series, tmp_path, capsys) -> None:
    say_which_series(str(two_series), FLAIR_UID)  # what `aimc predict FOLDER` prints before it runs
    err = capsys.readouterr().err
    assert "holds 2 DICOM series; read the one with the most slices" in err and "--series UID" in err
    assert f"* AX T2 FLAIR · MR · 256 x 256 x 27 · 2024-01-31 · {FLAIR_UID}" in err
    assert f"  FLAIR flipped crop · MR · 256 x 160 x {CROP_SLICES}" in err
    assert build_parser().parse_args(["predict", "x", "--series", CROP_UID, "--out", "o"]).series == CROP_UID
    assert aimc(["predict", str(two_series), "--series", "9.9", "--out", str(tmp_path / "out")]) == 2
    assert "no DICOM series 9.9" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_series_browser_lets_the_reader_choose(qtbot, two_series, tmp_path) -> None:
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings

    from viewer.widgets.inference_worker import InferenceRunner
    from viewer.widgets.main_window import MainWindow

    window = MainWindow([], QSettings(str(tmp_path / "v.ini"), QSettings.Format.IniFormat), InferenceRunner())
    qtbot.addWidget(window)
    window.show()
    window.files.open_path(two_series)
    qtbot.waitUntil(lambda: window.files.series_dialog is not None, timeout=30_000)
    dialog = window.files.series_dialog
    table = dialog.table
    assert table.rowCount() == 2 and dialog.chosen().uid == FLAIR_UID  # the largest, preselected
    cells = [[table.item(r, c).text() for c in range(table.columnCount())] for r in range(2)]
    assert cells[0][:4] == ["AX T2 FLAIR", "MR", "256 x 256 x 27", "2024-01-31"]
    assert cells[1][0] == "FLAIR flipped crop" and cells[1][5] == CROP_UID
    table.selectRow(1)
    with qtbot.waitSignal(window.scanLoaded, timeout=30_000) as opened:
        dialog.accept()
    assert opened.args[0].meta["series_uid"] == CROP_UID and opened.args[0].shape == (256, 160, CROP_SLICES)
    title = window.windowTitle()
    assert "Doe Jane" in title and "MRI BRAIN" in title and "FLAIR flipped crop" in title

    window.files.open_path(two_series / "flair000.dcm")  # a file of the folder: the same question
    qtbot.waitUntil(lambda: window.files.series_dialog is not None, timeout=30_000)
    window.files.series_dialog.reject()
    assert window.session.volume.meta["series_uid"] == CROP_UID, "cancelled: the open scan stays"
    assert window.files.series_dialog is None
