"""The adversarial corpus of issue 18, generated at test time (no binaries in the repository).

Each `Case` builds, in a fresh folder, the command line of one `aimc predict` that must be refused:
lying headers, decompression bombs, broken header fields, names SimpleITK or the file system cannot
take, broken DICOM series, absurd settings, output folders it must not write into, models that do
not fit. `tests/test_corpus.py` runs them in the test process (fast) and, under `make fuzz`, each in
its own process with its memory measured.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from engine.files import OutputSet

DIM, DATATYPE, SCL = 40, 70, 112  # NIfTI-1 header offsets of dim[8], datatype + bitpix, scl_slope + inter
NIFTI2_DIM = 16  # NIfTI-2: dim[8] as int64


def nifti(path: Path, patch: dict[int, tuple[str, tuple]] | None = None, shape=(4, 4, 4), two=False) -> Path:
    """A small valid NIfTI file, then header fields overwritten in place (offset -> format, values)."""
    kind = nib.Nifti2Image if two else nib.Nifti1Image
    nib.save(kind(np.ones(shape, np.uint8), np.eye(4)), str(path))
    raw = bytearray(path.read_bytes())
    for offset, (fmt, values) in (patch or {}).items():
        struct.pack_into(fmt, raw, offset, *values)
    path.write_bytes(bytes(raw))
    return path


def tiny_scan(path: Path, shape=(32, 32, 6), low: float = 0.0, high: float = 100.0, seed: int = 0) -> Path:
    """A small valid 3D scan (1 mm voxels); `low` < 0 makes it CT-like."""
    rng = np.random.default_rng(seed)
    nib.save(nib.Nifti1Image(rng.uniform(low, high, shape).astype(np.float32), np.eye(4)), str(path))
    return path


def bomb(path: Path, side: int = 1024, data_bytes: int = 1 << 20) -> Path:
    """A gzipped NIfTI declaring side^3 uint8 voxels, with `data_bytes` of zeros (all of them: a real bomb,
    about a megabyte compressed)."""
    header = nib.Nifti1Header()
    header.set_data_shape((side, side, side))
    header.set_data_dtype(np.uint8)
    header.set_qform(np.eye(4), 1)
    block = b"\0" * (1 << 24)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header.binaryblock + b"\0" * 4)
        for start in range(0, data_bytes, len(block)):
            f.write(block[: min(len(block), data_bytes - start)])
    return path


def earlier_set(folder: Path) -> None:
    """An earlier complete output set and an unrelated file of the user's, both to be left as they are."""
    folder.mkdir(parents=True, exist_ok=True)
    with OutputSet(folder) as out:
        for name in ("seg.nii.gz", "uncertainty.nii.gz", "probability.nii.gz", "summary.json"):
            out.path(name).write_text(f"earlier {name}")
        out.commit()
    (folder / "reference_by_dr_x.nii.gz").write_text("a manual segmentation")


def _span(low: float, high: float) -> dict:
    return {"low": low, "high": high}


# The card of a brain FLAIR model trained on small scans like `tiny_scan`'s (MR: no negative voxels).
MR_CARD = {
    "modality": "MR",
    "body_part": "BRAIN",
    "dimensionality": "3D",
    "sequence": "FLAIR",
    "training_domain": {
        "scans": 4,
        "in_plane": _span(32, 64),
        "slices": _span(6, 12),
        "in_plane_spacing": _span(1, 1),
        "slice_spacing": _span(1, 1),
        "quantiles": [_span(0, 10), _span(0, 100), _span(50, 200)],
        "negative_fraction": _span(0, 0),
    },
}


def carded_model(small_model, folder: Path, card: dict = MR_CARD) -> Path:
    """The small test model with a model card (what the gate checks a scan against)."""
    shutil.copytree(small_model.folder, folder)
    d = json.loads((folder / "model.json").read_text())
    d["card"] = card
    (folder / "model.json").write_text(json.dumps(d))
    return folder


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Path], list[str]]  # (folder, model folder) -> aimc arguments
    words: str = ""  # in the one line on stderr (lower case)
    loads_torch: bool = False  # refused only once the network is built


def _predict(scan: Path | str, tmp: Path, model: Path, *extra: str, out: str | None = None) -> list[str]:
    if out is None:
        earlier_set(tmp / "out")
        out = str(tmp / "out")
    return ["predict", str(scan), "--model", str(model), "--mode", "digital", "--out", out, *extra]


def _scan(tmp: Path) -> Path:
    return tiny_scan(tmp / "scan.nii.gz")


def _non_utf8_2d(tmp: Path) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8), np.float32)), str(tmp / "ok.mha"))
    name = tmp / os.fsdecode(b"scan-\xff\xfe.mha")
    os.rename(tmp / "ok.mha", name)
    return name


def _dicom_gap(tmp: Path) -> Path:
    from tests.test_engine_volume import _write_dicom_series

    folder = tmp / "dicom"
    folder.mkdir()
    _write_dicom_series(
        folder, np.arange(6 * 4 * 5).reshape(6, 4, 5), (1.0, 1.0, 2.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    (folder / "slice003.dcm").unlink()
    return folder


def _broken_json(tmp: Path, model: Path) -> Path:
    folder = tmp / "broken_model"
    shutil.copytree(model, folder)
    d = json.loads((folder / "model.json").read_text())
    d["preprocessing"]["slice_axis"] = "oblique"
    (folder / "model.json").write_text(json.dumps(d))
    return folder


def _bad_weights(tmp: Path, model: Path, file: str) -> Path:
    from safetensors.torch import load_file, save_file

    folder = tmp / "bad_weights"
    shutil.copytree(model, folder)
    state = load_file(str(folder / file))
    name = next(k for k, v in state.items() if v.ndim >= 2)
    state[name] = state[name].new_zeros(state[name].shape[0] + 3, *state[name].shape[1:])
    save_file(state, str(folder / file))
    return folder


def _input_in_out_folder(tmp: Path, model: Path, overwrite: bool) -> list[str]:
    out = tmp / "out"
    out.mkdir()
    scan = tiny_scan(out / "probability.nii.gz")
    (out / "reference_by_dr_x.nii.gz").write_text("a manual segmentation")
    return _predict(scan, tmp, model, *(["--overwrite"] if overwrite else []), out=str(out))


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe.nii.gz")
    return tmp / "pipe.nii.gz"


def _random_bytes(tmp: Path) -> Path:
    (tmp / "noise.nii.gz").write_bytes(np.random.default_rng(0).bytes(5000))
    return tmp / "noise.nii.gz"


def _nan_scan(tmp: Path) -> Path:
    data = np.ones((8, 8, 4), np.float32)
    data[2, 2, 2] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp / "nan.nii.gz"))
    return tmp / "nan.nii.gz"


def _file_as_out(tmp: Path) -> str:
    (tmp / "a_file").write_text("not a folder")
    return str(tmp / "a_file")


CASES = [
    # headers that lie about the size, and bombs
    Case(
        "absurd NIfTI-1 size",
        lambda t, m: _predict(nifti(t / "h.nii", {DIM: ("<4h", (3, 32767, 32767, 32767))}), t, m),
        "declares",
    ),
    Case(
        "absurd NIfTI-2 size",
        lambda t, m: _predict(
            nifti(t / "h.nii", {NIFTI2_DIM: ("<4q", (3, 100000, 100000, 100000))}, two=True), t, m
        ),
        "declares",
    ),
    Case(
        "1300^3 with 1 KiB of data",
        lambda t, m: _predict(nifti(t / "h.nii", {DIM: ("<4h", (3, 1300, 1300, 1300))}), t, m),
        "declares",
    ),
    Case(
        "truncated data",
        lambda t, m: _predict(nifti(t / "h.nii", {DIM: ("<4h", (3, 300, 300, 300))}), t, m),
        "truncated",
    ),
    Case("decompression bomb header", lambda t, m: _predict(bomb(t / "bomb.nii.gz"), t, m), "declares"),
    # header fields nibabel refuses
    Case("rank 9", lambda t, m: _predict(nifti(t / "h.nii", {DIM: ("<h", (9,))}), t, m), "not a readable"),
    Case(
        "datatype 9999",
        lambda t, m: _predict(nifti(t / "h.nii", {DATATYPE: ("<2h", (9999, 8))}), t, m),
        "9999",
    ),
    Case(
        "datatype bit",
        lambda t, m: _predict(nifti(t / "h.nii", {DATATYPE: ("<2h", (1, 1))}), t, m),
        "not a readable",
    ),
    Case(
        "datatype float128",
        lambda t, m: _predict(nifti(t / "h.nii", {DATATYPE: ("<2h", (1536, 128))}), t, m),
        "1536",
    ),
    Case(
        "scl_inter inf",
        lambda t, m: _predict(nifti(t / "h.nii", {SCL: ("<2f", (1.0, float("inf")))}), t, m),
        "intercept",
    ),
    # files that are not scans
    Case("empty file", lambda t, m: _predict((t / "e.nii.gz").touch() or t / "e.nii.gz", t, m), "empty"),
    Case("random bytes", lambda t, m: _predict(_random_bytes(t), t, m)),
    Case("NaN voxels", lambda t, m: _predict(_nan_scan(t), t, m), "nan"),
    Case("FIFO", lambda t, m: _predict(_fifo(t), t, m)),
    Case("2D image at a non-UTF-8 name", lambda t, m: _predict(_non_utf8_2d(t), t, m), "2d"),
    Case("file name too long", lambda t, m: _predict(t / ("a" * 300 + ".nii.gz"), t, m), "cannot be opened"),
    Case("DICOM series with a gap", lambda t, m: _predict(_dicom_gap(t), t, m), "uneven slice spacing"),
    # settings, refused before anything loads
    Case("seed 2**62", lambda t, m: _predict(_scan(t), t, m, "--seed", str(2**62)), "seed"),
    Case("MC 0", lambda t, m: _predict(_scan(t), t, m, "--mc", "0"), "mc samples"),
    Case("noise 5", lambda t, m: _predict(_scan(t), t, m, "--noise", "5"), "noise"),
    Case("drift 0", lambda t, m: _predict(_scan(t), t, m, "--drift", "0"), "drift"),
    Case("--channel on a 3D scan", lambda t, m: _predict(_scan(t), t, m, "--channel", "0"), "single channel"),
    # output folders
    Case("--out ''", lambda t, m: _predict(_scan(t), t, m, out=""), "empty path"),
    Case(
        "output folder name too long",
        lambda t, m: _predict(_scan(t), t, m, out=str(t / ("o" * 300))),
        "name too long",
    ),
    Case(
        "output folder is a file",
        lambda t, m: _predict(_scan(t), t, m, out=_file_as_out(t)),
        "not a folder",
    ),
    Case(
        "a reference seg.nii.gz in the output folder",
        lambda t, m: _predict(_scan(t), t, m, out=_foreign(t)),
        "not written by aimc",
    ),
    Case(
        "the input is probability.nii.gz in the output folder",
        lambda t, m: _input_in_out_folder(t, m, False),
        "input scan",
    ),
    Case("... and --overwrite", lambda t, m: _input_in_out_folder(t, m, True), "input scan"),
    # models
    Case("no such model", lambda t, m: _predict(_scan(t), t, t / "nothing"), "no model named"),
    Case(
        "model.json against the schema", lambda t, m: _predict(_scan(t), t, _broken_json(t, m)), "slice_axis"
    ),
    Case(
        "a model that does not fit the scan",
        lambda t, m: _predict(tiny_scan(t / "ct.nii.gz", (64, 64, 12), -1000, 1000), t, m),
        "negative",
    ),
    Case(
        "weights of the wrong shape",
        lambda t, m: _predict(_scan(t), t, _bad_weights(t, m, "weights.safetensors")),
        "do not fit",
        True,
    ),
    Case(
        "analog weights of the wrong shape",
        lambda t, m: _predict(
            _scan(t), t, _bad_weights(t, m, "analog.safetensors"), "--mode", "analog", "--mc", "1"
        ),
        "do not fit",
        True,
    ),
]


def _foreign(tmp: Path) -> str:
    out = tmp / "out"
    out.mkdir()
    (out / "seg.nii.gz").write_text("a manual reference segmentation")
    return str(out)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (names relative, as bytes) with its contents; FIFOs by name only."""
    found = {}
    for root, _dirs, files in os.walk(os.fsencode(folder)):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, os.fsencode(folder))
            found[rel.decode("utf-8", "replace")] = (
                b"fifo" if not os.path.isfile(path) else Path(os.fsdecode(path)).read_bytes()
            )
    return found
