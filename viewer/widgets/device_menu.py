"""Settings > Compute device: where the viewer runs its networks (auto, the CPU or a GPU), kept across starts.

The choice becomes the process default (`engine.compute_device.use_device`): the next run builds its
chips there (results and chips already computed stay cached under their own device).
"""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtGui import QActionGroup
from PySide6.QtWidgets import QMainWindow, QMenu

from engine.compute_device import DeviceError, available_devices, parse_device, resolve_device, use_device

SETTING = "device"


def saved_device(settings: QSettings) -> str:
    """The device chosen in an earlier session (auto when none, or when that one is malformed)."""
    try:
        return parse_device(str(settings.value(SETTING, "auto")))
    except DeviceError:
        return "auto"


def add_device_menu(window: QMainWindow, settings: QSettings, initial: str) -> QMenu:
    """A Settings > Compute device menu on `window`, starting at `initial` (applied now)."""
    choices = ["auto", *available_devices()]
    if initial == "cuda":
        initial = "cuda:0"  # torch's default GPU
    if initial not in choices:  # a GPU this machine lacks (asked for, or saved elsewhere): said, not silent
        window.statusBar().showMessage(
            f"Compute device {initial} is not on this machine (it offers {', '.join(choices[1:])}); "
            f"using auto ({resolve_device('auto')})"
        )
        initial = "auto"
    use_device(initial)
    menu = window.menuBar().addMenu("&Settings").addMenu("Compute &device")
    group = QActionGroup(menu)
    for choice in choices:
        label = f"auto ({resolve_device('auto')})" if choice == "auto" else choice
        action = menu.addAction(label)
        action.setCheckable(True)
        action.setChecked(choice == initial)
        action.setData(choice)
        group.addAction(action)

    def chosen(action) -> None:
        choice = action.data()
        use_device(choice)
        settings.setValue(SETTING, choice)
        window.statusBar().showMessage(f"Compute device: {resolve_device(choice)} (from the next run)", 5000)

    group.triggered.connect(chosen)
    return menu
