"""The model panel: which network, digital or simulated analog chip, and the chip's settings.

Every change is reported once the user stops moving a control (debounced), so dragging the MC
slider from 1 to 64 asks for one run, not sixty-four. With a scan open, the list marks the models
that fit it (✓) and those that do not (✗), and a line under the network says why.
"""

from __future__ import annotations

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)
from superqt import QLabeledDoubleSlider, QLabeledSlider
from superqt.utils import qdebounced

from engine.model_store import NOMINAL_CHIPS, ModelSpec
from engine.run_settings import MAX_MC, MAX_NOISE_LEVEL, Mode, RunSettings
from viewer.session.readout import DRIFT_CHOICES

DEBOUNCE_MS = 400
FITS, MISFITS = "#7fd18b", "#ff8a7a"  # the fit line's colours on the dark theme


def _postprocessing(names: list[str], fraction: float) -> str:
    if fraction >= 1.0:
        return f"; keeps only the largest connected {', '.join(names)}"
    return (
        f"; keeps the connected {', '.join(names)} regions of at least {fraction:.0%} of the largest's size"
    )


def describe_model(spec: ModelSpec) -> str:
    """One line on what the model is, how good it measured (digitally and on chips: a reader weighs the
    analog result by the latter), and what is done to its output."""
    test = spec.test_metrics("digital").get("mean_dice")
    chips = spec.test_metrics(NOMINAL_CHIPS)
    names = [label.name for label in spec.labels if label.value in spec.keep_largest]
    return (
        f"{spec.architecture}, {'hardware-aware' if spec.kind == 'hwa' else 'digitally'} trained"
        + (f", test Dice {test:.3f}" if test is not None else "")
        + (
            f" digital, {chips['mean_dice']:.3f} ± {chips['std_dice_over_programmings']:.3f} on analog chips "
            "(noise 1, 1 day)"
            if chips and test is not None
            else ""
        )
        + (
            f"; reads each slice by overlapping {spec.sliding_window[0]}x{spec.sliding_window[1]} windows"
            if spec.sliding_window
            else ""
        )
        + ("; reads each slice also mirrored left-right and averages" if spec.flip_average else "")
        + (_postprocessing(names, spec.component_fraction) if names else "")
        + ("" if spec.has_analog else "; no analog weights: digital only")
    )


class ModelPanel(QGroupBox):
    """Model choice and run settings; `settingsChanged` fires (debounced) when any of them change."""

    settingsChanged = Signal()

    def __init__(self, specs: list[ModelSpec], parent: QWidget | None = None) -> None:
        super().__init__("Model", parent)
        self.specs = {s.name: s for s in specs}
        self._changed = qdebounced(self.settingsChanged.emit, timeout=DEBOUNCE_MS, parent=self)

        self.model_combo = QComboBox()
        for spec in specs:
            self.model_combo.addItem(spec.name, spec.name)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setStyleSheet("color: #909090;")
        self.fit = QLabel()
        self.fit.setWordWrap(True)
        self.fit.setVisible(False)

        self.digital_button = QPushButton("Digital")
        self.analog_button = QPushButton("Analog chip")
        self.mode_group = QButtonGroup(self)
        for button in (self.digital_button, self.analog_button):
            button.setCheckable(True)
            button.setStyleSheet(
                "QPushButton:checked { background-color: #2f6ea5; color: white; font-weight: bold; }"
            )
            self.mode_group.addButton(button)
        self.analog_button.setChecked(True)
        self.digital_button.setToolTip("Exact floating-point network (one pass, no device uncertainty)")
        self.analog_button.setToolTip(
            "Simulated analog in-memory computing chips; each MC sample is another chip (M)"
        )
        modes = QHBoxLayout()
        modes.setSpacing(0)
        modes.addWidget(self.digital_button)
        modes.addWidget(self.analog_button)

        self.mc_slider = QLabeledSlider(Qt.Orientation.Horizontal)
        self.mc_slider.setRange(1, MAX_MC)
        self.mc_slider.setValue(8)
        self.mc_slider.setToolTip("Monte-Carlo samples: chips whose disagreement gives the uncertainty")
        self.noise_slider = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.noise_slider.setRange(0.0, MAX_NOISE_LEVEL)
        self.noise_slider.setSingleStep(0.1)
        self.noise_slider.setDecimals(1)
        self.noise_slider.setValue(1.0)
        self.noise_slider.setToolTip("Device noise: 0 ideal, 1 nominal PCM, 3 three times worse")
        self.drift_combo = QComboBox()
        for text, seconds in DRIFT_CHOICES:
            self.drift_combo.addItem(text, seconds)
        self.drift_combo.setCurrentIndex(2)
        self.drift_combo.setToolTip("Time between programming the chips and reading them")

        form = QFormLayout(self)
        form.addRow("Network", self.model_combo)
        form.addRow(self.info)
        form.addRow(self.fit)
        form.addRow("Inference", modes)
        form.addRow("MC samples", self.mc_slider)
        form.addRow("Noise level", self.noise_slider)
        form.addRow("Drift time", self.drift_combo)

        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        self.mode_group.buttonToggled.connect(lambda *_: self._on_mode_changed())
        self.mc_slider.valueChanged.connect(lambda *_: self._changed())
        self.noise_slider.valueChanged.connect(lambda *_: self._changed())
        self.drift_combo.currentIndexChanged.connect(lambda *_: self._changed())
        self._on_model_changed()

    def spec(self) -> ModelSpec | None:
        name = self.model_combo.currentData()
        return self.specs.get(name) if name is not None else None

    @property
    def mode(self) -> Mode:
        return Mode.ANALOG if self.analog_button.isChecked() else Mode.DIGITAL

    def run_settings(self) -> RunSettings | None:
        spec = self.spec()
        if spec is None:
            return None
        return RunSettings(
            model=spec.name,
            mode=self.mode,
            mc_samples=int(self.mc_slider.value()),
            noise_level=round(float(self.noise_slider.value()), 2),
            drift_s=float(self.drift_combo.currentData()),
        )

    def set_mode(self, mode: str) -> None:
        (
            self.analog_button if mode == "analog" and self.analog_button.isEnabled() else self.digital_button
        ).setChecked(True)

    def toggle_mode(self) -> None:
        self.set_mode("digital" if self.mode == "analog" else "analog")

    def select(self, name: str) -> None:
        """Show `name` as the network without reporting a change: the session chose it (the gate)."""
        index = self.model_combo.findData(name)
        if index >= 0 and index != self.model_combo.currentIndex():
            with QSignalBlocker(self.model_combo), QSignalBlocker(self.mode_group):
                self.model_combo.setCurrentIndex(index)
                self._show_model()
            self._enable_device_controls()

    def show_fits(self, marks: dict[str, tuple[bool, str]]) -> None:
        """Mark each listed model as fitting the open scan or not, the reasons in its tooltip."""
        for index in range(self.model_combo.count()):
            name = self.model_combo.itemData(index)
            fits, why = marks.get(name, (None, ""))
            mark = "" if fits is None else ("✓ " if fits else "✗ ")
            self.model_combo.setItemText(index, mark + name)
            self.model_combo.setItemData(index, why or None, Qt.ItemDataRole.ToolTipRole)

    def show_fit_line(self, fits: bool | None, text: str) -> None:
        """The line under the network: whether it fits the open scan, and why (hidden without a scan)."""
        self.fit.setVisible(fits is not None)
        self.fit.setText(text)
        self.fit.setStyleSheet(f"color: {FITS if fits else MISFITS};")

    def _show_model(self) -> None:
        spec = self.spec()
        if spec is not None:
            self.info.setText(describe_model(spec))
            self.analog_button.setEnabled(spec.has_analog)
            if not spec.has_analog:
                self.digital_button.setChecked(True)

    def _enable_device_controls(self) -> None:
        analog = self.mode == "analog"
        for widget in (self.mc_slider, self.noise_slider, self.drift_combo):
            widget.setEnabled(analog)

    def _on_model_changed(self) -> None:
        self._show_model()
        self._on_mode_changed()

    def _on_mode_changed(self) -> None:
        self._enable_device_controls()
        self._changed()
