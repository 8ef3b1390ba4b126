"""Training data: Medical Segmentation Decathlon folders and Data Science Bowl nuclei, split by patient.

Volumes go through the engine's own reader and preprocessing (`engine.volume`, `engine.preprocessing`),
so a model is trained on exactly the pixels it will see in the viewer.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
)
from torch.utils.data import Dataset

from engine.preprocessing import (
    Preprocessing,
    get_slice,
    input_slices,
    normalise_volume,
    resize_labels,
    slice_count,
    to_model_input,
)
from engine.volume import ScanError, load_scan


@dataclass(frozen=True)
class Case:
    case_id: str
    image: Path
    label: Path
    patient: str


def read_msd(root: Path) -> list[Case]:
    """Cases of an MSD-layout folder (`dataset.json`, `imagesTr/`, `labelsTr/`)."""
    meta = json.loads((root / "dataset.json").read_text())
    cases = []
    for entry in meta["training"]:
        image = root / entry["image"]
        case_id = image.name.split(".")[0]
        cases.append(Case(case_id, image, root / entry["label"], entry.get("patient", case_id)))
    return cases


def read_nuclei(root: Path) -> list[Case]:
    """Data Science Bowl layout: `images/ID.png` with `labels/ID.png` instance maps (0 = background)."""
    return [
        Case(p.stem, p, root / "labels" / p.name, p.stem) for p in sorted((root / "images").glob("*.png"))
    ]


def read_dataset(root: Path) -> tuple[str, list[Case]]:
    if (root / "dataset.json").exists():
        return "msd", read_msd(root)
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "nuclei", read_nuclei(root)
    raise ValueError(f"{root}: neither an MSD folder (dataset.json) nor a nuclei folder (images/, labels/)")


def split_by_patient(
    cases: list[Case], seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> dict[str, list[str]]:
    """Seeded train/val/test split of patients; every slice of a patient lands in one split."""
    patients = sorted({c.patient for c in cases})
    random.Random(seed).shuffle(patients)
    n_val = max(1, round(fractions[1] * len(patients)))
    n_test = max(1, round(fractions[2] * len(patients)))
    groups = {
        "val": set(patients[:n_val]),
        "test": set(patients[n_val : n_val + n_test]),
        "train": set(patients[n_val + n_test :]),
    }
    return {name: sorted(c.case_id for c in cases if c.patient in group) for name, group in groups.items()}


def load_volume_case(case: Case, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """All slices of one volume at the model's size: images (N, C, h, w) float32, labels (N, h, w) int64."""
    image = load_scan(case.image)
    label = load_scan(case.label)
    if label.shape != image.shape:
        raise ScanError(f"{case.label}: label shape {label.shape} differs from image {image.shape}")
    data = normalise_volume(image.data, prep)
    n = slice_count(image.shape, prep.slice_axis)
    imgs = np.stack([input_slices(data, prep.slice_axis, k, prep) for k in range(n)])  # (N, C, H, W)
    labs = np.stack([get_slice(np.rint(label.data), prep.slice_axis, k) for k in range(n)]).astype(np.int64)
    x = to_model_input(imgs, prep).numpy()
    y = resize_labels(labs, prep.input_size)
    return x, y


def read_nuclei_image(case: Case, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """A microscopy image as normalised grey levels (H, W) and its foreground mask, at full size."""
    from skimage.io import imread

    rgb = imread(case.image)
    grey = rgb[..., :3].mean(axis=-1) if rgb.ndim == 3 else rgb.astype(np.float32)
    return normalise_volume(grey, prep), (imread(case.label) > 0).astype(np.int64)


def load_nuclei_case(case: Case, prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """One microscopy image at the model's size, with its foreground mask."""
    grey, labels = read_nuclei_image(case, prep)
    return to_model_input(grey[None], prep).numpy(), resize_labels(labels[None], prep.input_size)


def load_cases(
    cases: list[Case], layout: str, prep: Preprocessing, log=print
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load every case; a broken one is reported and skipped, never fatal."""
    loader = load_nuclei_case if layout == "nuclei" else load_volume_case
    out = {}
    for case in cases:
        try:
            out[case.case_id] = loader(case, prep)
        except (ScanError, OSError, ValueError) as exc:
            log(f"skipping {case.case_id}: {exc}")
    return out


AUGMENTATIONS = ("standard", "strong")


def augmentations(seed: int, strength: str = "standard") -> Compose:
    """Flips, small rotations and scalings, intensity changes: MONAI's dictionary transforms.

    "strong" widens the geometry (rotation up to 20 degrees, scale 0.8-1.2, shifts) and the intensity
    changes (gain, offset, gamma 0.6-1.6, noise), and adds scanner effects: a smooth bias field
    (coil inhomogeneity) and blur. Every channel of a 2.5D input moves and changes together.
    """
    if strength == "strong":
        t = Compose(
            [
                RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
                RandAffined(
                    keys=["image", "label"],
                    prob=0.7,
                    rotate_range=0.35,
                    scale_range=0.2,
                    translate_range=(12, 12),
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                ),
                RandBiasFieldd(keys="image", coeff_range=(0.0, 0.3), prob=0.3),
                RandScaleIntensityd(keys="image", factors=0.25, prob=0.5),
                RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
                RandAdjustContrastd(keys="image", gamma=(0.6, 1.6), prob=0.5),
                RandGaussianSmoothd(keys="image", sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), prob=0.2),
                RandGaussianNoised(keys="image", std=0.04, prob=0.3),
            ]
        )
        t.set_random_state(seed)
        return t
    if strength != "standard":
        raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, not {strength!r}")
    t = Compose(
        [
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
            RandAffined(
                keys=["image", "label"],
                prob=0.5,
                rotate_range=0.26,
                scale_range=0.1,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
            RandAdjustContrastd(keys="image", gamma=(0.8, 1.25), prob=0.3),
            RandGaussianNoised(keys="image", std=0.02, prob=0.2),
        ]
    )
    t.set_random_state(seed)
    return t


class SliceDataset(Dataset):
    """2D slices of the given cases. Empty slices are subsampled so foreground is not drowned out.

    With `crop`, each (augmented) slice is cut to a random crop x crop patch, centred on a lesion pixel
    with probability `foreground_fraction` when the slice has one (nnU-Net: one in three): a network
    trains at the native resolution for the cost of a smaller input and still segments whole slices.
    """

    def __init__(
        self,
        loaded: dict[str, tuple[np.ndarray, np.ndarray]],
        case_ids: list[str],
        augment: bool,
        seed: int = 0,
        empty_fraction: float = 0.25,
        strength: str = "standard",
        crop: int | None = None,
        foreground_fraction: float = 1 / 3,
    ) -> None:
        xs, ys = [], []
        rng = np.random.default_rng(seed)
        for cid in case_ids:
            if cid not in loaded:
                continue
            x, y = loaded[cid]
            fg = y.reshape(len(y), -1).any(axis=1)
            keep = fg | (rng.random(len(y)) < empty_fraction)
            xs.append(x[keep])
            ys.append(y[keep])
        self.x = torch.from_numpy(np.concatenate(xs)).float()
        self.y = torch.from_numpy(np.concatenate(ys)).long()
        self.transform = augmentations(seed, strength) if augment else None
        self.crop, self.foreground_fraction = crop, foreground_fraction
        self.rng = np.random.default_rng(seed + 1)
        if crop is not None and not 0 < crop <= min(self.x.shape[-2:]):
            raise ValueError(f"crop {crop} does not fit slices of {tuple(self.x.shape[-2:])}")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.x[i], self.y[i][None]
        if self.transform is not None:
            d = self.transform({"image": x, "label": y.float()})
            x, y = torch.as_tensor(d["image"]).float(), torch.as_tensor(d["label"]).round().long()
        if self.crop is not None:
            x, y = self._cut(x, y)
        return x, y[0]

    def _cut(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, (h, w) = self.crop, y.shape[-2:]
        fg = torch.nonzero(y[0] > 0)
        if len(fg) and self.rng.random() < self.foreground_fraction:
            r, q = fg[self.rng.integers(len(fg))].tolist()
            top, left = min(max(r - c // 2, 0), h - c), min(max(q - c // 2, 0), w - c)
        else:
            top, left = int(self.rng.integers(h - c + 1)), int(self.rng.integers(w - c + 1))
        return x[..., top : top + c, left : left + c], y[..., top : top + c, left : left + c]
