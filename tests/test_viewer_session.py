"""The viewer's reading session without Qt: display maths, caches, ground truth, and `ReadingSession` itself
driven as the widgets drive it, with a runner that records what it is asked to do instead of running."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.model_store import Label, ModelSpec
from engine.pipeline import SliceResult, VolumeResult
from engine.preprocessing import Preprocessing, get_slice
from engine.run_settings import RunSettings
from engine.uncertainty import SliceStats
from engine.volume import ScanError, Volume, load_scan, save_nifti
from viewer.session import display
from viewer.session.events import Emitter
from viewer.session.ground_truth import dice_so_far, load_ground_truth
from viewer.session.readout import describe_run
from viewer.session.recent_files import MAX_RECENT, RecentFiles
from viewer.session.result_cache import ResultCache, missing_slices, result_key
from viewer.session.runs import RunOutcome
from viewer.session.session import ReadingSession

SHAPE = (5, 6, 7)


# -- display maths --------------------------------------------------------------------------------
@pytest.mark.parametrize("view", display.VIEWS)
def test_voxel_at_matches_get_slice(view: str) -> None:
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    index = 2
    image = get_slice(data, view, index)
    assert image.shape == display.display_shape(SHAPE, view)
    for row in range(image.shape[0]):
        for col in range(image.shape[1]):
            ijk = display.voxel_at(SHAPE, view, index, row, col)
            assert image[row, col] == data[ijk]
            assert display.display_position(SHAPE, view, ijk) == (row, col)


def test_orientation_letters_follow_the_slice_directions() -> None:
    """Radiological convention: patient right on screen left; anterior/superior at the top."""
    shape = (4, 4, 4)
    # axial column 0 is the largest i (towards patient Right), row 0 the largest j (Anterior)
    assert display.voxel_at(shape, "axial", 0, 0, 0)[:2] == (3, 3)
    assert display.ORIENTATION_LETTERS["axial"] == ("R", "L", "A", "P")
    assert display.voxel_at(shape, "coronal", 0, 0, 0)[::2] == (3, 3)  # Right, Superior
    assert display.ORIENTATION_LETTERS["coronal"] == ("R", "L", "S", "I")
    assert display.voxel_at(shape, "sagittal", 0, 0, 0)[1:] == (3, 3)  # Anterior, Superior
    assert display.ORIENTATION_LETTERS["sagittal"] == ("A", "P", "S", "I")


def test_pixel_size_uses_the_in_plane_spacing() -> None:
    spacing = (0.5, 0.8, 3.0)
    assert display.pixel_size_mm(spacing, "axial") == (0.8, 0.5)
    assert display.pixel_size_mm(spacing, "coronal") == (3.0, 0.5)
    assert display.pixel_size_mm(spacing, "sagittal") == (3.0, 0.8)


def test_window_presets_and_auto_window() -> None:
    assert display.window_for("CT brain", np.zeros(3)) == display.WindowLevel(80, 40)
    lung = display.CT_PRESETS["CT lung"]
    assert (lung.low, lung.high) == (-1350, 150)
    data = np.zeros((10, 10, 10), np.float32)
    data[2:8, 2:8, 2:8] = np.linspace(100, 200, 216).reshape(6, 6, 6)
    wl = display.auto_window(data)
    assert 100 <= wl.low < 105 and 195 < wl.high <= 200  # background zeros ignored
    with pytest.raises(ValueError):
        display.window_for("nope", data)
    wider = wl.dragged(dx=10, dy=0, data_range=200)
    assert wider.width == pytest.approx(wl.width + 10) and wider.level == wl.level
    assert wl.dragged(dx=-10_000, dy=0, data_range=200).width > 0


def test_label_lut_hides_background_and_hidden_labels() -> None:
    lut = display.label_lut({0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0)}, {1: True, 2: False})
    assert lut.shape == (256, 4) and lut.dtype == np.uint8
    assert lut[0, 3] == 0 and tuple(lut[1]) == (255, 0, 0, 255) and lut[2, 3] == 0


def test_outline_keeps_only_boundaries() -> None:
    labels = np.zeros((7, 7), np.uint8)
    labels[1:6, 1:6] = 2
    edge = display.outline(labels)
    assert edge[3, 3] == 0 and edge[1, 3] == 2 and edge[0, 0] == 0
    assert (edge > 0).sum() == 16


def test_heatmap_lut_threshold_and_ranges() -> None:
    colors = np.array([[0, 0, 0, 1], [1, 1, 0, 1]], float)
    lut = display.heatmap_lut(colors, threshold=0.5)
    assert lut.shape == (256, 4) and (lut[:128, 3] == 0).all() and (lut[128:, 3] == 255).all()
    assert tuple(lut[-1, :3]) == (255, 255, 0)
    assert display.heatmap_lut(colors, 0.0)[0, 3] == 0  # zero uncertainty never tints
    assert display.map_range("entropy", 2) == (0.0, pytest.approx(math.log(2)))
    assert display.map_range("std", 3) == (0.0, 0.5)


# -- result cache and ground truth ----------------------------------------------------------------
def _volume(shape=(4, 4, 3)) -> Volume:
    return Volume(np.random.default_rng(0).random(shape, dtype=np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))


def _slice_result(volume: Volume, k: int, seg_value: int = 1) -> SliceResult:
    h, w = get_slice(volume.data, "axial", k).shape
    seg = np.full((h, w), seg_value, np.uint8)
    probs = np.stack([1.0 - seg, seg]).astype(np.float32)
    zeros = np.zeros((h, w), np.float32)
    return SliceResult(k, SliceStats(probs, seg, zeros + 0.1 * k, zeros, zeros), 0.01, 1, 3)


def test_result_cache_keys_and_resume_order() -> None:
    vol = _volume()
    cache = ResultCache()
    analog = RunSettings(model="m", mode="analog", mc_samples=4, noise_level=1.0, drift_s=3600.0)
    digital = RunSettings(model="m", mode="digital", mc_samples=4, noise_level=1.0, drift_s=3600.0)
    assert result_key(digital) == result_key(
        RunSettings(model="m", mode="digital", mc_samples=9, noise_level=2.0, drift_s=60.0)
    )
    assert result_key(analog) == analog
    result = cache.get_or_create(analog, lambda: VolumeResult(vol, "axial", 2))
    assert (
        cache.get(RunSettings(model="m", mode="analog", mc_samples=4, noise_level=1.0, drift_s=3600.0))
        is result
    )
    assert RunSettings(model="m", mode="analog", mc_samples=5, noise_level=1.0, drift_s=3600.0) not in cache
    result.add(_slice_result(vol, 1))
    assert missing_slices(result, 1) == [2, 0]
    digital_result = cache.get_or_create(digital, lambda: VolumeResult(vol, "axial", 2))
    assert (
        cache.get(RunSettings(model="m", mode="digital", mc_samples=2, noise_level=0.5, drift_s=10.0))
        is digital_result
    )
    small = ResultCache(max_bytes=1)
    small.put(analog, result)
    small.put(digital, digital_result)
    assert len(small) == 1 and digital in small  # least recently used dropped, newest kept


def test_ground_truth_fit_and_dice_so_far(tmp_path: Path) -> None:
    vol = _volume()
    truth = np.zeros(vol.shape, np.uint8)
    truth[..., 0] = 1
    path = save_nifti(vol, truth, tmp_path / "gt.nii.gz", np.uint8)
    vol.source = str(tmp_path / "scan.nii.gz")
    loaded = load_ground_truth(path, vol)
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, truth)
    result = VolumeResult(vol, "axial", 2)
    assert dice_so_far(result, loaded) == ({}, 0)
    result.add(_slice_result(vol, 0, 1))
    dice, n = dice_so_far(result, loaded)
    assert n == 1 and dice[1] == pytest.approx(1.0)
    result.add(_slice_result(vol, 1, 1))  # wrongly segmented slice halves the overlap
    assert dice_so_far(result, loaded)[0][1] == pytest.approx(2 * 16 / (32 + 16))
    other = save_nifti(
        Volume(np.zeros((4, 4, 2), np.float32), np.eye(4)), np.zeros((4, 4, 2)), tmp_path / "o.nii.gz"
    )
    with pytest.raises(ScanError, match="does not match"):
        load_ground_truth(other, vol)
    nib.save(nib.Nifti1Image(np.full(vol.shape, 0.5, np.float32), vol.affine), tmp_path / "f.nii.gz")
    with pytest.raises(ScanError, match="not a label map"):
        load_ground_truth(tmp_path / "f.nii.gz", load_scan(tmp_path / "f.nii.gz"))


# -- the session ----------------------------------------------------------------------------------
class DictStore:
    """What the window's QSettings does for the session, in a dict."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def value(self, key: str, default: object = None) -> object:
        return self.values.get(key, default)

    def setValue(self, key: str, value: object) -> None:  # noqa: N802
        self.values[key] = value


class FakeRunner:
    """Records what the session asks for; `computing` is the result it pretends to fill."""

    def __init__(self) -> None:
        self.started: list[tuple[RunSettings, VolumeResult, list[int]]] = []
        self.cancelled = 0
        self.computing: VolumeResult | None = None

    def start(self, spec, run, volume, result, order) -> None:
        self.started.append((run, result, order))
        self.computing = result

    def cancel(self) -> None:
        self.cancelled += 1
        self.computing = None

    def is_computing(self, result: VolumeResult) -> bool:
        return result is self.computing


SPEC = ModelSpec(
    "m",
    "unet",
    {},
    Preprocessing(input_size=(64, 64)),
    [Label(0, "background", (0, 0, 0)), Label(1, "lesion", (255, 0, 0))],
)
ANALOG = RunSettings(model="m", mode="analog", mc_samples=2, noise_level=1.0, drift_s=3600.0)
DIGITAL = RunSettings(model="m", mode="digital")


def _session(volume: Volume | None = None) -> tuple[ReadingSession, FakeRunner, dict[str, list]]:
    """A session on `volume` (opened as scan.nii.gz) and a record of every event it emits."""
    runner = FakeRunner()
    session = ReadingSession(DictStore(), runner)
    seen: dict[str, list] = {}
    for name, emitter in vars(session.events).items():
        emitter.connect(lambda *args, name=name: seen.setdefault(name, []).append(args))
    if volume is not None:
        session.open(volume, "/data/scan.nii.gz")
    return session, runner, seen


def test_emitter_calls_in_order_and_survives_a_callback_that_disconnects() -> None:
    emitter, calls = Emitter(), []

    def once(value: int) -> None:
        calls.append(("once", value))
        emitter.disconnect(once)

    emitter.connect(once)
    emitter.connect(lambda value: calls.append(("always", value)))
    emitter.emit(1)
    emitter.emit(2)
    assert calls == [("once", 1), ("always", 1), ("always", 2)]


def test_opening_a_scan_resets_the_reading_and_remembers_the_file() -> None:
    vol = _volume((6, 8, 5))
    session, runner, seen = _session(vol)
    assert session.volume is vol and session.crosshair == (3, 4, 2)
    assert session.preset == display.MR_AUTO and session.window_level == display.auto_window(vol.data)
    # levels first, then the views redraw, then the banners
    assert list(seen) == ["window_changed", "scan_opened", "trust_changed"]
    assert seen["scan_opened"] == [(vol, "/data/scan.nii.gz")]
    assert session.recent.paths() == ["/data/scan.nii.gz"] and runner.cancelled == 1
    session.request_run(SPEC, ANALOG)
    session.set_truth(np.zeros(vol.shape, np.uint8), "gt.nii.gz", vol)
    ct = Volume(np.full((4, 4, 3), -1000.0, np.float32), np.eye(4))
    ct.data[1, 1, 1] = 40.0
    session.open(ct, "/data/ct.nii.gz")
    assert (
        session.result is None and session.run is None and session.truth is None and len(session.cache) == 0
    )
    assert session.preset == "CT abdomen" and session.window_level == display.CT_PRESETS["CT abdomen"]
    assert session.recent.paths() == ["/data/ct.nii.gz", "/data/scan.nii.gz"]


def test_navigation_moves_the_crosshair_and_says_which_views_changed_slice() -> None:
    vol = _volume((6, 8, 5))
    session, _, seen = _session(vol)
    session.set_cursor((99, 4, -3))  # clamped into the scan
    assert session.crosshair == (5, 4, 0)
    assert seen["cursor_moved"][-1] == (["axial", "sagittal"],)
    session.move_slice("coronal", 6)
    assert session.crosshair == (5, 6, 0) and seen["cursor_moved"][-1] == (["coronal"],)
    row, col = 1, 2
    session.point("axial", row, col)
    assert session.crosshair == display.voxel_at(vol.shape, "axial", 0, row, col)
    assert session.crosshair_position("axial") == (row, col)
    assert np.array_equal(session.image("sagittal"), get_slice(vol.data, "sagittal", session.crosshair[0]))


def test_window_level_presets_and_drag() -> None:
    session, _, seen = _session()
    session.apply_preset("CT brain")  # nothing open: nothing happens
    assert "window_changed" not in seen
    session.open(_volume(), "/data/scan.nii.gz")
    session.apply_preset("CT brain")
    assert session.preset == "CT brain" and seen["window_changed"][-1] == (display.WindowLevel(80.0, 40.0),)
    session.drag_window(10, 0)
    assert (
        session.window_level.width > 80.0 and session.preset == display.CUSTOM
    )  # a dragged window is no preset


def test_run_policy_starts_resumes_and_answers_from_the_cache() -> None:
    vol = _volume((4, 4, 5))
    session, runner, seen = _session()
    assert session.request_run(SPEC, ANALOG) is RunOutcome.NOTHING  # no scan yet
    session.open(vol, "/data/scan.nii.gz")
    assert session.request_run(None, None) is RunOutcome.NOTHING  # no model
    session.move_slice("axial", 1)
    assert session.request_run(SPEC, ANALOG) is RunOutcome.STARTED
    run, result, order = runner.started[-1]
    assert run == ANALOG and order == [1, 2, 0, 3, 4]  # the slice on screen first, fanning out
    assert seen["model_changed"] == [(SPEC,)] and seen["result_shown"] == [(result,)]
    assert session.request_run(SPEC, ANALOG) is RunOutcome.RUNNING and len(runner.started) == 1

    result.add(_slice_result(vol, 1))
    runner.cancel()  # stopped with one slice done: resuming runs only the others
    assert session.request_run(SPEC, ANALOG) is RunOutcome.STARTED and runner.started[-1][2] == [2, 0, 3, 4]
    for k in (0, 2, 3, 4):
        result.add(_slice_result(vol, k))
    assert session.request_run(SPEC, DIGITAL) is RunOutcome.STARTED and session.result is not result
    digital = session.result
    other_mc = RunSettings(model="m", mode="digital", mc_samples=9, noise_level=2.0)
    runner.cancel()
    assert session.request_run(SPEC, other_mc) is RunOutcome.STARTED and session.result is digital  # same key
    cancelled = runner.cancelled
    assert session.request_run(SPEC, ANALOG) is RunOutcome.CACHED  # complete: shown, nothing to run
    assert session.result is result and session.run == ANALOG and runner.cancelled == cancelled + 1
    assert session.segmented() == (5, 5)


def test_slices_of_the_shown_result_redraw_the_views_that_show_them() -> None:
    vol = _volume((4, 4, 5))
    session, runner, seen = _session(vol)
    session.request_run(SPEC, ANALOG)
    shown = session.result
    session.slice_done(shown, 0, True)  # the axial view is on slice 2: only the others show slice 0
    assert seen["slice_updated"][-1] == (["coronal", "sagittal"], True)
    session.slice_done(shown, 2, False)
    assert seen["slice_updated"][-1] == (["axial", "coronal", "sagittal"], False)
    session.run_ended(shown)
    assert seen["run_ended"] == [(shown,)]
    session.request_run(SPEC, DIGITAL)
    count = len(seen["slice_updated"])
    session.slice_done(shown, 2, True)  # a result no longer on screen changes nothing on screen
    session.run_ended(shown)
    assert len(seen["slice_updated"]) == count and len(seen["run_ended"]) == 1
    assert session.is_shown(session.result) and not session.is_shown(shown)


def test_slice_layers_and_readout_say_preview_and_not_segmented() -> None:
    vol = _volume((4, 4, 3))
    session, _, _ = _session(vol)
    session.move_slice("axial", 0)
    layers = session.slice_layers("axial", "entropy", outlined=False, show_truth=True)
    assert layers.labels is None and layers.heatmap is None and layers.truth is None and layers.note == ""
    assert layers.index == 0 and layers.count == 3
    session.request_run(SPEC, ANALOG)
    result = session.result
    assert session.slice_layers("axial", "entropy", False, True).note == "(not segmented yet)"
    assert session.describe_voxel((1, 1, 0), "entropy").endswith("label: not segmented yet")
    result.show(_slice_result(vol, 0), 1)
    assert session.slice_layers("axial", "entropy", False, True).note == "(preview: 1 of 2 samples)"
    assert session.describe_voxel((1, 1, 0), "entropy").endswith("(preview from 1 sample)")
    result.add(_slice_result(vol, 0))
    filled = session.slice_layers("axial", "entropy", outlined=False, show_truth=True)
    assert filled.note == "" and filled.labels.all() and np.array_equal(filled.heatmap, np.zeros((4, 4)))
    assert not session.slice_layers("axial", "entropy", outlined=True, show_truth=True).labels[1:3, 1:3].any()
    assert session.slice_layers("coronal", "entropy", False, True).note == ""  # across the slices: no note
    text = session.describe_voxel((1, 1, 0), "std")
    assert "voxel (1, 1, 0)" in text and "RAS (1.0, 1.0, 0.0) mm" in text
    assert (
        "label lesion" in text and "std of foreground p 0.0000 probability" in text and "preview" not in text
    )
    assert session.describe_voxel((9, 9, 9), "entropy") == ""
    truth = np.zeros(vol.shape, np.uint8)
    truth[..., 0] = 1
    session.set_truth(truth, "gt.nii.gz", vol)
    assert session.slice_layers("axial", "entropy", False, True).truth[1:3, 1:3].sum() == 0  # an outline
    assert session.slice_layers("axial", "entropy", False, show_truth=False).truth is None
    assert describe_run(ANALOG) == "m · analog chip · 2 MC samples · noise 1 · drift 1 hour"
    assert describe_run(DIGITAL) == "m · digital"


def test_findings_and_dice_against_a_reference_for_this_scan_only() -> None:
    vol = _volume((4, 4, 3))
    session, _, seen = _session(vol)
    session.refresh_findings("entropy")
    assert "findings_ready" not in seen  # no result: nothing to report
    session.request_run(SPEC, ANALOG)
    session.result.add(_slice_result(vol, 0))
    truth = np.zeros(vol.shape, np.uint8)
    truth[..., 0] = 1
    session.set_truth(truth, "gt.nii.gz", _volume((4, 4, 3)))  # read for another scan: dropped
    assert session.truth is None and "truth_loaded" not in seen
    session.set_truth(truth, "gt.nii.gz", vol)
    assert seen["truth_loaded"] == [("gt.nii.gz",)]
    session.refresh_findings("std")
    (found,) = seen["findings_ready"][-1]
    assert found.progress == "1 of 3 axial slices segmented; Dice over those 1"
    assert [(f.name, f.dice) for f in found.labels] == [("lesion", pytest.approx(1.0))]
    assert found.labels[0].volume_ml == pytest.approx(16 * 2.0 / 1000)  # 16 voxels of 2 mm3
    assert found.ranking == [(0, 0.0)] and found.ranking_title.startswith(
        "Slices by mean std of foreground p"
    )
    assert found.lesions is None and found.lesion_note.startswith("Lesions are listed once all 3 slices")


def test_export_writes_the_clis_file_names_and_remembers_the_folder(tmp_path: Path) -> None:
    vol = _volume((4, 4, 3))
    vol.source = str(tmp_path / "scan.nii.gz")
    session, _, _ = _session()
    assert session.export(tmp_path / "none", "entropy", True, True) == []  # no result yet
    session.open(vol, vol.source)
    assert session.export_folder() == str(tmp_path)
    session.request_run(SPEC, ANALOG)
    for k in range(3):
        session.result.add(_slice_result(vol, k))
    out = tmp_path / "out"
    assert session.export_would_replace(out) == []
    written = session.export(out, "std", uncertainty=True, probability=False)
    assert [p.name for p in written] == ["seg.nii.gz", "uncertainty.nii.gz", "summary.json"]
    assert np.allclose(load_scan(out / "uncertainty.nii.gz").data, session.result.maps["std"])
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["uncertainty_map"] == "std of foreground p (probability)"
        and summary["settings"]["mc_samples"] == 2
    )
    assert session.export_would_replace(out) == ["seg.nii.gz", "uncertainty.nii.gz", "summary.json"]
    assert session.export_folder() == str(out)
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    with pytest.raises(OSError, match="could not write"):  # engine.files.OutputError
        session.export(blocked / "out", "entropy", True, True)


def test_recent_files_newest_first_without_repeats() -> None:
    store = DictStore()
    recent = RecentFiles(store)
    assert recent.paths() == [] and recent.last_folder() == str(Path.home())
    for k in range(MAX_RECENT + 2):
        recent.add(f"/scans/{k}.nii.gz")
    recent.add("/scans/3.nii.gz")
    paths = recent.paths()
    assert paths[0] == "/scans/3.nii.gz" and len(paths) == MAX_RECENT and len(set(paths)) == MAX_RECENT
    assert "/scans/0.nii.gz" not in paths and recent.last_folder() == "/scans"
    store.values["recent"] = "/one/file.nii.gz"  # QSettings gives a bare string for a one-element list
    assert recent.paths() == ["/one/file.nii.gz"]


# -- the inference worker's post-processing (a plain generator; needs PySide6 only to import) -----
def test_worker_post_processes_the_complete_volume_off_the_ui_thread() -> None:
    pytest.importorskip("PySide6")
    from viewer.widgets.inference_worker import Job, PostProcessed, _postprocessed

    vol = _volume()
    result = VolumeResult(vol, "axial", 2, keep_largest=(1,))
    result.add(_slice_result(vol, 0, 1))  # done by an earlier job: a 4x4 block
    empty = _slice_result(vol, 1, 0)
    island = _slice_result(vol, 2, 0)
    island.stats.segmentation[0, 0] = 1  # one voxel, not touching the block

    def run(items, cancel=False):
        job = Job(None, None, vol, result, [r.index for r in items])
        if cancel:
            job.cancel.set()
        return list(_postprocessed(job, iter(items)))

    out = run([empty, island])
    assert out[:2] == [empty, island]
    assert isinstance(out[2], PostProcessed)
    assert get_slice(out[2].labels, "axial", 0).all() and not get_slice(out[2].labels, "axial", 2).any()
    assert not get_slice(result.segmentation, "axial", 2).any()  # the result itself is the UI thread's
    assert run([empty]) == [empty]  # slice 2 missing: no post-processing yet
    assert run([empty, island], cancel=True) == [empty, island]
    result.keep_largest = ()
    assert run([empty, island]) == [empty, island]
