"""Monte-Carlo uncertainty from S samples of class probabilities (device noise is the sampler).

- mean probabilities p̄ = mean_s p_s; the segmentation is argmax p̄;
- predictive entropy H[p̄] (total uncertainty, nats);
- mutual information H[p̄] - mean_s H[p_s]: the part that comes from disagreement between samples,
  i.e. from device variability (the expected entropy is what every sample finds ambiguous);
- standard deviation over samples of the foreground probability 1 - p_background.
All three device-driven terms are zero when every sample agrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAPS = ("entropy", "mutual_information", "std")
MAP_TITLES = {
    "entropy": "predictive entropy",
    "mutual_information": "mutual information",
    "std": "std of foreground p",
}
MAP_UNITS = {"entropy": "nats", "mutual_information": "nats", "std": "probability"}
_EPS = 1e-12


def _entropy(p: torch.Tensor, dim: int) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(_EPS))).sum(dim)


@dataclass
class SliceStats:
    """Per-pixel results for one 2D slice (all arrays H x W except `probabilities`, C x H x W)."""

    probabilities: np.ndarray
    segmentation: np.ndarray
    entropy: np.ndarray
    mutual_information: np.ndarray
    std: np.ndarray
    # (S, S) voxels that samples s and t both call foreground (the diagonal: each sample's own count);
    # summed over slices it gives the agreement between chips as a mean pairwise Dice.
    overlap: np.ndarray | None = None


def mc_statistics(samples: torch.Tensor) -> SliceStats:
    """Statistics of (S, C, H, W) softmax samples."""
    mean = samples.mean(0)
    total = _entropy(mean, 0)
    expected = _entropy(samples, 1).mean(0)
    foreground = 1.0 - samples[:, 0]
    std = foreground.std(0, unbiased=False) if samples.shape[0] > 1 else torch.zeros_like(total)
    masks = (samples.argmax(1) > 0).flatten(1).to(torch.float32)
    return SliceStats(
        probabilities=mean.numpy().astype(np.float32),
        segmentation=mean.argmax(0).numpy().astype(np.uint8),
        entropy=total.numpy().astype(np.float32),
        mutual_information=(total - expected).clamp_min(0).numpy().astype(np.float32),
        std=std.numpy().astype(np.float32),
        overlap=(masks @ masks.T).round().to(torch.int64).numpy(),
    )
