"""The model gate on real scans: each data set's scans get their own models, and nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from engine.compatibility import assess, choose_model
from engine.model_store import list_models
from engine.volume import Volume, load_scan
from tests.conftest import SHARED_DATA
from tests.test_engine_volume import _write_dicom_series

SAMPLE = "resources/samples/lgg_sample.nii.gz"


@pytest.fixture(scope="module")
def specs():
    return list_models()


def _needs(path):
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return load_scan(path)


def test_lgg_scan_gets_an_lgg_model(specs):
    chosen, fits = choose_model(load_scan(SAMPLE), specs)
    assert chosen is not None and chosen.data["dataset"] == "lgg"
    assert chosen.name == "lgg_unet_hwa"  # the U-Net, hardware-aware kind, when nothing else decides
    refused = {f.model for f in fits if not f.fits}
    assert refused == {s.name for s in specs if s.data["dataset"] != "lgg"}


def test_the_current_model_is_kept_while_it_fits(specs):
    chosen, _ = choose_model(load_scan(SAMPLE), specs, current="lgg_swinunetr_digital")
    assert chosen.name == "lgg_swinunetr_digital"


def test_ct_fits_no_installed_model(specs):
    chosen, fits = choose_model(_needs(SHARED_DATA / "ct_example" / "example_ct_sm.nii.gz"), specs)
    assert chosen is None
    lgg = next(f for f in fits if f.model == "lgg_unet_hwa")
    assert "negative" in lgg.explain()


def test_hippocampus_scan_gets_a_hippocampus_model_and_lgg_models_refuse_it(specs):
    volume = _needs(SHARED_DATA / "hippocampus" / "imagesTr" / "hippocampus_004.nii.gz")
    chosen, fits = choose_model(volume, specs)
    assert chosen.name == "hippocampus_unet_hwa"
    assert "trained on 256..256 voxels" in next(f for f in fits if f.model == "lgg_unet_digital").explain()


def test_3d_models_refuse_a_2d_image_and_the_2d_model_refuses_a_volume(specs):
    image = Volume(np.random.default_rng(0).random((300, 400, 1)).astype(np.float32) * 200, np.eye(4))
    chosen, _ = choose_model(image, specs)
    assert chosen is not None and chosen.data["dataset"] == "nuclei"
    nuclei = next(s for s in specs if s.name == "nuclei_unet_hwa")
    fit = assess(load_scan(SAMPLE), nuclei)
    assert not fit.fits and "3D volume" in fit.explain()


def _dicom(tmp_path, tags: dict[str, str | None], shape=(20, 256, 256), value_range=(0, 200)):
    rng = np.random.default_rng(0)
    arr = rng.integers(*value_range, size=shape)
    _write_dicom_series(tmp_path, arr, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    for path in sorted(tmp_path.glob("*.dcm")):
        image = sitk.ReadImage(str(path))
        for tag, value in tags.items():
            if value is None:
                image.EraseMetaData(tag)
            else:
                image.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(path))
        writer.Execute(image)
    return load_scan(tmp_path)


def test_dicom_modality_ct_is_refused_by_metadata(tmp_path, specs):
    """An LGG-sized series tagged CT: the geometry would fit, the modality decides."""
    volume = _dicom(tmp_path, {"0008|0060": "CT"})
    assert volume.modality == "CT"
    chosen, fits = choose_model(volume, specs)
    assert chosen is None
    assert all(f.by_metadata for f in fits if f.model.startswith("lgg"))
    assert (
        "the scan is CT; the model reads MR" in next(f for f in fits if f.model == "lgg_unet_hwa").explain()
    )


def test_dicom_body_part_and_series_description(tmp_path, specs):
    volume = _dicom(tmp_path, {"0018|0015": "HEAD", "0008|103e": "AX T2 FLAIR"})
    chosen, fits = choose_model(volume, specs)
    fit = next(f for f in fits if f.model == chosen.name)
    assert chosen.name == "lgg_unet_hwa" and fit.by_metadata
    assert "sequence FLAIR" in fit.explain()
    other = tmp_path / "t1"
    other.mkdir()
    t1 = _dicom(other, {"0018|0015": "ABDOMEN"})
    assert choose_model(t1, [s for s in specs if s.data["dataset"] == "lgg"])[0] is None


def test_dicom_without_tags_is_judged_by_its_statistics(tmp_path, specs):
    volume = _dicom(
        tmp_path, {"0008|0060": None, "0008|0016": "1.2.840.10008.5.1.4.1.1.7"}, shape=(20, 256, 256)
    )
    assert volume.modality in ("unknown", "OT")  # secondary capture: GDCM writes OT or nothing
    chosen, fits = choose_model(volume, specs)
    assert chosen.name == "lgg_unet_hwa"
    assert not next(f for f in fits if f.model == chosen.name).by_metadata
