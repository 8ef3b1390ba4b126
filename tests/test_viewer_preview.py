"""A cold analog run (no chip programmed yet): the exact network's digital preview of every slice comes
first, the slice on screen first, and is labelled in each view, the run line and the readout while the
reader browses, until the chips' results replace it; the status bar gives the time left of each phase."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from engine.analog.chips import ChipCache  # noqa: E402
from engine.model_store import Label  # noqa: E402
from tests import test_viewer_reading_window as reading  # noqa: E402
from tests.test_viewer_reading_window import open_scan, wait_run  # noqa: E402
from viewer.session.readout import DIGITAL_PREVIEW_NOTE  # noqa: E402

make_window = reading.make_window  # its fixture: windows with their own settings, no worker left running


@pytest.fixture(scope="module")
def context_model(tmp_path_factory):
    """A small random 2.5D U-Net (a slice read with its neighbours): previews must feed it as runs do."""
    import torch

    from engine.analog.conversion import calibrated_analog
    from engine.analog.device import DeviceSettings
    from engine.model_store import ModelSpec, read_spec, save_model
    from engine.preprocessing import Preprocessing

    torch.manual_seed(0)
    args = dict(
        spatial_dims=2, in_channels=3, out_channels=2, channels=[4, 8, 16], strides=[2, 2], num_res_units=1
    )
    labels = [Label(0, "background", (0, 0, 0)), Label(1, "lesion", (255, 0, 0))]
    prep = Preprocessing(input_size=(64, 64), in_channels=3, context=1)
    spec = ModelSpec("context_unet", "unet", args, prep, labels, "digital", DeviceSettings())
    net = spec.build().eval()
    folder = tmp_path_factory.mktemp("models") / "context_unet"
    save_model(spec, folder, net, calibrated_analog(net, spec.device, torch.rand(8, 3, 64, 64)))
    return read_spec(folder)


def test_a_cold_analog_run_previews_every_slice_digitally_before_any_chip(context_model) -> None:
    from engine.pipeline import SliceResult, VolumeResult
    from engine.run_settings import RunSettings
    from engine.volume import Volume
    from viewer.session.result_cache import missing_slices
    from viewer.widgets.inference_worker import Job, Preview, _segment

    volume = Volume(np.random.default_rng(0).random((64, 64, 9), dtype=np.float32), np.eye(4))

    def job(mode: str, order: list[int]) -> Job:
        run = RunSettings(model="context_unet", mode=mode, mc_samples=2, noise_level=1.0, drift_s=3600.0)
        return Job(context_model, run, volume, VolumeResult.for_model(volume, context_model), order)

    analog = job("analog", missing_slices(VolumeResult.for_model(volume, context_model), 4))
    previews: list[Preview] = []
    for item in _segment(ChipCache(capacity=1), analog):
        assert not isinstance(item, SliceResult), "no slice is segmented before the chips' previews"
        if isinstance(item, Preview):
            previews.append(item)
            if item.samples:  # the first chip's read of the slice on screen: enough seen
                analog.cancel.set()
    digital = {p.result.index: p.result.stats for p in previews if p.samples == 0}
    assert previews[0].result.index == 4 and previews[0].samples == 0  # the slice on screen, first
    assert sorted(digital) == list(range(9)) and len(digital) == len(previews) - 1  # all, before any chip
    assert previews[-1].result.index == 4 and previews[-1].samples == 1
    exact = {
        i.index: i.stats
        for i in _segment(ChipCache(), job("digital", [0, 4, 8]))
        if isinstance(i, SliceResult)
    }
    for k in (0, 4, 8):  # the digital run's own result, neighbours included (repeated at the ends)
        assert np.allclose(digital[k].probabilities, exact[k].probabilities, atol=1e-4)


def test_cold_analog_run_shows_the_digital_preview_then_the_chips(
    qtbot, make_window, small_model, lgg_case
) -> None:
    window = make_window([small_model], ChipCache(capacity=1), mode="analog", mc=2)
    session = window.session
    shown: list[tuple[int, int, str, str]] = []  # slice previewed, its samples, the axial title, the readout
    window.runner.slicePreviewed.connect(
        lambda job, k: shown.append(
            (k, job.result.previews[k], window.grid.views["axial"].title.text(), window.readout.text())
        )
    )
    messages: list[str] = []
    window.runner.status.connect(lambda job, st: messages.append(window.statusBar().currentMessage()))
    window.runner.sliceFinished.connect(lambda job, k: messages.append(window.statusBar().currentMessage()))
    browsed: list[tuple[str, str, str]] = []

    def browse(job, status) -> None:
        """While the first chip is programmed, the reader looks at another slice, then comes back."""
        if status.chips_total and not status.chips_ready and not browsed:
            here = session.crosshair[2]
            session.move_slice("axial", here - 5)
            browsed.append(
                (window.grid.views["axial"].title.text(), window.run_label.text(), window.readout.text())
            )
            session.move_slice("axial", here)

    window.runner.status.connect(browse)
    open_scan(qtbot, window, lgg_case[0])
    wait_run(qtbot, window)
    on_screen = shown[0][0]
    assert [(k, samples) for k, samples, *_ in shown[:1]] == [(on_screen, 0)]
    assert sorted(k for k, samples, *_ in shown[:27] if samples == 0) == list(range(27))
    assert DIGITAL_PREVIEW_NOTE in shown[0][2] and shown[0][3].endswith("(digital preview)")
    title, run_line, readout = browsed[0]
    assert (
        DIGITAL_PREVIEW_NOTE in title
        and "DIGITAL PREVIEW" in run_line
        and readout.endswith("(digital preview)")
    )
    assert [(k, samples) for k, samples, *_ in shown[27:]] == [(on_screen, 1), (on_screen, 2)]
    assert "(preview: 1 of 2 samples)" in shown[27][2] and "(preview: 2 of 2 samples)" in shown[28][2]
    assert any("Programming analog chip" in m and "estimating the time left" in m for m in messages)
    assert any(m.endswith("s left") for m in messages), "the time left is said once a step was timed"
    assert "preview" not in window.grid.views["axial"].title.text()  # replaced by the finished slices
    assert "PREVIEW" not in window.run_label.text() and not session.result.previews
