"""Editing and the uncertainty-guided review in the reading session, without Qt: the tools, undo/redo and
its memory, the review's order, progress and marks, a re-run with the edits kept or discarded, and the
export of the edited segmentation (checked with nibabel against the AI's export plus the edit).

The AI result is made by hand (a label map and an uncertainty map written into the session's result),
so the tests know exactly what each tool must change; the export tests use the bundled LGG sample, so
alignment is checked on a real scan file.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from engine.findings import Lesion
from engine.model_store import Label, ModelSpec
from engine.preprocessing import Preprocessing
from engine.run_settings import RunSettings
from engine.volume import Volume, load_scan
from tests.test_viewer_session import DictStore, FakeRunner
from viewer.session.display import display_position
from viewer.session.edits import MAX_UNDO, EditLayer, Tool, brush_offsets
from viewer.session.review import Kind, Status, review_items
from viewer.session.runs import RunOutcome
from viewer.session.session import ReadingSession

SPEC = ModelSpec(
    "m",
    "unet",
    {},
    Preprocessing(input_size=(64, 64)),
    [Label(0, "background", (0, 0, 0)), Label(1, "lesion", (255, 0, 0)), Label(2, "oedema", (0, 0, 255))],
)
DIGITAL = RunSettings(model="m", mode="digital")
ANALOG = RunSettings(model="m", mode="analog", mc_samples=2, noise_level=1.0, drift_s=3600.0)


def _ai(session: ReadingSession, labels: np.ndarray, entropy: np.ndarray | None = None) -> None:
    """Make the result on screen the AI's `labels` (finished), with `entropy` as its uncertainty."""
    result = session.result
    assert result is not None
    result.segmentation[...] = labels
    result.maps["entropy"][...] = entropy if entropy is not None else 0.0
    result.finished[:] = True


def _session(volume: Volume, labels: np.ndarray, entropy: np.ndarray | None = None) -> ReadingSession:
    session = ReadingSession(DictStore(), FakeRunner(), [SPEC])
    session.open(volume, volume.source or "/data/scan.nii.gz")
    assert session.request_run(SPEC, DIGITAL) is RunOutcome.STARTED
    session.runner.computing = None  # the fake run "ended"
    _ai(session, labels, entropy)
    return session


def _volume(shape=(40, 30, 8), spacing=(0.5, 1.0, 3.0)) -> Volume:
    return Volume(np.zeros(shape, np.float32), np.diag([*spacing, 1.0]), source="/data/scan.nii.gz")


def _at(session: ReadingSession, view: str, ijk: tuple[int, int, int]) -> tuple[int, int]:
    """(row, col) of voxel `ijk` in `view`, moving that view to its slice."""
    session.move_slice(view, ijk[{"sagittal": 0, "coronal": 1, "axial": 2}[view]])
    return display_position(session.volume.shape, view, ijk)


def _stroke(session: ReadingSession, view: str, points: list[tuple[int, int, int]]) -> None:
    for phase, ijk in [("press", points[0]), *[("drag", p) for p in points[1:]], ("release", points[-1])]:
        assert session.edit(view, phase, *_at(session, view, ijk)) == ""


# -- the brush ------------------------------------------------------------------------------------
def test_brush_is_a_disc_in_millimetres_or_a_ball() -> None:
    disc = brush_offsets(3.0, (0.5, 1.0, 3.0), plane_axis=2, sphere=False)
    assert set(disc[:, 2]) == {0}  # in the axial plane only
    assert disc[:, 0].max() == 3 and disc[:, 1].max() == 1  # 1.5 mm: 3 voxels of 0.5 mm, 1 of 1 mm
    ball = brush_offsets(6.0, (0.5, 1.0, 3.0), plane_axis=2, sphere=True)
    assert set(ball[:, 2]) == {-1, 0, 1}  # 3 mm reaches the next 3 mm slice on either side
    flat = brush_offsets(6.0, (0.5, 1.0, 3.0), plane_axis=2, sphere=False)  # as wide, but a disc
    assert set(flat[:, 2]) == {0} and len(flat) == (ball[:, 2] == 0).sum()
    coronal = brush_offsets(6.0, (0.5, 1.0, 3.0), plane_axis=1, sphere=False)  # the coronal view's plane
    assert set(coronal[:, 1]) == {0} and set(coronal[:, 2]) == {-1, 0, 1}
    assert len(brush_offsets(0.1, (1.0, 1.0, 1.0), 0, True)) == 1  # smaller than a voxel: the voxel itself


def test_paint_and_erase_strokes_are_a_layer_over_the_untouched_ai_result() -> None:
    ai = np.zeros((40, 30, 8), np.uint8)
    ai[5:10, 5:10, 4] = 2  # an oedema the eraser of "lesion" must not touch
    session = _session(_volume(), ai)
    editor = session.editor
    editor.tool, editor.label, editor.brush_mm = Tool.PAINT, 1, 2.0
    _stroke(session, "axial", [(20, 15, 4), (30, 15, 4)])  # drag 5 mm across: every voxel on the way
    edited = editor.edited()
    assert np.array_equal(session.result.segmentation, ai)  # the AI's labels are never written to
    line = edited[20:31, 15, 4]
    assert (line == 1).all() and (edited[:, :, 3] == 0).all()  # painted in the view's plane only
    assert len(editor.history()) == 1  # one stroke, one undo step
    assert editor.counts(3) == {1: (int((edited == 1).sum()), 0), 2: (0, 0)}

    layers = session.slice_layers("axial", "entropy", outlined=False, show_truth=False)
    assert layers.labels is not None and (layers.labels == 1).sum() == (edited[..., 4] == 1).sum()
    assert layers.edits is not None and layers.edits.any()  # the edits drawn apart

    editor.tool = Tool.ERASE
    _stroke(session, "axial", [(7, 7, 4), (25, 15, 4)])  # through the oedema and the painted lesion
    after = editor.edited()
    assert (after[5:10, 5:10, 4] == 2).all()  # another label: kept
    assert (after[24:27, 15, 4] == 0).all() and (after[30, 15, 4] == 1)


def test_an_undo_step_holds_only_the_voxels_its_stroke_changed() -> None:
    session = _session(_volume((64, 64, 16), (1.0, 1.0, 1.0)), np.zeros((64, 64, 16), np.uint8))
    editor = session.editor
    editor.tool, editor.label = Tool.PAINT, 1
    sizes = []
    for diameter in (3.0, 9.0, 21.0):
        editor.brush_mm = diameter
        _stroke(session, "axial", [(32, 32, 8)])
        sizes.append(editor.history()[-1])
    for record in sizes:
        assert record.nbytes == len(record) * (4 + 4 * 1)  # uint32 index, 2 x (label, set flag)
    assert len(sizes[0]) < len(sizes[1]) < len(sizes[2])  # the voxels newly painted, not the disc's all
    assert len(sizes[2]) == len(brush_offsets(21.0, (1, 1, 1), 2, False)) - len(
        brush_offsets(9.0, (1, 1, 1), 2, False)
    )
    assert sum(r.nbytes for r in editor.history()) < session.volume.data.size // 20  # a uint8 copy: 20x


def test_undo_and_redo_fifty_one_strokes() -> None:
    session = _session(_volume((60, 60, 4), (1.0, 1.0, 1.0)), np.zeros((60, 60, 4), np.uint8))
    editor = session.editor
    editor.tool, editor.label, editor.brush_mm = Tool.PAINT, 1, 1.0
    states = [editor.edited()]
    for n in range(51):
        _stroke(session, "axial", [(n, n % 60, 1)])
        states.append(editor.edited())
    assert MAX_UNDO >= 50 and len(editor.history()) == 51
    for n in range(51, 0, -1):
        assert editor.undo()
        assert np.array_equal(editor.edited(), states[n - 1])
    assert not editor.undo() and not editor.has_edits()
    for n in range(1, 52):
        assert editor.redo()
        assert np.array_equal(editor.edited(), states[n])
    assert not editor.redo()
    editor.undo()
    _stroke(session, "axial", [(59, 59, 3)])  # a new stroke after an undo: nothing left to redo
    assert not editor.can_redo()


def test_fill_and_erase_a_region_within_the_slice() -> None:
    ai = np.zeros((30, 30, 5), np.uint8)
    ai[10:20, 10:20, 2] = 1
    ai[12:18, 12:18, 2] = 0  # a ring with a hole
    ai[12:18, 12:18, 3] = 0
    session = _session(_volume((30, 30, 5), (1.0, 1.0, 1.0)), ai)
    editor = session.editor
    editor.tool, editor.label = Tool.FILL, 1
    assert session.edit("axial", "press", *_at(session, "axial", (15, 15, 2))) == ""
    assert (editor.edited()[10:20, 10:20, 2] == 1).all() and (editor.edited()[..., 1:2] == 0).all()
    message = session.edit("axial", "press", *_at(session, "axial", (2, 2, 2)))
    assert "edge of the slice" in message and len(editor.history()) == 1  # the whole background: refused

    editor.tool = Tool.ERASE_REGION
    assert session.edit("axial", "press", *_at(session, "axial", (11, 11, 2))) == ""
    assert not editor.edited()[..., 2].any()
    assert "active label" in session.edit("axial", "press", *_at(session, "axial", (11, 11, 2)))
    editor.undo()
    assert (editor.edited()[10:20, 10:20, 2] == 1).all()


def test_remove_a_component_and_keep_only_one() -> None:
    ai = np.zeros((30, 30, 6), np.uint8)
    ai[2:6, 2:6, 1:4] = 1  # three lesions in 3D
    ai[20:25, 20:25, 2:5] = 1
    ai[2:5, 20:24, 2] = 1
    ai[12:16, 12:16, 2] = 2  # and an oedema
    session = _session(_volume((30, 30, 6), (1.0, 1.0, 1.0)), ai)
    editor = session.editor
    editor.tool = Tool.REMOVE_COMPONENT
    assert session.edit("axial", "press", *_at(session, "axial", (3, 3, 2))) == ""
    edited = editor.edited()
    assert not edited[2:6, 2:6, :].any() and (edited[20:25, 20:25, 2:5] == 1).all()  # all its slices
    assert editor.counts(3)[1] == (0, 48)
    assert "inside a segmented region" in session.edit("axial", "press", *_at(session, "axial", (9, 9, 2)))

    editor.tool = Tool.KEEP_COMPONENT
    assert session.edit("coronal", "press", *_at(session, "coronal", (22, 22, 3))) == ""
    edited = editor.edited()
    assert (edited == 1).sum() == 75 and (edited[20:25, 20:25, 2:5] == 1).all()
    assert (edited == 2).sum() == 16  # other labels stay
    assert "no other component" in session.edit("axial", "press", *_at(session, "axial", (22, 22, 3)))


# -- review ---------------------------------------------------------------------------------------
def _reviewable() -> tuple[np.ndarray, np.ndarray]:
    """Two lesions (one more uncertain), an uncertain region far from them, a tiny one, and a halo."""
    labels = np.zeros((40, 40, 10), np.uint8)
    entropy = np.zeros((40, 40, 10), np.float32)
    labels[5:10, 5:10, 2:6] = 1
    entropy[5:10, 5:10, 2:6] = 0.1
    entropy[24:31, 24:31, 1:7] = 0.6  # a halo around the second lesion: reviewed with it
    labels[25:30, 25:30, 2:6] = 1
    entropy[25:30, 25:30, 2:6] = 0.4
    entropy[30:40, 0:10, 3:8] = 0.8  # 500 voxels, nothing segmented: a possible miss
    entropy[0:2, 38:40, 0:2] = 0.9  # 8 voxels: noise
    return labels, entropy


def test_review_items_come_in_order_of_uncertainty() -> None:
    labels, entropy = _reviewable()
    session = _session(_volume((40, 40, 10), (1.0, 1.0, 1.0)), labels, entropy)
    items = review_items(session.result, "entropy", 0.3)
    assert [(i.kind, round(i.mean_uncertainty, 2)) for i in items] == [
        (Kind.UNCERTAIN, 0.8),
        (Kind.COMPONENT, 0.4),
        (Kind.COMPONENT, 0.1),
    ]
    assert items[1].contains((27, 27, 3), (40, 40, 10)) and not items[1].contains((7, 7, 3), (40, 40, 10))
    lesion = Lesion(1, 100, 0.1, 5.0, 2, 5, items[2].centre, 0.1, True)
    assert review_items(session.result, "entropy", 0.3, [lesion])[2].flagged  # the findings' review flag


def test_review_centres_progresses_and_marks_what_was_decided() -> None:
    labels, entropy = _reviewable()
    session = _session(_volume((40, 40, 10), (1.0, 1.0, 1.0)), labels, entropy)
    centred: list = []
    session.events.centred.connect(lambda: centred.append(session.crosshair))
    session.start_review("entropy")  # no calibration: "high" is half the map's range (ln 3 / 2 nats)
    review = session.review
    assert len(review.items) == 3 and review.progress() == "0 of 3 reviewed"
    assert centred == [review.items[0].centre] and "uncertain region" in review.describe({})
    review.accept()
    assert review.items[0].status is Status.ACCEPTED and review.progress() == "1 of 3 reviewed"
    assert session.crosshair == review.items[1].centre  # the next one, centred

    assert review.remove() == ""  # the more uncertain lesion goes, as an undoable edit
    assert review.items[1].status is Status.REMOVED and not session.editor.edited()[25:30, 25:30].any()
    session.editor.tool, session.editor.label, session.editor.brush_mm = Tool.PAINT, 1, 3.0
    _stroke(session, "axial", [(10, 7, 3)])  # the reader corrects the last one, then accepts it
    review.accept()
    assert review.items[2].status is Status.EDITED and review.progress() == "3 of 3 reviewed"
    assert not review.active and review.describe({}) == "All 3 reviewed."

    kept = Lesion(1, 100, 0.1, 5.0, 2, 5, (7, 7, 3), 0.1, False)
    other = Lesion(1, 5, 0.01, 1.0, 0, 0, (0, 0, 0), 0.0, False)
    assert review.marks([kept, other], (40, 40, 10)) == ["✎ edited", ""]
    records = review.records({1: "lesion"})
    assert [r["status"] for r in records] == ["accepted", "removed", "edited"]
    assert records[1]["label"] == "lesion" and records[0]["label"] is None

    session.request_run(SPEC, ANALOG, keep_edits=True)  # another result: its review starts afresh
    assert review.items == [] and session.editor.has_edits()


# -- re-running with edits ------------------------------------------------------------------------
def test_a_rerun_asks_and_keeps_the_edits_on_top_or_discards_them() -> None:
    ai = np.zeros((20, 20, 4), np.uint8)
    ai[2:8, 2:8, 1] = 1
    session = _session(_volume((20, 20, 4), (1.0, 1.0, 1.0)), ai)
    editor = session.editor
    assert session.request_run(SPEC, ANALOG) is RunOutcome.STARTED  # no edits: nothing to ask
    session.runner.computing = None
    analog = session.result
    _ai(session, ai)
    editor.tool, editor.label, editor.brush_mm = Tool.PAINT, 1, 1.0
    _stroke(session, "axial", [(15, 15, 1)])
    assert session.request_run(SPEC, ANALOG) is RunOutcome.CACHED  # the same result: no question

    assert session.request_run(SPEC, DIGITAL) is RunOutcome.ASK_EDITS
    assert session.result is analog and editor.has_edits()  # nothing changed unasked
    assert session.request_run(SPEC, DIGITAL, keep_edits=True) is RunOutcome.CACHED
    assert session.result is not analog and editor.edited()[15, 15, 1] == 1  # on top of the new labels
    assert (
        session.slice_layers("axial", "entropy", False, False).labels[
            display_position((20, 20, 4), "axial", (15, 15, 1))
        ]
        == 1
    )

    assert session.request_run(SPEC, ANALOG, keep_edits=False) is RunOutcome.CACHED
    assert not editor.has_edits() and np.array_equal(editor.edited(), ai)
    assert editor.undo() and editor.edited()[15, 15, 1] == 1  # a discard can be taken back


# -- export ---------------------------------------------------------------------------------------
def test_export_writes_the_edited_segmentation_aligned_and_counts_the_edits(lgg_case, tmp_path) -> None:
    scan, truth = lgg_case
    volume = load_scan(scan)
    ai = load_scan(truth).data.astype(np.uint8)  # the reference stands in for the AI's labels
    session = _session(volume, ai)
    editor = session.editor
    assert (session.export(tmp_path / "ai", "entropy", False, False, edited=False)) != []

    editor.tool, editor.label, editor.brush_mm = Tool.PAINT, 2, 5.0
    _stroke(session, "axial", [(60, 60, 10), (70, 60, 10)])
    lesion = tuple(int(v) for v in np.argwhere(ai == 1)[0])
    editor.tool = Tool.REMOVE_COMPONENT
    session.edit("axial", "press", *_at(session, "axial", lesion))
    session.start_review("entropy")
    paths = session.export(tmp_path / "edited", "entropy", True, False)
    assert {p.name for p in paths} == {"seg.nii.gz", "uncertainty.nii.gz", "summary.json"}

    source = nib.load(scan)
    written = nib.load(tmp_path / "edited" / "seg.nii.gz")
    raw = nib.load(tmp_path / "ai" / "seg.nii.gz")
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    expected = np.asarray(raw.dataobj).copy()  # the AI's export plus the edit, in the file's voxel order
    changed = editor.layer.set
    expected[volume.to_source_order(changed)] = volume.to_source_order(editor.layer.values)[
        volume.to_source_order(changed)
    ]
    assert np.array_equal(np.asarray(written.dataobj), expected)
    assert np.array_equal(np.asarray(raw.dataobj), volume.to_source_order(ai))  # the AI's, untouched

    summary = json.loads((tmp_path / "edited" / "summary.json").read_text())
    edits = summary["edits"]
    painted, removed = int((editor.edited() == 2).sum()), int((ai == 1).sum())
    assert edits["applied"] is True
    assert edits["labels"]["oedema"]["added_voxels"] == painted > 0
    assert edits["labels"]["lesion"] == {
        "added_voxels": 0,
        "removed_voxels": removed,
        "added_ml": 0.0,
        "removed_ml": round(removed * volume.voxel_volume_ml, 4),
    }
    assert edits["review"]["progress"].endswith("reviewed") and edits["review"]["items"]
    assert summary["model"] == "m" and summary["settings"]["mode"] == "digital"
    assert summary["labels"]["lesion"]["volume_ml"] == 0.0  # the volumes are those of what was written
    ai_summary = json.loads((tmp_path / "ai" / "summary.json").read_text())
    assert ai_summary["edits"]["applied"] is False and ai_summary["labels"]["lesion"]["volume_ml"] > 0


def test_edit_layer_counts_against_the_ai() -> None:
    layer = EditLayer((4, 4, 4))
    ai = np.zeros((4, 4, 4), np.uint8)
    ai[0] = 1
    layer.set[0, 0], layer.values[0, 0] = True, 0  # 4 voxels of label 1 erased
    layer.set[3, 3], layer.values[3, 3] = True, 2  # 4 painted as 2
    layer.set[0, 1], layer.values[0, 1] = True, 1  # set to what the AI had: no change
    assert layer.counts(ai, 3) == {1: (0, 4), 2: (4, 0)}
    assert np.array_equal(layer.apply(ai)[0, 1], ai[0, 1]) and ai[0, 0].all()


def test_edits_are_unsaved_until_the_edited_segmentation_is_exported(lgg_case, tmp_path) -> None:
    volume = load_scan(lgg_case[0])
    session = _session(volume, np.zeros(volume.shape, np.uint8))
    editor = session.editor
    assert not editor.unsaved()  # the AI's result as it came: nothing to lose
    editor.tool, editor.label, editor.brush_mm = Tool.PAINT, 1, 5.0
    _stroke(session, "axial", [(60, 60, 10)])
    assert editor.unsaved()
    session.export(tmp_path / "ai", "entropy", False, False, edited=False)
    assert editor.unsaved(), "the AI's result exported does not hold the reader's edits"
    session.export(tmp_path / "edited", "entropy", False, False)
    assert not editor.unsaved()
    _stroke(session, "axial", [(80, 80, 10)])
    assert editor.unsaved()  # a later stroke is not in the export
    assert editor.discard() and not editor.unsaved()  # nothing left to lose
