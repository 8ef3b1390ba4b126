"""What the reader reports about a (possibly partial) result: volume and uncertainty per label, Dice
against a reference, and the slices ranked by uncertainty so that the least certain are looked at first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.pipeline import VolumeResult
from engine.uncertainty import MAP_TITLES
from viewer.session.ground_truth import dice_so_far


@dataclass(frozen=True)
class LabelFinding:
    name: str
    volume_ml: float
    mean_uncertainty: float  # of the chosen map, inside the label
    dice: float | None  # against the reference over the finished slices; None without one


@dataclass(frozen=True)
class Findings:
    axis: str
    progress: str  # "12 of 27 axial slices segmented; Dice over those 12"
    labels: list[LabelFinding]
    ranking_title: str
    ranking: list[tuple[int, float]]  # (slice index, mean of the map), most uncertain first


def findings(
    result: VolumeResult, label_names: dict[int, str], map_name: str, truth: np.ndarray | None = None
) -> Findings:
    """The findings of `result` so far under `map_name`; `truth` adds Dice over the finished slices."""
    done, total = int(result.finished.sum()), int(result.finished.size)
    volumes = result.label_volumes_ml()
    inside = result.mean_uncertainty_in_labels(map_name)
    dice, compared = dice_so_far(result, truth) if truth is not None else ({}, 0)
    progress = f"{done} of {total} {result.axis} slices segmented" + (
        f"; Dice over those {compared}" if truth is not None else ""
    )
    labels = [
        LabelFinding(label_names.get(value, str(value)), volumes[value], inside[value], dice.get(value))
        for value in sorted(volumes)
    ]
    return Findings(
        result.axis,
        progress,
        labels,
        f"Slices by mean {MAP_TITLES[map_name]} (click to jump)",
        result.slice_ranking(map_name),
    )
