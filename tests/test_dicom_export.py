"""DICOM out: a DICOM SEG, a Parametric Map and a FRACTIONAL SEG of a result on a DICOM series, read back
with highdicom and pydicom. Every frame's position is checked against the source slices, and its pixels
against the NIfTI export at the same world points (the expectation goes through the SEG's own geometry
and the NIfTI's own affine, not through the code under test). `dciodvfy` (Debian's dicom3tools) checks
the objects against the standard when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cli.main import main
from engine.dicom_export import dicom_objects
from engine.dicom_source import source_frames, source_headers
from engine.export import write_results
from engine.export_formats import DICOM_FILES, SEG_NRRD_FILE
from engine.pipeline import VolumeResult
from engine.run_settings import RunSettings
from engine.volume import load_scan
from tests.conftest import SAMPLES
from tests.test_engine_volume import _write_dicom_series

PATIENT = {
    "0010|0010": "Sample^LGG",
    "0010|0020": "TCGA_FG_7634",
    "0010|0030": "19700101",
    "0010|0040": "F",
    "0008|0020": "20000128",
    "0008|0030": "120000",
    "0008|0050": "ACC0001",
    "0020|0010": "1",
    "0020|0011": "3",
    "0008|103e": "AX FLAIR",
    "0018|0015": "HEAD",
    "0020|0052": "1.2.826.0.1.3680043.2.1125.1.55555",  # Frame of Reference
}
_LPS = np.diag([-1.0, -1.0, 1.0])
NEEDS_DCIODVFY = pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dciodvfy is not installed (Debian package dicom3tools; .ci/run installs it where it can)",
)


def write_series(folder: Path, array_zyx: np.ndarray, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), **kw) -> Path:
    """A DICOM MR series with patient, study and frame-of-reference tags (SimpleITK, at test time)."""
    folder.mkdir(parents=True, exist_ok=True)
    tags = {**PATIENT, "0018|0050": "1.0", **kw.pop("tags", {})}
    _write_dicom_series(
        folder, array_zyx, kw.pop("spacing", (1.0, 1.0, 1.0)), (0.0, 0.0, 0.0), direction, tags
    )
    return folder


def lgg_series(folder: Path, slices: slice = slice(None)) -> Path:
    """The bundled LGG sample (or some of its axial `slices`) as a DICOM series (its LPS grid: rows
    posterior, columns left)."""
    image = sitk.ReadImage(str(SAMPLES / "lgg_sample.nii.gz"))
    return write_series(folder, sitk.GetArrayFromImage(image)[slices], tuple(image.GetDirection()))


def nifti_values(nifti: nib.Nifti1Image, ds: pydicom.Dataset, frame: pydicom.Dataset) -> np.ndarray:
    """The NIfTI's voxels at every pixel of one frame of `ds`, through the frame's own geometry."""
    shared = ds.SharedFunctionalGroupsSequence[0]
    position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
    cosines = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    rows, columns = np.mgrid[0 : ds.Rows, 0 : ds.Columns]
    lps = (
        position
        + columns[..., None] * column_spacing * cosines[:3]
        + rows[..., None] * row_spacing * cosines[3:]
    )
    ras = np.concatenate([lps @ _LPS, np.ones((ds.Rows, ds.Columns, 1))], axis=-1)
    exact = ras @ np.linalg.inv(nifti.affine).T
    index = np.rint(exact[..., :3]).astype(int)
    assert np.abs(exact[..., :3] - index).max() < 1e-3  # on the NIfTI's grid
    return np.asanyarray(nifti.dataobj)[index[..., 0], index[..., 1], index[..., 2]]


def in_memory(nifti: nib.Nifti1Image) -> nib.Nifti1Image:
    """The image decompressed once, not once per frame."""
    return nib.Nifti1Image(np.asanyarray(nifti.dataobj), nifti.affine)


def check_frames_on_source(ds: pydicom.Dataset, series: Path) -> None:
    """Every frame references a source instance and lies on its slice, with its orientation."""
    sources = {
        d.SOPInstanceUID: d
        for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in series.glob("*.dcm"))
    }
    shared = ds.SharedFunctionalGroupsSequence[0]
    first = next(iter(sources.values()))
    assert list(shared.PlaneOrientationSequence[0].ImageOrientationPatient) == pytest.approx(
        list(first.ImageOrientationPatient)
    )
    assert ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    for frame in ds.PerFrameFunctionalGroupsSequence:
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert list(frame.PlanePositionSequence[0].ImagePositionPatient) == pytest.approx(
            list(sources[ref].ImagePositionPatient), abs=1e-4
        )


def check_source_study(ds: pydicom.Dataset, series: Path) -> None:
    """The source's patient and study; a new series and instance."""
    source = pydicom.dcmread(next(series.glob("*.dcm")))
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
    ):
        assert ds[keyword].value == source[keyword].value, keyword
    assert ds.SeriesInstanceUID != source.SeriesInstanceUID and ds.SOPInstanceUID != source.SOPInstanceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID


def check_binary_seg(path: Path, series: Path, nifti_labels: nib.Nifti1Image, names: dict[int, str]) -> None:
    """Each frame equals the NIfTI label map (its segment's label) at the frame's world points, and the
    frames hold every labelled voxel."""
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    nifti_labels = in_memory(nifti_labels)
    check_frames_on_source(ds, series)
    check_source_study(ds, series)
    assert ds.SegmentationType == "BINARY"
    value_of = {i + 1: v for i, v in enumerate(sorted(names))}
    counted = dict.fromkeys(value_of, 0)
    for frame, pixels in zip(
        ds.PerFrameFunctionalGroupsSequence, ds.pixel_array.reshape(-1, ds.Rows, ds.Columns), strict=True
    ):
        identification = frame.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        number = int(identification[0].ReferencedSegmentNumber)
        expected = nifti_values(nifti_labels, ds, frame) == value_of[number]
        assert np.array_equal(pixels.astype(bool), expected)
        counted[number] += int(expected.sum())
    labels = np.asanyarray(nifti_labels.dataobj)
    assert counted == {n: int((labels == v).sum()) for n, v in value_of.items()}
    seg = hd.seg.segread(path)
    for number, value in value_of.items():
        description = seg.get_segment_description(number)
        assert description.segment_label == names[value]
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC


def check_float_map(
    path: Path, series: Path, nifti: nib.Nifti1Image, atol: float, scale: float = 1.0
) -> pydicom.Dataset:
    """Each frame's values (times `scale`) equal the NIfTI map at the frame's world points."""
    ds = pydicom.dcmread(path)
    nifti = in_memory(nifti)
    check_frames_on_source(ds, series)
    check_source_study(ds, series)
    pixels = ds.pixel_array.reshape(-1, ds.Rows, ds.Columns)
    for frame, values in zip(ds.PerFrameFunctionalGroupsSequence, pixels, strict=True):
        np.testing.assert_allclose(values * scale, nifti_values(nifti, ds, frame), atol=atol)
    return ds


def dciodvfy(path: Path) -> list[str]:
    """dciodvfy's errors and warnings on `path` (all it says is printed for the test log)."""
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    print("\n".join(lines))
    return [line for line in lines if line.startswith(("Error", "Warning"))]


# No defined term of Derived Pixel Contrast describes an entropy map: highdicom's QUANTITY, which
# dciodvfy does not know, is the one warning we accept (README, "DICOM and Slicer export").
QUANTITY_WARNINGS = [
    f"Warning - Unrecognized defined term <QUANTITY> for value 4 of attribute <{attribute}>"
    for attribute in ("Image Type", "Frame Type")
]


# -- real data: the LGG sample as a DICOM series through `aimc predict` ---------------------------


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> tuple[Path, Path]:
    """The LGG sample written as a DICOM series, segmented digitally, exported in every format."""
    root = tmp_path_factory.mktemp("dicom_export")
    series = lgg_series(root / "series")
    out = root / "out"
    argv = [
        "predict",
        str(series),
        "--model",
        "lgg_unet_digital",
        "--mode",
        "digital",
        "--quiet",
        "--format",
        "nifti,dicom-seg",
        "--format",
        "seg-nrrd",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    return series, out


@pytest.mark.slow
def test_seg_frames_lie_on_the_source_slices_and_match_the_nifti(predicted) -> None:
    series, out = predicted
    labels = nib.load(out / "seg.nii.gz")
    assert np.asanyarray(labels.dataobj).any()  # the sample has a lesion: something to check
    check_binary_seg(out / DICOM_FILES["dicom_segmentation"], series, labels, {1: "FLAIR abnormality"})
    seg = hd.seg.segread(out / DICOM_FILES["dicom_segmentation"])
    description = seg.get_segment_description(1)
    assert description.segmented_property_category.meaning == "Morphologically Altered Structure"
    assert description.segmented_property_type.value == "52988006"  # SNOMED CT Lesion
    assert description.anatomic_regions[0].meaning == "Brain"
    assert description.get("RecommendedDisplayCIELabValue") is not None
    algorithm = description.algorithm_identification[0]
    assert algorithm.AlgorithmName == "lgg_unet_digital"
    parameters = dict(p.split("=", 1) for p in algorithm.AlgorithmParameters.split(","))
    # a digital run has no chips: no MC samples, noise, drift or seed to mislead a reader
    assert parameters == {"architecture": "unet", "kind": "digital", "mode": "digital"}
    volume = seg.get_volume(combine_segments=True)
    assert int(volume.array.astype(bool).sum()) == int(np.asanyarray(labels.dataobj).sum())


@pytest.mark.slow
def test_parametric_map_holds_the_uncertainty_as_float_with_its_unit(predicted) -> None:
    series, out = predicted
    ds = check_float_map(
        out / DICOM_FILES["dicom_uncertainty"], series, nib.load(out / "uncertainty.nii.gz"), 1e-6
    )
    assert "FloatPixelData" in ds and ds.pixel_array.dtype == np.float32
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "{nat}"
    assert (mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept) == (1.0, 0.0)
    entropy = nib.load(out / "uncertainty.nii.gz").get_fdata()
    assert mapping.DoubleFloatRealWorldValueLastValueMapped == pytest.approx(entropy.max(), rel=1e-6)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert hd.pm.ParametricMap.from_dataset(ds).get_volume().array.shape[0] == ds.NumberOfFrames


@pytest.mark.slow
def test_fractional_seg_holds_the_foreground_probability(predicted) -> None:
    series, out = predicted
    ds = check_float_map(
        out / DICOM_FILES["dicom_probability"],
        series,
        nib.load(out / "probability.nii.gz"),
        0.6 / 255,
        1 / 255,
    )
    assert ds.SegmentationType == "FRACTIONAL" and ds.SegmentationFractionalType == "PROBABILITY"


@pytest.mark.slow
def test_seg_nrrd_has_the_niftis_geometry(predicted) -> None:
    _, out = predicted
    nrrd_image = sitk.ReadImage(str(out / SEG_NRRD_FILE))
    nifti_image = sitk.ReadImage(str(out / "seg.nii.gz"))
    assert nrrd_image.GetSize() == nifti_image.GetSize()
    np.testing.assert_allclose(nrrd_image.GetOrigin(), nifti_image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(nrrd_image.GetSpacing(), nifti_image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(nrrd_image.GetDirection(), nifti_image.GetDirection(), atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(nrrd_image), sitk.GetArrayFromImage(nifti_image))
    assert nrrd_image.GetMetaData("Segment0_Name") == "FLAIR abnormality"


@pytest.mark.slow
@NEEDS_DCIODVFY
def test_dciodvfy_finds_no_errors_on_the_lgg_export(predicted) -> None:
    _, out = predicted
    assert dciodvfy(out / DICOM_FILES["dicom_segmentation"]) == []
    assert dciodvfy(out / DICOM_FILES["dicom_uncertainty"]) == QUANTITY_WARNINGS  # an entropy map
    assert dciodvfy(out / DICOM_FILES["dicom_probability"]) == []


# -- geometry on small series, in several orientations (fast, no network) ------------------------

ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "axial, rows and slices flipped": (1, 0, 0, 0, -1, 0, 0, 0, -1),
    "sagittal": (0, 1, 0, 0, 0, -1, -1, 0, 0),
    "coronal": (1, 0, 0, 0, 0, -1, 0, 1, 0),
}


@pytest.mark.parametrize("direction", ORIENTATIONS.values(), ids=ORIENTATIONS.keys())
def test_frames_are_the_source_images_pixel_for_pixel(tmp_path, direction) -> None:
    """Cut the scan itself into frames: each must be its source file's own pixel data."""
    rng = np.random.default_rng(0)
    series = write_series(tmp_path, rng.integers(0, 1000, size=(5, 7, 6)), direction, spacing=(0.8, 0.9, 2.0))
    volume = load_scan(series)
    headers = source_headers(volume)
    frames = source_frames(volume, headers, volume.data)
    assert frames.shape == (5, 7, 6)
    for header, frame in zip(headers, frames, strict=True):
        assert np.array_equal(frame, pydicom.dcmread(header.filename).pixel_array)


def _result(volume, spec, seed: int = 0) -> VolumeResult:
    """A made-up result on `volume` (a block of label 1, random maps) for the writers' mechanics."""
    result = VolumeResult.for_model(volume, spec)
    rng = np.random.default_rng(seed)
    result.segmentation[1:4, 2:5, 1:3] = 1
    foreground = rng.random(volume.shape).astype(np.float32)
    result.probabilities = np.stack([1 - foreground, foreground], axis=-1)
    for name in result.maps:
        result.maps[name] = rng.random(volume.shape).astype(np.float32)
    result.finished[:] = True
    return result


RUN = RunSettings(model="small_unet", mode="analog", mc_samples=4, noise_level=1.5, drift_s=86400, seed=3)


@pytest.fixture
def sagittal_export(tmp_path, small_model) -> tuple[Path, Path]:
    """A made-up analog result on a small sagittal series, exported as NIfTI and DICOM."""
    series = write_series(
        tmp_path / "series", np.arange(5 * 7 * 6).reshape(5, 7, 6), ORIENTATIONS["sagittal"]
    )
    background, lesion = small_model.labels
    spec = replace(small_model, labels=[background, replace(lesion, name="FLAIR abnormality")])
    out = tmp_path / "out"
    written = write_results(
        _result(load_scan(series), spec), out, spec, RUN, "std", formats=("nifti", "dicom-seg")
    )
    assert {p.name for p in written.values()} >= set(DICOM_FILES.values())
    return series, out


def test_seg_map_and_fractional_seg_of_a_sagittal_series(sagittal_export) -> None:
    series, out = sagittal_export
    check_binary_seg(out / "seg.dcm", series, nib.load(out / "seg.nii.gz"), {1: "FLAIR abnormality"})
    ds = check_float_map(out / "uncertainty.dcm", series, nib.load(out / "uncertainty.nii.gz"), 1e-6)
    assert ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0].LUTLabel == "std"
    check_float_map(out / "probability.dcm", series, nib.load(out / "probability.nii.gz"), 0.6 / 255, 1 / 255)
    seg = hd.seg.segread(out / "seg.dcm")
    parameters = seg.get_segment_description(1).algorithm_identification[0].AlgorithmParameters
    assert dict(p.split("=", 1) for p in parameters.split(",")) == {
        "architecture": "unet",
        "kind": "digital",
        "mode": "analog",
        "mc_samples": "4",
        "noise_level": "1.5",
        "drift_s": "86400",
        "seed": "3",
    }


@NEEDS_DCIODVFY
def test_dciodvfy_finds_nothing_on_a_sagittal_series(sagittal_export) -> None:
    """The standard deviation map is the defined term STD_DEVIATION: not even a warning."""
    _, out = sagittal_export
    for name in DICOM_FILES.values():
        assert dciodvfy(out / name) == [], name
    ds = pydicom.dcmread(out / DICOM_FILES["dicom_uncertainty"], stop_before_pixels=True)
    assert ds.ImageType[3] == "STD_DEVIATION"


def test_an_empty_segmentation_still_makes_a_valid_seg(tmp_path, small_model) -> None:
    volume = load_scan(write_series(tmp_path, np.ones((3, 4, 5)) * 7))
    result = _result(volume, small_model)
    result.segmentation[:] = 0
    seg = dicom_objects(result, small_model, RUN, uncertainty=False, probability=False)["segmentation"]
    assert seg.NumberOfFrames >= 1 and not seg.pixel_array.any()
