"""Shared paths and fixtures. Real data lives in ../shared/data beside the repository."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# oneDNN's AVX-512/AMX convolutions sum in another order than its AVX2 ones; on a chip a last-bit
# difference can cross an ADC level, and the golden arrays (tests/golden) then differ in 2 % of the
# analog voxels. Every machine the suite runs on has AVX2, so capping the ISA there keeps them exact.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
# Tests compute on the CPU unless they ask for a device (the golden arrays are the CPU's).
os.environ["AIMC_DEVICE"] = "cpu"
# Never the user's chip store, not even from module- or session-wide fixtures (set up before any
# test's own store below); removed when the session ends.
os.environ["AIMC_CHIP_CACHE_DIR"] = tempfile.mkdtemp(prefix="aimc-test-chips-")
atexit.register(shutil.rmtree, os.environ["AIMC_CHIP_CACHE_DIR"], ignore_errors=True)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLES = REPO / "resources" / "samples"


@pytest.fixture(autouse=True)
def _own_chip_store(tmp_path_factory, monkeypatch) -> None:
    """Each test starts with an empty chip store of its own: never the user's, never another test's."""
    monkeypatch.setenv("AIMC_CHIP_CACHE_DIR", str(tmp_path_factory.mktemp("chip-store")))


@pytest.fixture
def programmed(monkeypatch) -> list[int]:
    """The seeds of the chips programmed during a test, in order."""
    import engine.analog.chips as chips_module

    seeds: list[int] = []
    real = chips_module.program_chip

    def counted(model, settings: object, seed: int, **kwargs: bool):
        seeds.append(seed)
        return real(model, settings, seed, **kwargs)

    monkeypatch.setattr(chips_module, "program_chip", counted)
    return seeds


@pytest.fixture(scope="session")
def lgg_case() -> tuple[Path, Path]:
    """A real LGG FLAIR volume (the bundled sample, 27 slices) and its ground-truth mask; it ships, so tests
    that need a real scan never skip."""
    return SAMPLES / "lgg_sample.nii.gz", SAMPLES / "lgg_sample_label.nii.gz"


@pytest.fixture(scope="session")
def tiny_lgg(tmp_path_factory) -> Path:
    """Five 'patients' made of the bundled LGG sample, MSD layout (the folder name picks the LGG
    preset): enough for the training loop's mechanics. Read-only: tests write their outputs elsewhere."""
    root = tmp_path_factory.mktemp("data") / "lgg"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries = []
    for i in range(5):
        shutil.copy(SAMPLES / "lgg_sample.nii.gz", root / "imagesTr" / f"lgg_{i}.nii.gz")
        shutil.copy(SAMPLES / "lgg_sample_label.nii.gz", root / "labelsTr" / f"lgg_{i}.nii.gz")
        entries.append(
            {"image": f"./imagesTr/lgg_{i}.nii.gz", "label": f"./labelsTr/lgg_{i}.nii.gz", "patient": f"P{i}"}
        )
    (root / "dataset.json").write_text(json.dumps({"training": entries}))
    return root


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A small randomly initialised U-Net model folder in the shipped format (for mechanics, not quality)."""
    import torch

    from engine.analog.conversion import calibrated_analog
    from engine.analog.device import DeviceSettings
    from engine.model_store import Label, ModelSpec, read_spec, save_model
    from engine.preprocessing import Preprocessing

    torch.manual_seed(0)
    args = dict(
        spatial_dims=2, in_channels=1, out_channels=2, channels=[4, 8, 16], strides=[2, 2], num_res_units=1
    )
    spec = ModelSpec(
        "small_unet",
        "unet",
        args,
        Preprocessing(input_size=(64, 64)),
        [Label(0, "background", (0, 0, 0)), Label(1, "lesion", (255, 0, 0))],
        "digital",
        DeviceSettings(),
    )
    net = spec.build().eval()
    folder = tmp_path_factory.mktemp("models") / "small_unet"
    save_model(spec, folder, net, calibrated_analog(net, spec.device, torch.rand(8, 1, 64, 64)))
    return read_spec(folder)


@pytest.fixture(scope="session")
def shipped_model():
    """The LGG U-Net shipped in resources/models (trained on real data)."""
    from engine.model_store import MODELS_DIR, find_model

    if not (MODELS_DIR / "lgg_unet_digital" / "model.json").exists():
        pytest.skip("the shipped LGG U-Net is not installed")
    return find_model("lgg_unet_digital")


@pytest.fixture
def calibration():
    """A trust calibration for the tests that need one: pairwise Dice 0.3 -> expected 0.4, 0.9 -> 0.9."""
    from engine.trust import TrustCalibration

    return TrustCalibration(
        score="pairwise_dice",
        knots=(0.3, 0.9),
        expected=(0.4, 0.9),
        error_low=-0.1,
        error_high=0.05,
        review_below=0.7,
        lesion_review_above=0.3,
        ood_threshold=1e9,
        ood_reference=(0.0,) * 10,
        fitted_on="test",
    )
