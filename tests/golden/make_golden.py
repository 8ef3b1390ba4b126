"""Regenerate the golden arrays of `aimc predict` on the bundled sample.

Run only when behaviour is meant to change (say why in the commit): the golden test pins the
arrays that the command line writes, so a redesign that claims "no change in behaviour" is held to it.
    python tests/golden/make_golden.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[1] / "resources" / "samples" / "lgg_sample.nii.gz"
RUNS = {
    "digital": ["--mode", "digital"],
    "analog_mc4_seed0": ["--mode", "analog", "--mc", "4", "--seed", "0"],
}
FILES = ("seg", "uncertainty", "probability")
STEPS = 1_000  # maps are kept to 1e-3: far above float rounding, far below any change in behaviour


def predict_arrays(main, extra: list[str]) -> dict[str, np.ndarray]:
    """The arrays `aimc predict` writes for the sample with the default model."""
    with tempfile.TemporaryDirectory() as tmp:
        code = main(["predict", str(SAMPLE), "--model", "lgg_unet_digital", *extra, "--out", tmp, "--quiet"])
        if code != 0:
            raise RuntimeError(f"aimc predict exited {code}")
        return {name: np.asanyarray(nib.load(str(Path(tmp) / f"{name}.nii.gz")).dataobj) for name in FILES}


def main() -> None:
    sys.path.insert(0, str(HERE.parents[1]))
    from cli.main import main as aimc  # the command line at the time of regeneration

    for run, extra in RUNS.items():
        arrays = predict_arrays(aimc, extra)
        save(run, arrays)


def save(run: str, arrays: dict[str, np.ndarray]) -> None:
    """Labels exactly; maps in steps of 1/STEPS (a few hundred kB instead of 12 MB of float32 noise)."""
    quantised = {
        k: np.round(v.astype(np.float64) * STEPS).astype(np.uint16) for k, v in arrays.items() if k != "seg"
    }
    sums = {f"{k}_sum": np.float64(v.astype(np.float64).sum()) for k, v in arrays.items() if k != "seg"}
    np.savez_compressed(HERE / f"predict_{run}.npz", seg=arrays["seg"], **quantised, **sums)


if __name__ == "__main__":
    main()
