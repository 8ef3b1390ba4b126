"""What a model sees: slices cut in display orientation, intensities normalised, resized to its input.

Training and inference both call these functions, so a model meets the same pixels in both.

Slices are cut in radiological display orientation from the RAS+ canonical volume: rows run
anterior->posterior (axial) or superior->inferior (coronal, sagittal), and columns run from the
patient's right to left (axial, coronal) or anterior to posterior (sagittal).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import ScaleIntensityRange, ScaleIntensityRangePercentiles

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}


def slice_count(shape: tuple[int, ...], axis: str) -> int:
    return int(shape[AXES[axis]])


def get_slice(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """The display-oriented 2D slice `index` along `axis` of a canonical (i, j, k[, c]) array."""
    cut = np.take(volume, index, axis=AXES[axis])
    return np.flip(cut, (0, 1)).swapaxes(0, 1)


def set_slice(volume: np.ndarray, axis: str, index: int, image: np.ndarray) -> None:
    """Write a display-oriented 2D slice back into a canonical array (inverse of `get_slice`)."""
    cut = np.flip(image.swapaxes(0, 1), (0, 1))
    idx: list = [slice(None)] * volume.ndim
    idx[AXES[axis]] = index
    volume[tuple(idx)] = cut


@dataclass(frozen=True)
class Preprocessing:
    """How a model's input is made: recorded in its model.json."""

    normalisation: str = "percentile"  # "percentile" (MRI, microscopy) or "window" (CT, in HU)
    lower: float = 1.0  # percentile, or HU for "window"
    upper: float = 99.0
    input_size: tuple[int, int] = (128, 128)
    slice_axis: str = "axial"
    in_channels: int = 1
    context: int = (
        0  # 2.5D: neighbouring slices on each side fed as extra channels (in_channels = 2 * context + 1)
    )

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        d = dict(d)
        d["input_size"] = tuple(d.get("input_size", (128, 128)))
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def input_slices(volume: np.ndarray, axis: str, index: int, prep: Preprocessing) -> np.ndarray:
    """What the model reads for slice `index`: (C, H, W), the slice with its `prep.context` neighbours on each
    side in slice order (repeated at the volume's ends); (1, H, W) for a 2D model."""
    n = slice_count(volume.shape, axis)
    picks = np.clip(np.arange(index - prep.context, index + prep.context + 1), 0, n - 1)
    return np.stack([get_slice(volume, axis, int(k)) for k in picks])


def normalise_volume(data: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Scale a whole volume to [0, 1] once, so every slice of a case shares one intensity scale."""
    transform: ScaleIntensityRangePercentiles | ScaleIntensityRange
    if prep.normalisation == "percentile":
        transform = ScaleIntensityRangePercentiles(
            prep.lower, prep.upper, 0.0, 1.0, clip=True, relative=False
        )
    elif prep.normalisation == "window":
        transform = ScaleIntensityRange(prep.lower, prep.upper, 0.0, 1.0, clip=True)
    else:
        raise ValueError(f"unknown normalisation {prep.normalisation!r}")
    out = transform(np.asarray(data, dtype=np.float32))
    return np.asarray(out, dtype=np.float32)


def to_model_input(slices: np.ndarray, prep: Preprocessing) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) normalised slices -> (N, C, h, w) float tensor at the model's size."""
    x = torch.as_tensor(np.ascontiguousarray(slices), dtype=torch.float32)
    if x.ndim == 3:
        x = x[:, None]
    if tuple(x.shape[-2:]) != tuple(prep.input_size):
        x = F.interpolate(x, size=prep.input_size, mode="bilinear", align_corners=False, antialias=True)
    return x


def resize_probabilities(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring (..., C, h, w) class probabilities back to the slice's own size."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    lead = probs.shape[:-3]
    flat = probs.reshape(-1, *probs.shape[-3:])
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *out.shape[-3:])


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of (N, H, W) label slices to the model's input size."""
    t = torch.as_tensor(labels[:, None].astype(np.float32))
    out = F.interpolate(t, size=size, mode="nearest-exact")
    return out[:, 0].numpy().astype(np.int64)
