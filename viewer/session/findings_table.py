"""What the reader reviews in a (possibly partial) result: volume and uncertainty per label, Dice against
a reference, each lesion of a complete result, and the slices ranked by uncertainty near the segmentation.

`findings` reads the whole volume (a distance transform per slice for the ranking, a component
labelling for the lesions), so the session computes it off the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.findings import Lesion, lesions, slice_ranking
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
    map_name: str
    progress: str  # "12 of 27 axial slices segmented; Dice over those 12"
    labels: list[LabelFinding]
    ranking_title: str
    ranking: list[tuple[int, float]]  # (slice, mean of the map near the segmentation), most uncertain first
    lesions: list[Lesion] | None  # most uncertain first; None until every slice is segmented
    lesion_note: str  # why there are none, or what the review flag means
    label_names: dict[int, str]

    def lesion_cells(self, lesion: Lesion) -> tuple[str, ...]:
        """One row of the lesion table; slices numbered from 1, as the views show them."""
        slices = f"{lesion.first_slice + 1}" + (
            f"–{lesion.last_slice + 1}" if lesion.last_slice > lesion.first_slice else ""
        )
        return (
            self.label_names.get(lesion.label, str(lesion.label)),
            f"{lesion.volume_ml:.2f}",
            f"{lesion.diameter_mm:.0f}",
            slices,
            f"{lesion.mean_uncertainty:.3f}",
            "review" if lesion.review else "",
        )


def findings(
    result: VolumeResult,
    label_names: dict[int, str],
    map_name: str,
    truth: np.ndarray | None = None,
    review: tuple[float | None, str] = (None, ""),
    final: bool = True,
) -> Findings:
    """The findings of `result` so far under `map_name`; `truth` adds Dice over the finished slices.

    `review`: the lesion review threshold for `map_name` and its rule in words, or None and why there
    are no flags (`verdicts.lesion_review`). `final`: the run has ended (post-processing applied); lesions
    are listed only then.
    """
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
    found: list[Lesion] | None = None
    if not result.complete:
        note = f"Lesions are listed once all {total} slices are segmented."
    elif not final:
        note = "Lesions are listed once the run has finished."
    else:
        found = lesions(result, map_name, review_above=review[0])
        flagged = sum(lesion.review for lesion in found)
        if not found:
            note = "No lesion segmented."
        elif review[0] is None:
            note = review[1]
        else:
            note = (
                f"{flagged} flagged for review: {review[1]}." if flagged else f"None flagged ({review[1]})."
            )
    return Findings(
        axis=result.axis,
        map_name=map_name,
        progress=progress,
        labels=labels,
        ranking_title=f"Slices by mean {MAP_TITLES[map_name]} near the segmentation (click to jump)",
        ranking=slice_ranking(result, map_name),
        lesions=found,
        lesion_note=note,
        label_names=dict(label_names),
    )
