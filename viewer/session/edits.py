"""The reader's corrections: a layer of edited voxels over the AI's label map, the tools that change it,
and undo/redo per stroke.

The AI result is never written to. The layer says, per voxel, whether the reader set it and to what;
the segmentation shown and exported is the AI's with the layer applied. So a new run (another MC
count, noise level or model) can keep the reader's edits on top of its own labels, and the summary can
say how many voxels the reader added and removed. An undo step holds only the voxels its stroke
changed (index, state before, state after), never a copy of the volume.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import ndimage
from skimage.segmentation import flood

from engine.pipeline import VolumeResult
from engine.preprocessing import get_slice
from viewer.session.display import EDIT_COLOUR, label_lut, outline
from viewer.session.events import Emitter

MAX_UNDO = 100  # strokes kept for undo; older ones are forgotten
COMPONENTS = np.ones((3, 3, 3), bool)  # 26-connected, as `engine.findings.lesions` counts lesions
NO_RESULT = "Nothing to edit: no segmentation on screen."
EDIT_LUT = label_lut({1: EDIT_COLOUR})  # the outline of the reader's changes, unlike any label or heatmap


class Tool(StrEnum):
    """What a left click or drag in a view does."""

    NAVIGATE = "navigate"  # move the crosshair (no editing)
    PAINT = "paint"  # brush: the active label
    ERASE = "erase"  # brush: the active label becomes background
    FILL = "fill region"  # the 2D region under the click (within the slice) becomes the active label
    ERASE_REGION = "erase region"  # the 2D region of the active label under the click becomes background
    REMOVE_COMPONENT = "remove component"  # the 3D connected component under the click goes
    KEEP_COMPONENT = "keep component"  # every other component of its label goes


BRUSHES = (Tool.PAINT, Tool.ERASE)


def brush_offsets(
    diameter_mm: float, spacing: tuple[float, ...], plane_axis: int, sphere: bool
) -> np.ndarray:
    """(n, 3) voxel offsets within a brush of `diameter_mm`, in millimetres of the scan's `spacing`: a disc
    in the view's plane (across `plane_axis`), or a ball with `sphere`. The centre voxel always counts."""
    radius = diameter_mm / 2
    reach = [int(radius // s) for s in spacing[:3]]
    if not sphere:
        reach[plane_axis] = 0
    grid = np.stack(np.meshgrid(*(np.arange(-r, r + 1) for r in reach), indexing="ij"), axis=-1).reshape(
        -1, 3
    )
    inside = ((grid * np.asarray(spacing[:3])) ** 2).sum(1) <= radius**2 + 1e-9
    return grid[inside | (grid == 0).all(1)]


@dataclass(frozen=True)
class EditRecord:
    """One undo step: the voxels a stroke changed, with their layer state before and after."""

    indices: np.ndarray  # flat voxel indices (uint32 below 2**32 voxels)
    before_values: np.ndarray  # uint8
    before_set: np.ndarray  # bool: the reader had set the voxel
    after_values: np.ndarray
    after_set: np.ndarray

    @property
    def nbytes(self) -> int:
        arrays = (self.indices, self.before_values, self.before_set, self.after_values, self.after_set)
        return sum(a.nbytes for a in arrays)

    def __len__(self) -> int:
        return len(self.indices)


class EditLayer:
    """Per voxel: whether the reader set it (`set`) and to which label (`values`)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(int(n) for n in shape[:3])
        self.values = np.zeros(self.shape, np.uint8)
        self.set = np.zeros(self.shape, bool)
        self.index_type = np.uint32 if self.values.size <= 2**32 else np.int64

    def any(self) -> bool:
        return bool(self.set.any())

    def apply(self, ai: np.ndarray) -> np.ndarray:
        """The AI's labels with the reader's on top (a new array; `ai` is left as it is)."""
        return np.where(self.set, self.values, ai) if self.any() else ai.copy()

    def apply_slice(self, ai_slice: np.ndarray, view: str, index: int) -> np.ndarray:
        """`apply` on one display-oriented slice, as `get_slice` cuts it."""
        mask = get_slice(self.set, view, index)
        return np.where(mask, get_slice(self.values, view, index), ai_slice) if mask.any() else ai_slice

    def counts(self, ai: np.ndarray, num_classes: int) -> dict[int, tuple[int, int]]:
        """(added, removed) voxels per foreground label: where the layer differs from the AI's labels."""
        before, after = ai[self.set], self.values[self.set]
        return {
            c: (int(((after == c) & (before != c)).sum()), int(((before == c) & (after != c)).sum()))
            for c in range(1, num_classes)
        }


class Editor:
    """The reader's edits of the open scan: the active tool, label and brush, the layer, undo and redo.

    `ai()` gives the AI's label map on screen (None: nothing to edit). `changed(final)` after every
    change of the layer; `final` is False while a brush stroke is still under way.
    """

    def __init__(self, ai: Callable[[], np.ndarray | None]) -> None:
        self.ai = ai
        self.changed = Emitter()
        self.tool = Tool.NAVIGATE
        self.label = 1
        self.brush_mm = 5.0
        self.sphere = False
        self.layer: EditLayer | None = None
        self.spacing: tuple[float, ...] = (1.0, 1.0, 1.0)
        self.revision = 0  # counts every change of the layer (edits, undos, redos, discards)
        self._saved = 0  # the revision last exported
        self._undo: deque[EditRecord] = deque(maxlen=MAX_UNDO)
        self._redo: list[EditRecord] = []
        self._stroke: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._last: np.ndarray | None = None  # the stroke's last brush centre
        self._offsets = np.zeros((1, 3), int)

    def reset(self, shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
        """A new scan: no edits, no history (announced by the scan's opening, which redraws everything)."""
        self.layer, self.spacing = EditLayer(shape), tuple(spacing)
        self._undo.clear()
        self._redo.clear()
        self._stroke = self._last = None
        self.revision += 1

    @property
    def editing(self) -> bool:
        """A left click edits (a tool other than navigation is chosen)."""
        return self.tool != Tool.NAVIGATE

    def has_edits(self) -> bool:
        return self.layer is not None and self.layer.any()

    def unsaved(self) -> bool:
        """Edits that no export holds: leaving the scan would lose them."""
        return self.has_edits() and self.revision != self._saved

    def saved(self) -> None:
        """The edits as they stand were exported."""
        self._saved = self.revision

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def history(self) -> list[EditRecord]:
        """The undo steps, oldest first."""
        return list(self._undo)

    # -- the labels with the edits ----------------------------------------------------------------
    def edited(self) -> np.ndarray | None:
        """The whole label map as the reader sees it (AI + edits); None without a result."""
        ai = self.ai()
        if ai is None or self.layer is None:
            return ai
        return self.layer.apply(ai)

    def edited_slice(
        self, ai_slice: np.ndarray, view: str, index: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """A view's labels with the edits, and the outline of where they differ from the AI's (drawn in a
        style of its own, so the reader sees what is theirs); None where the slice has no edit."""
        if self.layer is None:
            return ai_slice, None
        labels = self.layer.apply_slice(ai_slice, view, index)
        changed = labels != ai_slice
        return labels, outline(changed.astype(np.uint8)) if changed.any() else None

    def applied(self, result: VolumeResult) -> VolumeResult:
        """`result` as the reader has it: the same maps, the labels with the edits (a shallow copy: the
        AI's result, kept in the cache, is left as it is)."""
        if not self.has_edits():
            return result
        edited = copy.copy(result)
        edited.segmentation = self.layer.apply(result.segmentation)  # type: ignore[union-attr]
        return edited

    def counts(self, num_classes: int) -> dict[int, tuple[int, int]]:
        """(added, removed) voxels per label against the AI's labels on screen."""
        ai = self.ai()
        if ai is None or self.layer is None:
            return {c: (0, 0) for c in range(1, num_classes)}
        return self.layer.counts(ai, num_classes)

    # -- strokes ----------------------------------------------------------------------------------
    def handle(self, phase: str, ijk: tuple[int, int, int], plane_axis: int) -> str:
        """The left button at voxel `ijk` of a view across `plane_axis`: 'press', 'drag' or 'release'."""
        if phase == "press":
            return self.press(ijk, plane_axis)
        self.drag(ijk) if phase == "drag" else self.release()
        return ""

    def press(self, ijk: tuple[int, int, int], plane_axis: int) -> str:
        """The left button went down on voxel `ijk` of a view across `plane_axis`: a brush starts its
        stroke there, the other tools act at once. Returns why nothing changed, or ''."""
        if self.ai() is None or self.layer is None:
            return NO_RESULT
        if self.tool == Tool.NAVIGATE:
            return ""
        if self.tool in BRUSHES:
            self._offsets = brush_offsets(self.brush_mm, self.spacing, plane_axis, self.sphere)
            self._stroke, self._last = [], np.asarray(ijk)
            self._dab(self._last[None])
            return ""
        return self._click(ijk, plane_axis)

    def drag(self, ijk: tuple[int, int, int]) -> None:
        """The brush moved to `ijk`: every voxel on the way is painted, however fast the mouse went."""
        if self._stroke is None or self._last is None:
            return
        end = np.asarray(ijk)
        steps = int(np.abs(end - self._last).max())
        line = np.rint(np.linspace(self._last, end, steps + 1)).astype(int) if steps else end[None]
        self._dab(line)
        self._last = end

    def release(self) -> None:
        """The stroke ends: one undo step."""
        if self._stroke is not None:
            self._finish()

    def _dab(self, centres: np.ndarray) -> None:
        assert self.layer is not None
        flat = self._indices((centres[:, None, :] + self._offsets[None]).reshape(-1, 3))
        current = self._current(flat)
        if self.tool == Tool.PAINT:
            self._set(flat[~(self.layer.set.flat[flat] & (current == self.label))], self.label)
        else:
            self._set(flat[current == self.label], 0)
        self.changed.emit(False)

    def _click(self, ijk: tuple[int, int, int], plane_axis: int) -> str:
        """Fill, erase a region, remove or keep a component: one click, one undo step."""
        edited = self.edited()
        assert edited is not None
        value = int(edited[ijk])
        if self.tool in (Tool.FILL, Tool.ERASE_REGION):
            return self._region(edited, ijk, plane_axis, value)
        if value == 0:
            return "Click inside a segmented region to choose its component."
        components, _ = ndimage.label(edited == value, structure=COMPONENTS)
        chosen = components == components[ijk]
        drop = chosen if self.tool == Tool.REMOVE_COMPONENT else (components > 0) & ~chosen
        return self._apply(np.flatnonzero(drop), 0, "There is no other component of this label.")

    def _region(self, edited: np.ndarray, ijk: tuple[int, int, int], plane_axis: int, value: int) -> str:
        """The 4-connected region of `value` around `ijk` within its slice, filled or erased."""
        plane = np.take(edited, ijk[plane_axis], axis=plane_axis)
        seed = tuple(v for a, v in enumerate(ijk) if a != plane_axis)
        if self.tool == Tool.ERASE_REGION and value != self.label:
            return "Click inside the active label to erase its region."
        if self.tool == Tool.FILL and value == self.label:
            return "That region already has the active label."
        region = flood(plane, seed, connectivity=1)
        if self.tool == Tool.FILL and value == 0 and _touches_edge(region):
            return "The region under the click reaches the edge of the slice: outline it first, then fill."
        where = np.zeros(edited.shape, bool)
        index: list = [slice(None)] * 3
        index[plane_axis] = ijk[plane_axis]
        where[tuple(index)] = region
        return self._apply(np.flatnonzero(where), self.label if self.tool == Tool.FILL else 0, "")

    def _apply(self, flat: np.ndarray, value: int, empty: str) -> str:
        """Set `flat` voxels to `value` as one undo step; `empty` says why when there are none."""
        if not len(flat):
            return empty
        self._stroke = []
        self._set(flat.astype(np.int64), value)
        self._finish()
        return ""

    def remove_components(self, flat: np.ndarray, label: int) -> str:
        """Remove, as one undo step, every connected component of `label` (0: of any label) with a voxel
        among `flat` (what review's Remove does with a region's voxels)."""
        edited = self.edited()
        if edited is None or self.layer is None:
            return NO_RESULT
        components, _ = ndimage.label(edited == label if label else edited > 0, structure=COMPONENTS)
        ids = np.unique(components.flat[flat])
        drop = np.isin(components, ids[ids > 0])
        return self._apply(np.flatnonzero(drop), 0, "Nothing segmented here to remove.")

    def discard(self) -> int:
        """Drop every edit (one undo step, so a hasty discard can be taken back); the voxels it reset."""
        if not self.has_edits():
            return 0
        assert self.layer is not None
        flat = np.flatnonzero(self.layer.set)
        self._stroke = [(flat, self.layer.values.flat[flat], np.ones(len(flat), bool))]
        self.layer.set.flat[flat] = False
        self.layer.values.flat[flat] = 0
        self._finish()
        return len(flat)

    def _indices(self, voxels: np.ndarray) -> np.ndarray:
        assert self.layer is not None
        shape = np.asarray(self.layer.shape)
        voxels = voxels[((voxels >= 0) & (voxels < shape)).all(1)]
        return np.unique(np.ravel_multi_index(voxels.T, self.layer.shape))

    def _current(self, flat: np.ndarray) -> np.ndarray:
        """The labels shown at `flat` voxels (AI + edits)."""
        assert self.layer is not None
        ai = self.ai()
        assert ai is not None
        return np.where(self.layer.set.flat[flat], self.layer.values.flat[flat], ai.flat[flat])

    def _set(self, flat: np.ndarray, value: int) -> None:
        """The reader sets `flat` voxels to `value`; their state before goes into the open stroke."""
        assert self.layer is not None and self._stroke is not None
        if len(flat):
            self._stroke.append((flat, self.layer.values.flat[flat], self.layer.set.flat[flat]))
            self.layer.values.flat[flat] = value
            self.layer.set.flat[flat] = True

    def _finish(self) -> None:
        """Close the open stroke into one undo step holding the voxels whose state it changed."""
        assert self.layer is not None and self._stroke is not None
        parts, self._stroke, self._last = self._stroke, None, None
        if parts:
            flat = np.concatenate([p[0] for p in parts])
            flat, first = np.unique(flat, return_index=True)  # the state before the stroke's first touch
            before_values = np.concatenate([p[1] for p in parts])[first]
            before_set = np.concatenate([p[2] for p in parts])[first]
            after_values, after_set = self.layer.values.flat[flat], self.layer.set.flat[flat]
            moved = (before_values != after_values) | (before_set != after_set)
            if moved.any():
                self._undo.append(
                    EditRecord(
                        flat[moved].astype(self.layer.index_type),
                        before_values[moved],
                        before_set[moved],
                        after_values[moved],
                        after_set[moved],
                    )
                )
                self._redo.clear()
        self.revision += 1
        self.changed.emit(True)

    # -- undo / redo ------------------------------------------------------------------------------
    def undo(self) -> bool:
        """Take back the last stroke; False when there is none (or a stroke is under way)."""
        if not self._undo or self._stroke is not None or self.layer is None:
            return False
        record = self._undo.pop()
        self._redo.append(record)  # before the change is announced: listeners ask what can be redone
        self._write(record.indices, record.before_values, record.before_set)
        return True

    def redo(self) -> bool:
        if not self._redo or self._stroke is not None or self.layer is None:
            return False
        record = self._redo.pop()
        self._undo.append(record)
        self._write(record.indices, record.after_values, record.after_set)
        return True

    def _write(self, flat: np.ndarray, values: np.ndarray, set_: np.ndarray) -> None:
        assert self.layer is not None
        self.layer.values.flat[flat] = values
        self.layer.set.flat[flat] = set_
        self.revision += 1
        self.changed.emit(True)


def _touches_edge(region: np.ndarray) -> bool:
    return bool(region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any())
