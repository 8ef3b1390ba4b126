"""The main window: wires scan, views, panels and the inference runner together.

It owns the reading state (the open scan, the crosshair position, the window/level, the result on
screen and the results cached per settings) and turns the user's intent into calls to the engine.
Slow work (reading a scan, building a model, inference) always runs in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMessageBox,
                               QProgressBar, QPushButton, QScrollArea, QVBoxLayout, QWidget)
from superqt import QElidingLabel
from superqt.utils import create_worker, qthrottled

from engine.display import (CT_PRESETS, MR_AUTO, VIEWS, WindowLevel, clamp_voxel, display_position, heatmap_lut,
                            inside, label_lut, outline, voxel_at, window_for)
from engine.export import probability_map, summary, write_json
from engine.ground_truth import load_ground_truth
from engine.run_settings import RunSettings
from engine.model_store import ModelSpec, default_model, list_models
from engine.pipeline import VolumeResult
from engine.preprocessing import AXES, get_slice, slice_count
from engine.result_cache import ResultCache, missing_slices
from engine.analog.chips import ChipCache
from engine.uncertainty import MAP_TITLES
from engine.volume import SCAN_SUFFIXES, ScanError, Volume, load_scan, save_nifti
from viewer.colour_bar import ColourBar
from viewer.findings_panel import FindingsPanel
from viewer.help_dialogs import show_about, show_shortcuts
from viewer.inference_worker import InferenceRunner, Job, Status
from viewer.model_panel import DRIFT_CHOICES, ModelPanel
from viewer.overlay_panel import MAP_UNITS, OverlayPanel
from viewer.view_grid import ViewGrid

MAX_RECENT = 8
SLICE_FORMAT = "%v / %m slices"
TRUTH_LUT = label_lut({v: (255, 60, 255) for v in range(1, 256)})  # reference outline: magenta
SCAN_FILTER = "Scans (*.nii *.nii.gz *.mha *.mhd *.nrrd *.nhdr *.dcm);;All files (*)"


def _read_scan(path: str) -> Volume:
    """`load_scan` with every failure turned into a `ScanError` the user can read."""
    try:
        return load_scan(path)
    except ScanError:
        raise
    except Exception as exc:  # noqa: BLE001 (a reader bug must not pass silently or kill the app)
        raise ScanError(f"{path}: could not be read ({type(exc).__name__}: {exc})") from exc


def _sibling(path: Path, suffix: str, ext: str | None = None) -> Path:
    """`x/case_seg.nii.gz` -> `x/case_<suffix>.nii.gz` (or `ext`): files exported next to the segmentation."""
    name = path.name
    own_ext = ".nii.gz" if name.lower().endswith(".nii.gz") else path.suffix
    stem = name[: len(name) - len(own_ext)]
    stem = stem[:-4] if stem.endswith("_seg") else stem
    return path.with_name(f"{stem}_{suffix}{ext or own_ext}")


def _drift_text(seconds: float) -> str:
    return next((text for text, s in DRIFT_CHOICES if s == seconds), f"{seconds:g} s")


def describe_run(run: RunSettings) -> str:
    if run.mode == "digital":
        return f"{run.model} · digital"
    return (f"{run.model} · analog chip · {run.mc_samples} MC sample{'s' if run.mc_samples > 1 else ''}"
            f" · noise {run.noise_level:g} · drift {_drift_text(run.drift_s)}")


class MainWindow(QMainWindow):
    """`aimc-viewer`'s window. Signals let tests and scripts wait for what happens in the background.

    `specs` defaults to the installed models; `pool` lets several windows share programmed chips.
    """

    scanLoaded = Signal(object)  # Volume
    openFailed = Signal(str)  # message shown to the user
    resultShown = Signal(object)  # VolumeResult now on screen
    exported = Signal(list)  # paths written

    def __init__(self, specs: list[ModelSpec] | None = None, settings: QSettings | None = None,
                 pool: ChipCache | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("AIMC viewer")
        self.setAcceptDrops(True)
        self.qsettings = settings if settings is not None else QSettings("aimc", "aimc-viewer")
        self.volume: Volume | None = None
        self.crosshair: tuple[int, int, int] = (0, 0, 0)
        self.window_level = WindowLevel(1.0, 0.5)
        self.data_range = 1.0
        self.cache = ResultCache()
        self.result: VolumeResult | None = None
        self.run: RunSettings | None = None
        self.spec: ModelSpec | None = None
        self.truth: np.ndarray | None = None
        self.active_view = "axial"
        self._hovering = False  # the readout follows the mouse over an image, else the crosshair
        self._run_started = 0.0
        self._loaders: set = set()  # background readers kept alive until they report

        installed = specs is None
        specs = list_models() if installed else specs
        self.runner = InferenceRunner(pool, parent=self)
        self.grid = ViewGrid()
        self.colour_bar = ColourBar()
        self.model_panel = ModelPanel(specs or [])
        if installed and specs:
            index = self.model_panel.model_combo.findData(default_model().name)
            self.model_panel.model_combo.setCurrentIndex(max(index, 0))
        self.overlay_panel = OverlayPanel()
        self.findings = FindingsPanel()
        self._build_layout()
        self._build_actions()
        self._connect()
        self._refresh_findings = qthrottled(self._update_findings, timeout=300, parent=self)
        self._sync_labels()
        self.statusBar().showMessage("Open a scan: File > Open, drag and drop, or a recent file."
                                     if specs else "No model installed in resources/models: viewing only.")

    # -- construction -------------------------------------------------------------------------
    def _build_layout(self) -> None:
        self.run_label = QElidingLabel("No scan open")
        self.run_label.setStyleSheet("font-weight: bold; padding: 2px;")
        self.readout = QLabel(" ")
        self.readout.setStyleSheet("font-family: monospace; padding: 2px;")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        views = QWidget()
        column = QVBoxLayout(views)
        column.setContentsMargins(4, 4, 4, 4)
        column.addWidget(self.run_label)
        row = QHBoxLayout()
        row.addWidget(self.grid, 1)
        row.addWidget(self.colour_bar)
        column.addLayout(row, 1)
        column.addWidget(self.readout)
        self.setCentralWidget(views)

        controls = QWidget()
        stack = QVBoxLayout(controls)
        stack.setContentsMargins(4, 4, 4, 4)
        stack.addWidget(self.model_panel)
        stack.addWidget(self.overlay_panel)
        stack.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(controls)
        scroll.setMinimumWidth(340)
        dock = QDockWidget("Model and display", self)
        dock.setObjectName("controls")
        dock.setWidget(scroll)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        findings = QDockWidget("Findings", self)
        findings.setObjectName("findings")
        findings.setWidget(self.findings)
        findings.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, findings)
        self.resizeDocks([dock, findings], [controls.sizeHint().height(), 260], Qt.Orientation.Vertical)

        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setFormat(SLICE_FORMAT)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop inference (Esc); finished slices are kept")
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.cancel_button)
        self._show_progress(False)

    def _action(self, text: str, slot: Callable[[], object], shortcut: str | None = None,
                menu=None, checkable: bool = False) -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setCheckable(checkable)
        action.triggered.connect(lambda *_: slot())
        self.addAction(action)
        if menu is not None:
            menu.addAction(action)
        return action

    def _build_actions(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self._action("&Open scan…", self.choose_scan, "Ctrl+O", file)
        self._action("Open &DICOM folder…", self.choose_dicom_folder, "Ctrl+Shift+O", file)
        self.recent_menu = file.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file.addSeparator()
        self._action("Load &ground truth…", self.choose_ground_truth, "Ctrl+G", file)
        file.addSeparator()
        self._action("&Export results…", self.export_results, "Ctrl+E", file)
        self.export_uncertainty = self._action("Export includes the uncertainty map", lambda: None, None, file, True)
        self.export_probability = self._action("Export includes the probability map", lambda: None, None, file, True)
        self.export_uncertainty.setChecked(True)
        file.addSeparator()
        self._action("&Quit", self.close, "Ctrl+Q", file)

        view = bar.addMenu("&View")
        group = QActionGroup(self)
        self.large_actions = {}
        for number, name in enumerate(VIEWS, start=1):
            action = self._action(f"Large view: {name}", lambda n=name: self.set_large_view(n), str(number), view, True)
            group.addAction(action)
            self.large_actions[name] = action
        self.large_actions[self.grid.large].setChecked(True)
        view.addSeparator()
        wl = view.addMenu("&Window / level")
        for name in (MR_AUTO, *CT_PRESETS):
            self._action(name, lambda n=name: self.apply_preset(n), None, wl)
        view.addSeparator()
        self._action("Show/hide &segmentation", self.overlay_panel.toggle_segmentation, "S", view)
        self._action("Show/hide &uncertainty", self.overlay_panel.toggle_heatmap, "U", view)
        self._action("Segmentation fill/&outline", self.overlay_panel.toggle_outline, "O", view)
        self._action("Show/hide &ground truth", self.overlay_panel.toggle_truth, "G", view)
        view.addSeparator()
        self._action("Next slice", lambda: self.step_slice(1), "PgUp")
        self._action("Previous slice", lambda: self.step_slice(-1), "PgDown")
        self._action("&Reset zoom", self.reset_zoom, "Home", view)

        infer = bar.addMenu("&Inference")
        self._action("&Run / resume", self.request_run, "Ctrl+R", infer)
        self._action("&Cancel", self.runner.cancel, "Esc", infer)
        self._action("Switch digital / analog", self.model_panel.toggle_mode, "M", infer)

        helpm = bar.addMenu("&Help")
        self._action("&Keyboard and mouse…", lambda: show_shortcuts(self), "F1", helpm)
        self._action("&About…", lambda: show_about(self), None, helpm)

    def _connect(self) -> None:
        for view in self.grid.views.values():
            view.sliceChanged.connect(self._on_slice_changed)
            view.pointed.connect(self._on_pointed)
            view.hovered.connect(self._on_hovered)
            view.windowDragged.connect(self._on_window_dragged)
            view.activated.connect(self._set_active_view)
            view.enlargeRequested.connect(self.set_large_view)
        self.model_panel.settingsChanged.connect(self._on_model_settings_changed)
        self.overlay_panel.changed.connect(self._on_overlay_changed)
        self.overlay_panel.presetChosen.connect(self.apply_preset)
        self.findings.sliceRequested.connect(self.jump_to_slice)
        self.cancel_button.clicked.connect(self.runner.cancel)
        self.runner.started.connect(self._on_job_started)
        self.runner.status.connect(self._on_job_status)
        self.runner.sliceFinished.connect(self._on_slice_finished)
        self.runner.slicePreviewed.connect(self._on_slice_previewed)
        self.runner.finished.connect(self._on_job_finished)
        self.runner.failed.connect(self._on_job_failed)

    # -- opening ------------------------------------------------------------------------------
    def choose_scan(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open scan", self._last_dir(), SCAN_FILTER)
        if path:
            self.open_path(path)

    def choose_dicom_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder", self._last_dir())
        if path:
            self.open_path(path)

    def _last_dir(self) -> str:
        recent = self.recent_files()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def _in_background(self, func: Callable, arg: str, done: Callable, failed: Callable[[str], None]) -> None:
        """Run `func(arg)` in a worker thread; `done(result)` or `failed(message)` on the UI thread."""
        worker = create_worker(func, arg, _start_thread=False, _ignore_errors=True)
        self._loaders.add(worker)
        worker.returned.connect(done)
        worker.errored.connect(lambda exc: failed(str(exc)))
        worker.finished.connect(lambda: self._loaders.discard(worker))
        worker.start()

    def open_path(self, path: str | Path) -> None:
        """Read a scan in the background; `scanLoaded` or a message box (and `openFailed`) follows."""
        path = str(path)
        self.statusBar().showMessage(f"Opening {path}…")
        self._in_background(_read_scan, path, lambda vol: self._on_scan_loaded(vol, path),
                            self._on_open_failed)

    def _on_open_failed(self, message: str) -> None:
        self.statusBar().showMessage("Could not open the scan", 5000)
        QMessageBox.critical(self, "Cannot open scan", message)
        self.openFailed.emit(message)

    def _on_scan_loaded(self, volume: Volume, path: str) -> None:
        self.runner.cancel()
        self.cache.clear()
        self.result = self.run = None
        self.truth = None
        self.overlay_panel.set_truth_loaded(None)
        self.findings.clear()
        self.volume = volume
        low, high = float(volume.data.min()), float(volume.data.max())
        self.data_range = (high - low) or 1.0
        is_ct = volume.modality.upper() == "CT" or low < -500  # air in Hounsfield units
        self.apply_preset("CT abdomen" if is_ct else MR_AUTO)
        for name, view in self.grid.views.items():
            view.set_geometry(volume.shape, volume.spacing, slice_count(volume.shape, name))
        self.crosshair = tuple(n // 2 for n in volume.shape)  # type: ignore[assignment]
        self._refresh_all()
        self._update_readout()
        name = Path(path).name
        self.setWindowTitle(f"{name} — AIMC viewer")
        spacing = " × ".join(f"{s:.2f}" for s in volume.spacing)
        self.statusBar().showMessage(f"Opened {name}: {' × '.join(map(str, volume.shape))} voxels, {spacing} mm", 8000)
        self._add_recent(path)
        self.scanLoaded.emit(volume)
        QTimer.singleShot(0, self.request_run)  # next event-loop turn: no single long UI step

    # -- recent files, drag and drop ----------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.qsettings.value("recent", [])
        if isinstance(value, str):  # QSettings returns a bare string for one-element lists
            return [value]
        return [str(v) for v in value] if isinstance(value, list) else []

    def _add_recent(self, path: str) -> None:
        path = str(Path(path).resolve())
        recent = [path] + [p for p in self.recent_files() if p != path]
        self.qsettings.setValue("recent", recent[:MAX_RECENT])
        self.qsettings.sync()

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_files()
        if not recent:
            self.recent_menu.addAction("(none)").setEnabled(False)
        for path in recent:
            self.recent_menu.addAction(path, lambda p=path: self.open_path(p))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            scans = [p for p in paths if p.lower().endswith(SCAN_SUFFIXES) or Path(p).is_dir()]
            self.open_path((scans or paths)[0])

    # -- ground truth -------------------------------------------------------------------------
    def choose_ground_truth(self) -> None:
        if self.volume is None:
            QMessageBox.information(self, "Ground truth", "Open a scan first.")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load ground-truth labels", self._last_dir(), SCAN_FILTER)
        if path:
            self.load_ground_truth(path)

    def load_ground_truth(self, path: str | Path) -> None:
        """Read a label file in the background and compare it with the result as slices finish."""
        volume = self.volume
        if volume is None:
            return

        def done(truth: np.ndarray) -> None:
            if volume is self.volume:
                self.truth = truth
                self.overlay_panel.set_truth_loaded(Path(path).name)
                self._update_findings()

        def failed(message: str) -> None:
            QMessageBox.warning(self, "Cannot load ground truth", message)

        self._in_background(lambda p: load_ground_truth(p, volume), str(path), done, failed)

    # -- inference ----------------------------------------------------------------------------
    def _on_model_settings_changed(self) -> None:
        self._sync_labels()
        self.request_run()

    def _sync_labels(self) -> None:
        spec = self.model_panel.spec()
        if spec is not None and spec is not self.spec:
            self.overlay_panel.set_labels(spec.labels)
            self.spec = spec

    def request_run(self) -> None:
        """Show the result of the current settings (cached or partial) and segment what is missing."""
        spec, run = self.model_panel.spec(), self.model_panel.run_settings()
        if self.volume is None or spec is None or run is None:
            return
        self._sync_labels()
        volume = self.volume
        result = self.cache.get_or_create(run, lambda: VolumeResult.for_model(volume, spec))
        self._show_result(result, run)
        running = self.runner.job
        if running is not None and running.result is result and not running.cancel.is_set():
            return  # already being computed
        if result.complete:
            self.runner.cancel()
            self.statusBar().showMessage(f"Cached result: {describe_run(run)}", 5000)
            return
        order = missing_slices(result, self.crosshair[AXES[axis]])
        self.runner.start(spec, run, volume, result, order)

    def _show_result(self, result: VolumeResult, run: RunSettings) -> None:
        self.result, self.run = result, run
        self._update_run_label()
        for name in VIEWS:
            self._refresh_overlays(name)
        self._update_readout()
        QTimer.singleShot(0, self._update_findings)  # its statistics cover the whole volume: a turn of their own
        self.resultShown.emit(result)

    def _update_run_label(self) -> None:
        if self.run is None or self.result is None:
            self.run_label.setText("No result")
            return
        done, total = int(self.result.finished.sum()), int(self.result.finished.size)
        self.run_label.setText(f"{describe_run(self.run)}   ·   {done}/{total} slices segmented")

    def _on_job_started(self, job: Job) -> None:
        self._run_started = time.perf_counter()
        if job.result is self.result:
            self._show_progress(True)
            self._count_slices(job)

    def _on_job_status(self, job: Job, status: Status) -> None:
        """Status text; while chips are programmed the progress bar counts chips, then slices."""
        if job.result is not self.result:
            return
        self.statusBar().showMessage(status.text)
        if status.chips_total:
            self.progress.setFormat("chip %v / %m")
            self.progress.setRange(0, status.chips_total)
            self.progress.setValue(status.chips_ready)
        else:
            self._count_slices(job)

    def _count_slices(self, job: Job) -> None:
        """The progress bar counts the job's finished slices."""
        self.progress.setFormat(SLICE_FORMAT)
        self.progress.setRange(0, int(job.result.finished.size))
        self.progress.setValue(int(job.result.finished.sum()))

    def _on_slice_finished(self, job: Job, index: int) -> None:
        if job.result is not self.result:
            return
        self.progress.setValue(int(job.result.finished.sum()))
        self._show_slice(job, index)
        self._update_run_label()
        self._refresh_findings()

    def _on_slice_previewed(self, job: Job, index: int) -> None:
        """The slice on screen from the chips programmed so far; counted done when all have read it."""
        if job.result is self.result:
            self._show_slice(job, index)

    def _show_slice(self, job: Job, index: int) -> None:
        for name in VIEWS:
            if name != job.result.axis or self.crosshair[AXES[name]] == index:
                self._refresh_overlays(name)
        self._update_readout()

    def _on_job_finished(self, job: Job, complete: bool) -> None:
        if not self.runner.busy:
            self._show_progress(False)
        if job.result is not self.result:
            return
        self._update_run_label()
        # a complete label map may have been post-processed as a whole; a stopped run's preview is gone
        for name in VIEWS:
            self._refresh_overlays(name)
        self._update_readout()
        self._update_findings()
        done, total = int(job.result.finished.sum()), int(job.result.finished.size)
        if complete:
            self.statusBar().showMessage(f"Segmented {total} slices in {time.perf_counter() - self._run_started:.1f} s"
                                         f" ({describe_run(job.run)})", 10000)
        elif not self.runner.busy:
            self.statusBar().showMessage(f"Stopped with {done} of {total} slices segmented; Ctrl+R resumes")

    def _on_job_failed(self, job: Job, message: str) -> None:
        self.statusBar().showMessage("Inference failed", 5000)
        QMessageBox.warning(self, "Inference failed", f"{describe_run(job.run)}\n\n{message}")

    def _show_progress(self, visible: bool) -> None:
        self.progress.setVisible(visible)
        self.cancel_button.setVisible(visible)

    # -- navigation ---------------------------------------------------------------------------
    def _set_active_view(self, view: str) -> None:
        self.active_view = view

    def set_large_view(self, view: str) -> None:
        self.grid.set_large(view)
        self.large_actions[view].setChecked(True)
        self.active_view = view

    def step_slice(self, delta: int) -> None:
        self.grid.views[self.active_view].step(delta)

    def jump_to_slice(self, axis: str, index: int) -> None:
        ijk = list(self.crosshair)
        ijk[AXES[axis]] = index
        self.set_cursor(tuple(ijk))  # type: ignore[arg-type]

    def reset_zoom(self) -> None:
        for view in self.grid.views.values():
            view.reset_zoom()

    def set_cursor(self, ijk: tuple[int, int, int]) -> None:
        """Move the crosshair to voxel `ijk`; views whose slice changed are redrawn."""
        if self.volume is None:
            return
        old, self.crosshair = self.crosshair, clamp_voxel(self.volume.shape, ijk)
        for name in VIEWS:
            if old[AXES[name]] != self.crosshair[AXES[name]]:
                self._refresh_view(name)
            else:
                self._refresh_crosshair(name)
        self._update_readout()

    def _on_slice_changed(self, view: str, index: int) -> None:
        ijk = list(self.crosshair)
        ijk[AXES[view]] = index
        self.set_cursor(tuple(ijk))  # type: ignore[arg-type]

    def _on_pointed(self, view: str, row: int, col: int) -> None:
        if self.volume is not None:
            self.set_cursor(voxel_at(self.volume.shape, view, self.crosshair[AXES[view]], row, col))

    # -- window / level -----------------------------------------------------------------------
    def apply_preset(self, name: str) -> None:
        if self.volume is None:
            return
        self.overlay_panel.preset_combo.setCurrentText(name)
        self._set_window(window_for(name, self.volume.data))

    def _on_window_dragged(self, dx: float, dy: float) -> None:
        self._set_window(self.window_level.dragged(dx, dy, self.data_range))

    def _set_window(self, wl: WindowLevel) -> None:
        self.window_level = wl
        for view in self.grid.views.values():
            view.set_levels((wl.low, wl.high))
        self.overlay_panel.window_label.setText(f"W {wl.width:.4g}   L {wl.level:.4g}")

    # -- drawing ------------------------------------------------------------------------------
    def _refresh_all(self) -> None:
        for name in VIEWS:
            self._refresh_view(name)

    def _refresh_view(self, name: str) -> None:
        if self.volume is None:
            return
        index = self.crosshair[AXES[name]]
        view = self.grid.views[name]
        view.set_image(get_slice(self.volume.data, name, index), (self.window_level.low, self.window_level.high))
        self._refresh_overlays(name)

    def _refresh_crosshair(self, name: str) -> None:
        if self.volume is not None:
            self.grid.views[name].set_crosshair(*display_position(self.volume.shape, name, self.crosshair))

    def _refresh_overlays(self, name: str) -> None:
        """Labels, heatmap, reference outline, crosshair and title of one view."""
        if self.volume is None:
            return
        view, panel = self.grid.views[name], self.overlay_panel
        index = self.crosshair[AXES[name]]
        result = self.result
        note = ""
        if result is not None:
            labels = get_slice(result.segmentation, name, index)
            view.set_labels(outline(labels) if panel.outline else labels, panel.label_lut(), panel.segmentation_opacity)
            lut = heatmap_lut(panel.colormap_colors(), panel.threshold_fraction)
            view.set_heatmap(get_slice(result.maps[panel.map_name], name, index), lut, panel.map_levels,
                             panel.heatmap_opacity)
            if name == result.axis and index in result.previews:
                note = f"(preview: {result.previews[index]} of {self.run.mc_samples} samples)"
            elif name == result.axis and not result.finished[index]:
                note = "(not segmented yet)"
        else:
            view.set_labels(None, panel.label_lut(), 0.0)
            view.set_heatmap(None, np.zeros((256, 4), np.uint8), (0, 1), 0.0)
        truth = outline(get_slice(self.truth, name, index)) if self.truth is not None and panel.show_truth else None
        view.set_truth(truth, TRUTH_LUT)
        view.set_slice_number(index, slice_count(self.volume.shape, name), note)
        self._refresh_crosshair(name)

    def _on_overlay_changed(self) -> None:
        panel = self.overlay_panel
        title = f"{MAP_TITLES[panel.map_name]} ({MAP_UNITS[panel.map_name]})"
        self.colour_bar.show_map(title, panel.map_levels, heatmap_lut(panel.colormap_colors(), panel.threshold_fraction))
        self.colour_bar.setVisible(panel.heatmap_opacity > 0)
        for name in VIEWS:
            self._refresh_overlays(name)
        self._refresh_findings()

    def _update_findings(self) -> None:
        if self.result is None or self.spec is None:
            return
        names = self.spec.label_names
        panel = self.overlay_panel
        self.findings.show_result(self.result, names, panel.map_name, MAP_TITLES[panel.map_name], self.truth)

    # -- cursor readout -----------------------------------------------------------------------
    def _on_hovered(self, view: str, row: int, col: int) -> None:
        """Under the mouse when it is over an image, else at the crosshair."""
        if self.volume is None:
            return
        self._hovering = row >= 0
        if not self._hovering:
            self._update_readout()
            return
        ijk = voxel_at(self.volume.shape, view, self.crosshair[AXES[view]], row, col)
        self.readout.setText("mouse      " + self.describe_voxel(ijk))

    def _update_readout(self) -> None:
        if not self._hovering and self.volume is not None:
            self.readout.setText("crosshair  " + self.describe_voxel(self.crosshair))

    def describe_voxel(self, ijk: tuple[int, int, int]) -> str:
        """Voxel index, RAS position in mm, intensity, label and uncertainty at `ijk`."""
        volume = self.volume
        if volume is None or not inside(volume.shape, ijk):
            return ""
        x, y, z = volume.world(ijk)
        text = (f"voxel ({ijk[0]}, {ijk[1]}, {ijk[2]})   RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm"
                f"   intensity {volume.data[ijk]:.5g}")
        result = self.result
        if result is None:
            return text
        index = ijk[AXES[result.axis]]
        if not result.finished[index] and index not in result.previews:
            return text + "   label: not segmented yet"
        panel = self.overlay_panel
        label = panel.label_name(int(result.segmentation[ijk]))
        value = float(result.maps[panel.map_name][ijk])
        samples = result.previews.get(index, 0)
        preview = "" if result.finished[index] else f"   (preview from {samples} sample{'s' if samples > 1 else ''})"
        return text + f"   label {label}   {MAP_TITLES[panel.map_name]} {value:.4f} {MAP_UNITS[panel.map_name]}{preview}"

    # -- export -------------------------------------------------------------------------------
    def export_results(self) -> None:
        """Ask where, then write the segmentation (and the chosen maps) aligned with the scan."""
        result, volume = self.result, self.volume
        if result is None or volume is None or not result.finished.any():
            QMessageBox.information(self, "Export", "There is no segmentation to export yet.")
            return
        if not result.complete:
            done, total = int(result.finished.sum()), int(result.finished.size)
            answer = QMessageBox.question(
                self, "Export a partial result?",
                f"Only {done} of {total} slices are segmented; the others would be exported as background.")
            if answer != QMessageBox.StandardButton.Yes:
                return
        stem = Path(volume.source).name.split(".")[0] or "scan"
        folder = str(self.qsettings.value("export_dir", str(Path(volume.source).parent)))
        path, _ = QFileDialog.getSaveFileName(self, "Export segmentation", str(Path(folder) / f"{stem}_seg.nii.gz"),
                                              "NIfTI (*.nii.gz *.nii)")
        if path:
            self.export_to(path)

    def export_to(self, path: str | Path) -> list[Path]:
        """Write the files; on failure say why. The result stays open either way, nothing is lost."""
        result, volume, run = self.result, self.volume, self.run
        if result is None or volume is None or run is None or self.spec is None:
            return []
        path = Path(path)
        if not path.name.lower().endswith((".nii", ".nii.gz")):
            path = path.with_name(path.name + ".nii.gz")
        map_name = self.overlay_panel.map_name
        try:
            written = [save_nifti(volume, result.segmentation, path, np.uint8)]
            if self.export_uncertainty.isChecked():
                written.append(save_nifti(volume, result.maps[map_name], _sibling(path, map_name), np.float32))
            if self.export_probability.isChecked():
                written.append(save_nifti(volume, probability_map(result), _sibling(path, "probability"), np.float32))
            report = summary(result, self.spec, run)
            report["uncertainty_map"] = f"{MAP_TITLES[map_name]} ({MAP_UNITS[map_name]})"
            json_path = _sibling(path, "summary", ".json")
            write_json(report, json_path)
            written.append(json_path)
        except (ScanError, OSError) as exc:
            QMessageBox.critical(self, "Export failed",
                                 f"{exc}\n\nThe results are still open; nothing was lost. Choose another place.")
            return []
        self.qsettings.setValue("export_dir", str(path.parent))
        self.statusBar().showMessage(f"Exported {', '.join(p.name for p in written)} to {path.parent}", 10000)
        self.exported.emit(written)
        return written

    # -- closing ------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        """Stop inference; the worker ends on its own within one MC sample."""
        self.runner.cancel()
        super().closeEvent(event)

