"""Uncertainty-guided review: the reader steps through what the AI segmented and where it hesitated, the
most uncertain first, and accepts, removes or edits each.

The items are the result's connected components (the per-lesion findings of `engine.findings.lesions`
once the run has ended, else the components as they stand) and the regions of high uncertainty the AI
did not segment (possible misses, away from any segmented voxel). Each keeps its voxels, so that a
Remove reaches exactly that region and the findings of the edited result can say which were reviewed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import ndimage

from engine.findings import Lesion, lesions
from engine.pipeline import VolumeResult
from engine.uncertainty import MAP_TITLES
from viewer.session.display import map_range
from viewer.session.edits import COMPONENTS, Editor
from viewer.session.events import Emitter

MIN_UNCERTAIN_MM3 = 100.0  # an uncertain region smaller than this is noise, not a possible miss
MAX_UNCERTAIN = 5  # uncertain regions reviewed: those with the most uncertainty in them (size x mean)
UNCERTAIN_SHARE = 0.5  # of the map's range: "high uncertainty" where the model has no calibrated threshold


class Kind(StrEnum):
    COMPONENT = "segmented region"
    UNCERTAIN = "uncertain region"  # high uncertainty, nothing segmented there


class Status(StrEnum):
    PENDING = "not reviewed"
    ACCEPTED = "accepted"
    REMOVED = "removed"
    EDITED = "edited"


MARKS = {Status.ACCEPTED: "✓ accepted", Status.REMOVED: "✗ removed", Status.EDITED: "✎ edited"}


@dataclass
class ReviewItem:
    kind: Kind
    label: int  # the component's label; 0 for an uncertain region
    centre: tuple[int, int, int]  # a voxel inside it, nearest its centroid
    voxels: np.ndarray  # its flat voxel indices, sorted
    mean_uncertainty: float
    volume_ml: float
    flagged: bool = False  # above the model's lesion review threshold
    status: Status = Status.PENDING

    def contains(self, ijk: tuple[int, int, int], shape: tuple[int, ...]) -> bool:
        flat = np.ravel_multi_index(ijk, shape[:3])
        at = int(np.searchsorted(self.voxels, flat))
        return at < len(self.voxels) and int(self.voxels[at]) == flat


def _centre(coords: np.ndarray) -> tuple[int, int, int]:
    """The voxel of a region nearest its centroid (inside it, unlike the centroid of a crescent)."""
    c = coords[np.argmin(((coords - coords.mean(0)) ** 2).sum(1))]
    return int(c[0]), int(c[1]), int(c[2])


def review_items(
    result: VolumeResult, map_name: str, uncertain_above: float, found: list[Lesion] | None = None
) -> list[ReviewItem]:
    """What there is to review in `result`, most uncertain (mean of `map_name`) first: each lesion of
    `found` (the findings' lesions; None: the segmentation's components), and the `MAX_UNCERTAIN` regions
    of voxels above `uncertain_above` that no segmented voxel touches and hold the most uncertainty (a
    whole scan has many small ones; a reader reviews a handful)."""
    uncertainty, seg, shape = result.maps[map_name], result.segmentation, result.volume.shape
    ml = result.volume.voxel_volume_ml
    items = []
    for label in range(1, result.num_classes):
        components, _ = ndimage.label(seg == label, structure=COMPONENTS)
        flags = {lesion.centre: lesion.review for lesion in found or [] if lesion.label == label}
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            if box is None:
                continue
            coords = np.argwhere(components[box] == index) + [s.start for s in box]
            centre = _centre(coords)
            voxels = np.sort(np.ravel_multi_index(coords.T, shape))
            values = uncertainty.flat[voxels]
            items.append(
                ReviewItem(
                    Kind.COMPONENT, label, centre, voxels, float(values.mean()), len(voxels) * ml,
                    flags.get(centre, False),
                )
            )  # fmt: skip
    segmented = seg > 0
    near = ndimage.binary_dilation(segmented, structure=COMPONENTS)
    regions, _ = ndimage.label((uncertainty > uncertain_above) & ~segmented, structure=COMPONENTS)
    touching = np.unique(regions[near])
    smallest = MIN_UNCERTAIN_MM3 / (ml * 1000.0)
    uncertain = []
    for index, box in enumerate(ndimage.find_objects(regions), start=1):
        if box is None or index in touching:
            continue
        coords = np.argwhere(regions[box] == index) + [s.start for s in box]
        if len(coords) < smallest:
            continue
        voxels = np.sort(np.ravel_multi_index(coords.T, shape))
        values = uncertainty.flat[voxels]
        uncertain.append(
            ReviewItem(Kind.UNCERTAIN, 0, _centre(coords), voxels, float(values.mean()), len(voxels) * ml)
        )
    uncertain.sort(key=lambda item: -item.mean_uncertainty * len(item.voxels))
    return sorted(items + uncertain[:MAX_UNCERTAIN], key=lambda item: -item.mean_uncertainty)


def items_for(
    result: VolumeResult, map_name: str, settled: bool, review_above: float | None
) -> list[ReviewItem]:
    """The review of `result`: from its per-lesion findings once its run has ended (`settled`), flagged
    above the model's `review_above`; uncertain regions above that threshold, or, without one, above
    `UNCERTAIN_SHARE` of the map's range."""
    found = lesions(result, map_name, review_above=review_above) if settled else None
    above = (
        review_above
        if review_above is not None
        else UNCERTAIN_SHARE * map_range(map_name, result.num_classes)[1]
    )
    return review_items(result, map_name, above, found)


class Review:
    """The review of the result on screen: its items, the one shown, and what the reader decided.

    Removing goes through the `editor` (an undoable edit); `centre(ijk)` brings an item into the views.
    `changed()` after every step.
    """

    def __init__(self, editor: Editor, centre: Callable[[tuple[int, int, int]], object]) -> None:
        self.editor = editor
        self.centre = centre
        self.changed = Emitter()
        self.items: list[ReviewItem] = []
        self.map_name = "entropy"
        self.current: int | None = None
        self._revision = 0  # the editor's revision when the current item was shown

    @property
    def active(self) -> bool:
        return self.current is not None

    def start(self, items: list[ReviewItem], map_name: str) -> None:
        """Review `items` from the first not reviewed yet (the most uncertain)."""
        self.items, self.map_name, self.current = items, map_name, None
        self.go(self._next_pending(-1))

    def clear(self) -> None:
        """The result changed (a new scan, a new run): its review, if any, is over."""
        self.items, self.current = [], None
        self.changed.emit()

    def resume(self) -> None:
        """Back to the first item not reviewed yet, after a stop."""
        self.go(self._next_pending(-1))

    def stop(self) -> None:
        """Leave review mode; what was decided stays."""
        self.current = None
        self.changed.emit()

    def go(self, index: int | None) -> None:
        """Show item `index` (None: every item is reviewed, review ends)."""
        self.current = index
        if index is not None:
            self._revision = self.editor.revision
            self.centre(self.items[index].centre)
        self.changed.emit()

    def next(self) -> None:
        """The next item not reviewed yet, after the one shown (wrapping round); none left: stop."""
        if self.current is not None:
            self.go(self._next_pending(self.current))

    def previous(self) -> None:
        if self.current is not None and self.items:
            self.go((self.current - 1) % len(self.items))

    def accept(self) -> None:
        """The reader agrees with the item as it now stands: edited if they changed anything while it was
        shown, else accepted."""
        item = self.item()
        if item is not None:
            item.status = Status.EDITED if self.editor.revision != self._revision else Status.ACCEPTED
            self.next()

    def remove(self) -> str:
        """Remove the item's segmented voxels (an undoable edit) and move on; returns why not, or ''."""
        item = self.item()
        if item is None:
            return ""
        problem = self.editor.remove_components(item.voxels, item.label)
        if problem:
            return problem
        item.status = Status.REMOVED
        self.next()
        return ""

    def item(self) -> ReviewItem | None:
        return self.items[self.current] if self.current is not None else None

    def _next_pending(self, after: int) -> int | None:
        n = len(self.items)
        return next(
            (
                (after + d) % n
                for d in range(1, n + 1)
                if self.items[(after + d) % n].status == Status.PENDING
            ),
            None,
        )

    # -- what is shown and recorded ---------------------------------------------------------------
    def reviewed(self) -> int:
        return sum(item.status != Status.PENDING for item in self.items)

    def progress(self) -> str:
        """'3 of 7 reviewed'."""
        return f"{self.reviewed()} of {len(self.items)} reviewed"

    def describe(self, label_names: dict[int, str]) -> str:
        """The item shown, in words: which one, what it is, how big and how uncertain."""
        item = self.item()
        if item is None:
            if self.items and self.reviewed() == len(self.items):
                return f"All {len(self.items)} reviewed."
            return "Not reviewing." if self.items else "Nothing to review."
        name = label_names.get(item.label, str(item.label)) if item.label else "not segmented"
        flag = ", flagged for review" if item.flagged else ""
        return (
            f"{self.current + 1 if self.current is not None else 0} of {len(self.items)}: {item.kind} "
            f"({name}), {item.volume_ml:.2f} mL, mean {MAP_TITLES[self.map_name]} "
            f"{item.mean_uncertainty:.3f}{flag}; {item.status}"
        )

    def marks(self, found: list[Lesion], shape: tuple[int, ...]) -> list[str]:
        """Per lesion of the findings (of the edited result): how the review item it lies in was decided."""
        marks = []
        for lesion in found:
            item = next((i for i in self.items if i.contains(lesion.centre, shape)), None)
            marks.append(MARKS.get(item.status, "") if item is not None else "")
        return marks

    def records(self, label_names: dict[int, str]) -> list[dict]:
        """Every item and the reader's decision, for summary.json."""
        return [
            {
                "kind": str(item.kind),
                "label": label_names.get(item.label, str(item.label)) if item.label else None,
                "centre_voxel": list(item.centre),
                "volume_ml": round(item.volume_ml, 4),
                f"mean_{self.map_name}": round(item.mean_uncertainty, 6),
                "flagged": item.flagged,
                "status": str(item.status),
            }
            for item in self.items
        ]
