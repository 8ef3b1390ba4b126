"""Reading fixes in the Qt-free session: a readout that never repeats a value of a scan, map or place that has
gone, typed window/level and "Custom", a label palette apart from the heatmaps, the digital preview's
wording, the estimated time left and the remembered window per modality."""

from __future__ import annotations

import numpy as np
import pytest
from cmap import Colormap
from skimage.color import rgb2lab

from engine.volume import Volume
from tests.test_viewer_session import ANALOG, SPEC, _session, _slice_result, _volume
from viewer.session import display
from viewer.session.findings_table import Findings
from viewer.session.readout import DIGITAL_PREVIEW_NOTE, RemainingTime


def _scan(value: float, shape=(4, 5, 3)) -> Volume:
    """A scan whose voxels all hold `value`: any intensity in the readout names the scan it came from."""
    return Volume(np.full(shape, value, np.float32), np.eye(4))


# -- readout ----------------------------------------------------------------------------------------
def test_readout_follows_the_mouse_then_the_crosshair_when_it_leaves() -> None:
    session, _, _ = _session(_scan(102.0))
    assert session.readout("entropy").startswith("crosshair") and "intensity 102" in session.readout(
        "entropy"
    )
    session.pointer.hover("axial", 0, 0)
    row0 = session.readout("entropy")
    assert row0.startswith("mouse") and "voxel (3, 4, 1)" in row0  # top left: patient right, anterior
    session.pointer.hover("axial", -1, -1)  # off the image
    assert session.readout("entropy").startswith("crosshair")
    session.pointer.hover("axial", 1, 1)
    session.pointer.leave()  # the mouse left the view
    assert session.readout("entropy").startswith("crosshair  voxel (2, 2, 1)")


def test_readout_after_opening_another_scan_shows_the_new_scan() -> None:
    session, _, _ = _session(_scan(102.0))
    session.pointer.hover("axial", 1, 1)
    assert "intensity 102" in session.readout("entropy")
    session.open(_scan(65.0, (6, 6, 4)), "/data/other.nii.gz")
    text = session.readout("entropy")
    assert "intensity 65" in text and "102" not in text
    assert text.startswith("crosshair  voxel (3, 3, 2)"), "the old scan's mouse position is forgotten"
    session.pointer.hover("axial", 5, 5)  # a place only the new scan has
    assert session.readout("entropy").startswith("mouse      voxel (0, 0, 2)")


def test_readout_names_the_map_chosen_now_and_its_value() -> None:
    vol = _volume((4, 4, 3))
    session, _, _ = _session(vol)
    session.request_run(SPEC, ANALOG)
    stats = _slice_result(vol, 1)
    stats.stats.std[:] = 0.25
    session.result.add(stats)
    session.move_slice("axial", 1)
    entropy, std = session.readout("entropy"), session.readout("std")
    assert "predictive entropy 0.1000 nats" in entropy and "std" not in entropy
    assert "std of foreground p 0.2500" in std and "entropy" not in std


def test_readout_of_a_slice_moved_under_a_still_mouse() -> None:
    data = np.zeros((3, 3, 4), np.float32)
    data[..., 3] = 7.0
    session, _, _ = _session(Volume(data, np.eye(4)))
    session.pointer.hover("axial", 1, 1)
    assert "intensity 0" in session.readout("entropy")
    session.move_slice("axial", 3)  # the wheel, with the mouse still over the image
    assert "voxel (1, 1, 3)" in session.readout("entropy") and "intensity 7" in session.readout("entropy")


def test_digital_preview_is_named_in_the_title_the_run_line_and_the_readout() -> None:
    vol = _volume((4, 4, 3))
    session, _, _ = _session(vol)
    session.request_run(SPEC, ANALOG)
    session.move_slice("axial", 0)
    assert "DIGITAL PREVIEW" not in session.run_line()
    for k in range(3):  # no chip yet: every slice shows the exact network's one pass
        session.result.show(_slice_result(vol, k), 0)
    for k in range(3):  # browsing: each slice says so
        session.move_slice("axial", k)
        assert session.slice_layers("axial", "entropy", False, True).note == DIGITAL_PREVIEW_NOTE
        assert session.readout("entropy").endswith("(digital preview)")
    assert "DIGITAL PREVIEW" in session.run_line()
    session.result.show(_slice_result(vol, 2), 1)  # the first chip's read replaces the slice on screen
    assert session.slice_layers("axial", "entropy", False, True).note == "(preview: 1 of 2 samples)"
    assert "DIGITAL PREVIEW" in session.run_line()  # slices 0 and 1 still show it
    session.result.add(_slice_result(vol, 0))
    session.result.add(_slice_result(vol, 1))
    session.move_slice("axial", 0)
    assert session.slice_layers("axial", "entropy", False, True).note == ""  # replaced by the result
    assert "DIGITAL PREVIEW" not in session.run_line()


def test_findings_count_no_preview() -> None:
    vol = _volume((4, 4, 3))
    session, _, _ = _session(vol)
    session.request_run(SPEC, ANALOG)
    session.result.add(_slice_result(vol, 0))
    session.result.show(_slice_result(vol, 1), 0)  # 16 voxels shown, not a result
    found: list[Findings] = []
    session.events.findings_ready.connect(found.append)
    session.refresh_findings("entropy")
    assert found[-1].labels[0].volume_ml == pytest.approx(16 * vol.voxel_volume_ml)
    assert session.result.segmentation[..., 1].all()  # the preview itself is still drawn


# -- window / level ---------------------------------------------------------------------------------
def test_typed_window_is_custom_and_never_narrower_than_a_drag_step() -> None:
    session, _, seen = _session(_volume((4, 4, 3)))
    session.type_window(0.4, 0.25)
    assert session.preset == display.CUSTOM and session.window_level == display.WindowLevel(0.4, 0.25)
    assert seen["window_changed"][-1] == (display.WindowLevel(0.4, 0.25),)
    session.type_window(0.0, 0.5)
    assert session.window_level.width == pytest.approx(display.window_step(session.data_range))
    session.apply_preset(display.MR_AUTO)
    assert session.preset == display.MR_AUTO


def test_window_is_remembered_per_modality() -> None:
    session, _, _ = _session()
    ct = _scan(-1000.0)
    ct.data[0, 0, 0] = 1000.0
    session.open(ct, "/data/ct.nii.gz")
    session.apply_preset("CT lung")
    session.open(_scan(10.0), "/data/mr.nii.gz")
    session.type_window(5.0, 3.0)  # an MR window by hand: not carried to another MR scan
    assert session.preset == display.CUSTOM
    session.open(ct, "/data/ct.nii.gz")
    assert session.preset == "CT lung" and session.window_level == display.CT_PRESETS["CT lung"]
    session.type_window(350.0, 40.0)
    session.open(_scan(10.0), "/data/mr.nii.gz")
    assert session.preset == display.MR_AUTO
    session.open(ct, "/data/ct2.nii.gz")  # a CT window by hand is in Hounsfield units: it carries over
    assert session.preset == display.CUSTOM and session.window_level == display.WindowLevel(350.0, 40.0)


# -- overlays ---------------------------------------------------------------------------------------
def _lab(rgb: np.ndarray) -> np.ndarray:
    return rgb2lab(np.asarray(rgb, float).reshape(-1, 1, 3) / 255.0).reshape(-1, 3)


def test_label_palette_lies_apart_from_every_heatmap_colour_and_the_reference() -> None:
    """A label outline must not vanish on the heatmap (the hippocampus' yellow and blue did on viridis)."""
    palette = _lab(np.array(display.LABEL_PALETTE))
    for name in display.HEATMAP_COLORMAPS:
        heat = _lab(Colormap(name).lut(256)[:, :3] * 255)
        nearest = np.linalg.norm(palette[:, None] - heat[None], axis=2).min()
        assert nearest > 30, f"a label colour is within {nearest:.0f} (CIELAB) of {name}"
    assert np.linalg.norm(palette - _lab(np.array([display.TRUTH_COLOUR])), axis=1).min() > 60
    edits = _lab(np.array([display.EDIT_COLOUR]))  # the reader's edits: apart from all of them too
    others = [palette, _lab(np.array([display.TRUTH_COLOUR]))]
    others += [_lab(Colormap(name).lut(256)[:, :3] * 255) for name in display.HEATMAP_COLORMAPS]
    assert np.linalg.norm(np.concatenate(others) - edits, axis=1).min() > 30
    colours = display.label_colours([0, 1, 2, 6])
    assert 0 not in colours and colours[1] != colours[2] and colours[6] == colours[1]


# -- estimated time left ----------------------------------------------------------------------------
def test_remaining_time_from_the_pace_of_each_phase() -> None:
    now = [100.0]
    left = RemainingTime(clock=lambda: now[0])
    assert left.update("chips", 0, 8) == "estimating the time left"
    now[0] += 0.5
    assert left.update("chips", 1, 8) == "about 4 s left"  # 7 chips to go at 0.5 s each
    now[0] += 30.0
    assert left.update("chips", 2, 8) == "about 1 min 32 s left"
    now[0] += 1.0
    assert left.update("slices", 0, 27) == "estimating the time left"  # a new phase: a new pace
    now[0] += 2.0
    assert left.update("slices", 10, 27) == "about 3 s left"
    assert left.update("slices", 27, 27) == ""
