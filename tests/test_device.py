"""Where networks compute: the device choice, its option, and the same results on every device.

Without a GPU these run the device code path on the CPU (the same `.to(device)` moves, generators and
batching); on a machine with one they run on each GPU too. `make gpu-check` compares a real GPU with
the CPU on the shipped models.
"""

from __future__ import annotations

import pytest
import torch

from cli.main import build_parser, main
from engine.analog.chips import ChipCache
from engine.compute_device import (
    DEVICE_ENV,
    DeviceError,
    available_devices,
    parse_device,
    read_batch_size,
    resolve_device,
    use_device,
)
from engine.run_settings import RunSettings


def test_device_choices_are_checked_without_torch() -> None:
    assert [parse_device(t) for t in ("auto", " CPU", "cuda", "cuda:1")] == ["auto", "cpu", "cuda", "cuda:1"]
    for bad in ("gpu", "cuda:", "cuda:x", "mps", ""):
        with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
            parse_device(bad)


def test_auto_takes_a_gpu_only_when_torch_sees_one(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="sees 2 GPU"):
        resolve_device("cuda:2")
    assert read_batch_size(torch.device("cuda", 0)) > read_batch_size(torch.device("cpu")) >= 1


def test_the_process_default_follows_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device() == torch.device("cpu")
    use_device(None)
    assert resolve_device() == torch.device("cpu")
    use_device("auto")
    assert resolve_device() == resolve_device("auto")


@pytest.mark.parametrize("command", ["predict", "evaluate", "train", "report", "bench"])
def test_every_computing_command_takes_device(command: str) -> None:
    args = {
        "predict": ["predict", "scan.nii.gz", "--out", "o"],
        "evaluate": ["evaluate", "--model", "m", "--data", "d"],
        "train": ["train", "--data", "d", "--out", "o"],
        "report": ["report"],
        "bench": ["bench"],
    }[command]
    assert build_parser().parse_args([*args, "--device", "cuda:0"]).device == "cuda:0"
    assert build_parser().parse_args(args).device is None


def test_a_missing_gpu_is_one_line_and_exit_2(lgg_case, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cpu")  # put back after the test: `--device` sets the process default
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(
        ["predict", str(lgg_case[0]), "--mode", "digital", "--device", "cuda", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no CUDA GPU" in err
    assert not list(tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(lgg_case[0]), "--device", "gpu", "--out", str(tmp_path)])
    assert exit_.value.code == 2


@pytest.mark.parametrize("device", available_devices())
@pytest.mark.parametrize("mode", ["digital", "analog"])
def test_every_device_reads_what_the_cpu_reads(small_model, device: str, mode: str) -> None:
    """Digital to float rounding; analog at noise 0 too (the chips are the CPU's, programmed by aihwkit
    there). With device noise a GPU draws other numbers from the same seeds: same statistics, other
    samples, which `make gpu-check` compares."""
    run = RunSettings(model=small_model.name, mode=mode, mc_samples=2, noise_level=0.0, seed=1)
    cache = ChipCache()
    here = cache.segmenter(small_model, run, device=device)
    cpu = cache.segmenter(small_model, run, device="cpu")
    assert here.device == torch.device(device) and len(cache) == (1 if device == "cpu" else 2)
    for chip in here.chips if mode == "analog" else [here.digital]:
        assert all(t.device == torch.device(device) for t in [*chip.parameters(), *chip.buffers()])
    torch.manual_seed(0)
    x = torch.rand(3, 1, 64, 64)
    got, want = here.predict_batch(x, [0, 1, 2]), cpu.predict_batch(x, [0, 1, 2])
    assert got.device.type == "cpu"
    tolerance = 1e-5 if mode == "digital" else 0.05  # one ADC level, rarely, on another device
    assert (got - want).abs().mean() < 1e-3 and (got - want).abs().max() < tolerance


@pytest.mark.parametrize("device", available_devices())
def test_hardware_aware_training_steps_on_every_device(device: str) -> None:
    """The fast HWA forward and its gradients (input ranges included) on the device."""
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.optim import AnalogOptimizer

    from engine.analog.device import DeviceSettings, rpu_config
    from engine.analog.hwa_forward import use_fast_hwa

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    model = convert_to_analog(net, rpu_config(DeviceSettings(), training=True)).train()
    for _, tile in model.named_analog_tiles():
        tile.input_range.data.fill_(0.5)  # small: some inputs clip and the range gets a gradient
        tile.input_range_update_idx.data.fill_(10_000)
    model = use_fast_hwa(model).to(device)
    optimizer = AnalogOptimizer(torch.optim.Adam, model.parameters(), lr=1e-2)
    before = [t.input_range.detach().clone() for _, t in model.named_analog_tiles()]
    loss = model(torch.randn(2, 2, 8, 8, device=device)).square().mean()
    loss.backward()
    optimizer.step()
    after = [t.input_range.detach() for _, t in model.named_analog_tiles()]
    assert all(a.device == torch.device(device) for a in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))


def test_the_viewers_device_menu_applies_the_choice_and_keeps_it(qtbot, tmp_path, monkeypatch) -> None:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMainWindow

    from viewer.widgets.device_menu import add_device_menu, saved_device

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    settings = QSettings(str(tmp_path / "viewer.ini"), QSettings.Format.IniFormat)
    window = QMainWindow()
    qtbot.addWidget(window)
    menu = add_device_menu(window, settings, saved_device(settings))
    actions = {a.data(): a for a in menu.actions()}
    assert list(actions) == ["auto", *available_devices()] and actions["auto"].isChecked()
    actions["cpu"].trigger()  # what the reader's click does
    assert resolve_device() == torch.device("cpu") and saved_device(settings) == "cpu"
    assert settings.value("device") == "cpu" and actions["cpu"].isChecked()
    again = QMainWindow()  # the next start opens with the saved choice
    qtbot.addWidget(again)
    use_device("auto")
    reopened = {a.data(): a for a in add_device_menu(again, settings, saved_device(settings)).actions()}
    assert reopened["cpu"].isChecked() and resolve_device() == torch.device("cpu")
    settings.setValue("device", "tpu")  # a malformed saved choice: auto
    assert saved_device(settings) == "auto"


def test_the_viewer_says_when_the_asked_device_is_not_there(qtbot, tmp_path, monkeypatch) -> None:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMainWindow

    from viewer.widgets.device_menu import add_device_menu

    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.setattr("viewer.widgets.device_menu.available_devices", lambda: ["cpu"])  # a GPU-less machine
    window = QMainWindow()
    qtbot.addWidget(window)
    menu = add_device_menu(window, QSettings(str(tmp_path / "v.ini"), QSettings.Format.IniFormat), "cuda")
    message = window.statusBar().currentMessage()
    assert "cuda:0 is not on this machine" in message and "using auto" in message
    assert next(a for a in menu.actions() if a.isChecked()).data() == "auto"

    monkeypatch.setattr("viewer.widgets.device_menu.available_devices", lambda: ["cpu", "cuda:0"])
    gpu_window = QMainWindow()  # `--device cuda` on a GPU machine is its first GPU, not auto
    qtbot.addWidget(gpu_window)
    menu = add_device_menu(gpu_window, QSettings(str(tmp_path / "g.ini"), QSettings.Format.IniFormat), "cuda")
    assert next(a for a in menu.actions() if a.isChecked()).data() == "cuda:0"
    assert not gpu_window.statusBar().currentMessage()
