"""Slicer's seg.nrrd: the label map on the NIfTI export's grid, with segment names, colours, extents and
terminology in the header as Slicer writes them; read back with pynrrd and SimpleITK."""

from __future__ import annotations

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from engine.model_store import Label, ModelSpec
from engine.preprocessing import Preprocessing
from engine.segnrrd import save_seg_nrrd
from engine.volume import ScanError, load_scan, save_nifti
from tests.conftest import SAMPLES


def _spec(*labels: Label) -> ModelSpec:
    """A model description with these labels (the writer reads nothing else)."""
    return ModelSpec("test", "unet", {}, Preprocessing(input_size=(64, 64)), list(labels))


@pytest.fixture
def hippocampus_spec() -> ModelSpec:
    """The labels, names and colours of the shipped hippocampus models."""
    return _spec(
        Label(0, "background", (0, 0, 0)),
        Label(1, "anterior hippocampus", (255, 200, 0)),
        Label(2, "posterior hippocampus", (0, 160, 255)),
    )


def test_seg_nrrd_of_the_lgg_sample_has_the_niftis_geometry_and_slicers_fields(tmp_path, lgg_case) -> None:
    scan, truth = lgg_case
    volume = load_scan(scan)
    labels = (load_scan(truth).data > 0).astype(np.uint8) * 2  # the reference as label 2
    labels[:5, :5, :3] = 1  # and a small block as label 1
    spec = _spec(
        Label(0, "background", (0, 0, 0)),
        Label(1, "lesion", (10, 20, 30)),
        Label(2, "FLAIR abnormality", (255, 80, 40)),
    )
    path = save_seg_nrrd(volume, labels, spec, tmp_path / "seg.seg.nrrd")
    nifti = save_nifti(volume, labels, tmp_path / "seg.nii.gz", np.uint8)

    read, nifti_read = sitk.ReadImage(str(path)), sitk.ReadImage(str(nifti))
    assert read.GetSize() == nifti_read.GetSize()
    np.testing.assert_allclose(read.GetOrigin(), nifti_read.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(read.GetSpacing(), nifti_read.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(read.GetDirection(), nifti_read.GetDirection(), atol=1e-9)
    assert np.array_equal(sitk.GetArrayFromImage(read), sitk.GetArrayFromImage(nifti_read))

    data, header = nrrd.read(str(path))
    assert header["space"] == "left-posterior-superior" and data.dtype == np.uint8
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert header["Segment0_Name"] == "lesion" and header["Segment0_LabelValue"] == "1"
    assert header["Segment1_Name"] == "FLAIR abnormality" and header["Segment1_LabelValue"] == "2"
    assert header["Segment1_Color"] == "1 0.313725 0.156863"
    assert header["Segment0_Extent"] == "251 255 251 255 0 2"  # the block, in the file's (L, P, S) order
    i, j, k = np.nonzero(data == 2)
    assert header["Segment1_Extent"] == f"{i.min()} {i.max()} {j.min()} {j.max()} {k.min()} {k.max()}"
    assert (
        "SCT^52988006^Lesion" in header["Segment1_Tags"] and "SCT^12738006^Brain" in header["Segment1_Tags"]
    )
    assert "Segment2_Name" not in header  # background is no segment


def test_an_empty_segment_has_slicers_empty_extent(tmp_path, hippocampus_spec) -> None:
    volume = load_scan(SAMPLES / "lgg_sample.nii.gz")
    labels = np.zeros(volume.shape, np.uint8)
    labels[10:12, 20:25, 3] = 2
    _, header = nrrd.read(str(save_seg_nrrd(volume, labels, hippocampus_spec, tmp_path / "h.seg.nrrd")))
    assert header["Segment0_Name"] == "anterior hippocampus" and header["Segment0_Extent"] == "0 -1 0 -1 0 -1"
    assert (
        header["Segment1_Extent"] != "0 -1 0 -1 0 -1" and "SCT^5300000^Hippocampus" in header["Segment1_Tags"]
    )


def test_a_refused_write_is_one_message_and_leaves_nothing(tmp_path, hippocampus_spec) -> None:
    volume = load_scan(SAMPLES / "lgg_sample.nii.gz")
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with pytest.raises(ScanError, match="could not write"):
        save_seg_nrrd(volume, np.zeros(volume.shape, np.uint8), hippocampus_spec, blocked / "x.seg.nrrd")
    with pytest.raises(ScanError, match="does not match"):
        save_seg_nrrd(volume, np.zeros((2, 2, 2), np.uint8), hippocampus_spec, tmp_path / "x.seg.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
