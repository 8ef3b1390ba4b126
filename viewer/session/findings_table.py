"""What the reader reviews in a (possibly partial) result: volume and uncertainty per label, Dice against
a reference, each lesion of a complete result, and the slices ranked by uncertainty near the segmentation.
For a nuclei model on a 2D image: areas (in pixels where the pixel size is unknown) and the nuclei,
split into instances (`engine.instances`), in place of volumes and lesions.

`findings` reads the whole volume (a distance transform per slice for the ranking, a component
labelling for the lesions), so the session computes it off the UI thread.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from engine.findings import Lesion, lesions, slice_ranking
from engine.images2d import is_planar, pixel_area
from engine.instances import Instances, Nucleus, instances
from engine.pipeline import VolumeResult
from engine.preprocessing import AXES
from engine.uncertainty import MAP_TITLES
from viewer.session.ground_truth import dice_so_far


@dataclass(frozen=True)
class LabelFinding:
    name: str
    volume_ml: float
    mean_uncertainty: float  # of the chosen map, inside the label
    dice: float | None  # against the reference over the finished slices; None without one
    area: float | None = None  # a 2D image's segmented area, in `Findings.size_unit`


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
    size_unit: str = "mL"  # of the label sizes: mL for a volume, px or µm² for a 2D image
    counts_nuclei: bool = False  # a nuclei model on a 2D image: nuclei are listed in place of lesions
    nuclei: Instances | None = None  # its instances, once the run has settled

    def nucleus_cells(self, nucleus: Nucleus) -> tuple[str, ...]:
        """One row of the nuclei table: its number, area, mean uncertainty and foreground probability."""
        area = f"{nucleus.pixels}" if self.size_unit == "px" else f"{nucleus.area:.1f}"
        return (
            f"{nucleus.label}",
            area,
            f"{nucleus.mean_uncertainty:.3f}",
            f"{nucleus.mean_probability:.2f}",
        )

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


def finished_only(result: VolumeResult) -> VolumeResult:
    """`result` without its previews (a digital pass, or a few chips' samples, shown while a run goes on):
    they are on screen, but not results, so no volume counts them. A shallow copy when there are any."""
    if not result.previews:
        return result
    shown = copy.copy(result)
    shown.segmentation = result.segmentation.copy()
    previewed = np.zeros(result.finished.size, bool)
    previewed[list(result.previews)] = True
    np.moveaxis(shown.segmentation, AXES[result.axis], 0)[previewed] = 0
    return shown


def findings(
    result: VolumeResult,
    label_names: dict[int, str],
    map_name: str,
    truth: np.ndarray | None = None,
    review: tuple[float | None, str] = (None, ""),
    final: bool = True,
    count_nuclei: bool = False,
) -> Findings:
    """The findings of `result` so far under `map_name`; `truth` adds Dice over the finished slices.

    `review`: the lesion review threshold for `map_name` and its rule in words, or None and why there
    are no flags (`verdicts.lesion_review`). `final`: the run has ended (post-processing applied); lesions
    are listed only then. `count_nuclei`: the model finds nuclei (`engine.instances.detects_instances`);
    on a 2D image they are listed in place of lesions.
    """
    result = finished_only(result)
    done, total = int(result.finished.sum()), int(result.finished.size)
    volumes = result.label_volumes_ml()
    inside = result.mean_uncertainty_in_labels(map_name)
    dice, compared = dice_so_far(result, truth) if truth is not None else ({}, 0)
    progress = f"{done} of {total} {result.axis} slices segmented" + (
        f"; Dice over those {compared}" if truth is not None else ""
    )
    planar = is_planar(result.volume)
    per_pixel, unit = pixel_area(result.volume) if planar else (0.0, "mL")
    counts = np.bincount(result.segmentation.ravel(), minlength=result.num_classes)
    labels = [
        LabelFinding(
            label_names.get(value, str(value)),
            volumes[value],
            inside[value],
            dice.get(value),
            float(counts[value]) * per_pixel if planar else None,
        )
        for value in sorted(volumes)
    ]
    found: list[Lesion] | None = None
    nuclei = None
    if count_nuclei and planar:
        nuclei = instances(result, map_name) if result.complete and final else None
        note = (
            f"{nuclei.count} nuclei; touching nuclei split by a distance-transform watershed"
            if nuclei is not None
            else "Nuclei are counted once the image is segmented."
        )
    elif planar:
        note = "Lesions (volumes in mL, diameters in mm) are listed for 3D scans, not for a 2D image."
    elif not result.complete:
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
        size_unit=unit,
        counts_nuclei=count_nuclei and planar,
        nuclei=nuclei,
    )
