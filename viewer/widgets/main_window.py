"""The main window: wiring only. It lays out the widgets, turns the user's intent into calls on the
`ReadingSession`, redraws what the session's events say has changed, and reports the inference
runner's progress. Slow work (reading a file and the model gate, inference, the case verdict and the
findings) always runs in a worker thread.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QMainWindow, QWidget
from superqt.utils import qthrottled

from engine.images2d import is_planar, pixel_size_known
from engine.model_store import ModelSpec, default_model, list_models
from engine.pipeline import VolumeResult
from engine.preprocessing import slice_count
from engine.volume import Volume
from viewer.session.display import VIEWS, WindowLevel, window_step
from viewer.session.findings_table import Findings
from viewer.session.readout import describe_run, map_label
from viewer.session.runs import RunOutcome
from viewer.session.session import ReadingSession
from viewer.widgets.background import ThreadBackground
from viewer.widgets.colour_bar import ColourBar
from viewer.widgets.edit_tools import EditingControls, ask_keep_edits
from viewer.widgets.export_dialog import Exporter
from viewer.widgets.findings_panel import FindingsPanel
from viewer.widgets.inference_worker import InferenceRunner
from viewer.widgets.layout import add_docks, central_area, readout_line, run_line
from viewer.widgets.menus import build_menus
from viewer.widgets.model_panel import ModelPanel
from viewer.widgets.opening import Opener
from viewer.widgets.overlay_panel import OverlayPanel
from viewer.widgets.run_status import RunStatus
from viewer.widgets.saved_layout import restore_layout, save_layout
from viewer.widgets.trust_view import TrustView
from viewer.widgets.view_grid import ViewGrid


class MainWindow(QMainWindow):
    """`aimc-viewer`'s window. Signals let tests and scripts wait for what happens in the background.

    `specs` defaults to the installed models; `runner` lets several windows share programmed chips.
    """

    scanLoaded = Signal(object)  # Volume
    openFailed = Signal(str)  # message shown to the user
    resultShown = Signal(object)  # VolumeResult now on screen (None: the model was refused)
    trustShown = Signal()  # the banners show the session's gate and verdict as they now stand
    exported = Signal(list)  # paths written

    def __init__(
        self,
        specs: list[ModelSpec] | None = None,
        settings: QSettings | None = None,
        runner: InferenceRunner | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("AIMC viewer")
        self.setAcceptDrops(True)
        self.runner = runner if runner is not None else InferenceRunner()
        self.runner.setParent(self)
        self.background = ThreadBackground(self)
        installed = specs is None
        specs = list_models() if installed else specs
        self.session = ReadingSession(
            settings if settings is not None else QSettings("aimc", "aimc-viewer"),
            self.runner,
            specs,
            self.background,
        )
        self.active_view = "axial"
        self.grid, self.colour_bar, self.run_label, self.readout = (
            ViewGrid(),
            ColourBar(),
            run_line(),
            readout_line(),
        )
        self.model_panel, self.overlay_panel, self.findings = (
            ModelPanel(specs or []),
            OverlayPanel(),
            FindingsPanel(),
        )
        self.trust = TrustView(self, self.session)
        banners = (self.trust.gate_banner, self.trust.verdict_banner)
        area, self.view_area = central_area(self.run_label, banners, self.grid, self.colour_bar, self.readout)
        self.setCentralWidget(area)
        self.docks = add_docks(self, self.model_panel, self.overlay_panel, self.findings)
        self.progress = RunStatus(self, self.runner, self.session)
        self.files = Opener(self, self.session)
        self.exporter = Exporter(self, self.session)
        if installed and specs:
            index = self.model_panel.model_combo.findData(default_model().name)
            self.model_panel.model_combo.setCurrentIndex(max(index, 0))
        self.menus = build_menus(self)
        self._refresh_findings = qthrottled(self._update_findings, timeout=300, parent=self)
        self._connect()
        self.editing = EditingControls(self, self.session)
        self.session.choose_model(self.model_panel.spec())
        self.layout_restored = restore_layout(self)  # the last session's size, docks and large view
        self.statusBar().showMessage(
            "Open a scan: File > Open, drag and drop, or a recent file."
            if specs
            else "No model installed in resources/models: viewing only."
        )

    def _connect(self) -> None:
        session, events = self.session, self.session.events
        for view in self.grid.views.values():
            view.sliceChanged.connect(session.move_slice)
            view.pointed.connect(session.point)
            view.hovered.connect(self._on_hovered)
            view.windowDragged.connect(session.drag_window)
            view.activated.connect(self._set_active_view)
            view.enlargeRequested.connect(self.set_large_view)
        self.model_panel.settingsChanged.connect(self._on_model_settings_changed)
        self.overlay_panel.changed.connect(self._on_overlay_changed)
        self.overlay_panel.presetChosen.connect(session.apply_preset)
        self.overlay_panel.windowTyped.connect(session.type_window)
        self.findings.sliceRequested.connect(session.move_slice)
        self.findings.lesionRequested.connect(session.centre_on)
        self.menus.recent.aboutToShow.connect(lambda: self.files.fill_recent_menu(self.menus.recent))
        self.runner.sliceFinished.connect(lambda job, index: session.slice_done(job.result, index, True))
        self.runner.slicePreviewed.connect(lambda job, index: session.slice_done(job.result, index, False))
        self.runner.finished.connect(lambda job, complete: session.run_ended(job.result))
        events.model_changed.connect(self._on_model_changed)
        events.scan_opened.connect(self._on_scan_opened)
        events.cursor_moved.connect(self._on_cursor_moved)
        events.centred.connect(self._on_centred)
        events.findings_ready.connect(self.findings.show_findings)
        events.findings_ready.connect(self._on_findings)
        events.trust_changed.connect(self.trustShown.emit)
        events.window_changed.connect(self._on_window_changed)
        events.result_shown.connect(self._on_result_shown)
        events.slice_updated.connect(self._on_slice_updated)
        events.run_ended.connect(lambda result: self._redraw_result())
        events.truth_loaded.connect(self._on_truth_loaded)

    # -- opening ------------------------------------------------------------------------------
    def _on_scan_opened(self, volume: Volume, path: str) -> None:
        self.grid.set_planar(is_planar(volume))
        if is_planar(volume):
            self.set_large_view("axial")
        for name, view in self.grid.views.items():
            view.set_geometry(volume.shape, volume.spacing, slice_count(volume.shape, name))
        self.overlay_panel.set_truth_loaded(None)
        self.findings.clear()
        self._show_colour_bar()
        for name in VIEWS:
            self._refresh_view(name)
        self._update_readout()
        name = Path(path).name
        spacing = " × ".join(f"{s:.2f}" for s in volume.spacing)
        size = (
            f"{' × '.join(map(str, volume.shape))} voxels, {spacing} mm"
            if not is_planar(volume)
            else f"2D image {volume.shape[0]} × {volume.shape[1]} pixels"
            + ("" if pixel_size_known(volume) else ", pixel size unknown (sizes in px)")
        )
        self.statusBar().showMessage(f"Opened {name}: {size}", 8000)
        self.scanLoaded.emit(volume)
        QTimer.singleShot(0, self.request_run)  # next event-loop turn: no single long UI step

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        self.files.drop(event)

    def _on_findings(self, found: Findings) -> None:
        """Nuclei, once counted, are drawn one by one in the image's view."""
        if found.nuclei is not None:
            self._refresh_overlays("axial")

    def _on_truth_loaded(self, name: str) -> None:
        self.overlay_panel.set_truth_loaded(name)
        self._update_findings()

    # -- inference ----------------------------------------------------------------------------
    def _on_model_changed(self, spec: ModelSpec) -> None:
        """The session chose `spec` (the reader, or the gate for a new scan): its labels and name show."""
        self.model_panel.select(spec.name)
        self.overlay_panel.set_labels(spec.labels)

    def _on_model_settings_changed(self) -> None:
        self.session.choose_model(self.model_panel.spec())
        self.request_run()

    def request_run(self, deliberate: bool = False) -> None:
        """Show the result of the current settings (cached or partial) and segment what is missing;
        `deliberate` (Ctrl+R, Run anyway) runs a model even where it does not fit the scan."""
        panel = self.model_panel
        outcome = self.session.request_run(panel.spec(), panel.run_settings(), deliberate)
        if outcome is RunOutcome.ASK_EDITS:  # never drop the reader's edits unasked
            outcome = self.session.request_run(
                panel.spec(), panel.run_settings(), deliberate, ask_keep_edits(self)
            )
        if outcome is RunOutcome.CACHED and self.session.run is not None:
            self.statusBar().showMessage(f"Cached result: {describe_run(self.session.run)}", 5000)
        elif outcome is RunOutcome.BLOCKED:
            self.statusBar().showMessage("Nothing was run: the model does not fit this scan", 8000)

    def _on_result_shown(self, result: VolumeResult | None) -> None:
        if result is None:
            self.findings.clear()
        self._redraw_result()
        self.resultShown.emit(result)

    def _on_slice_updated(self, views: list[str], finished: bool) -> None:
        for name in views:
            self._refresh_overlays(name)
        self._update_readout()
        self.run_label.setText(self.session.run_line())  # a digital preview, then the chips' slices
        if finished:
            self.trust.update_banners()
            self._refresh_findings()

    # -- navigation ---------------------------------------------------------------------------
    def _set_active_view(self, view: str) -> None:
        self.active_view = view

    def set_large_view(self, view: str) -> None:
        self.grid.set_large(view)
        self.menus.large_views[view].setChecked(True)
        self.active_view = view

    def step_slice(self, delta: int) -> None:
        self.grid.views[self.active_view].step(delta)

    def _on_centred(self) -> None:
        for name, view in self.grid.views.items():
            view.centre_on(*self.session.crosshair_position(name))

    def _on_cursor_moved(self, moved: list[str]) -> None:
        """Views whose slice changed are redrawn; the others only move their crosshair."""
        for name in VIEWS:
            if name in moved:
                self._refresh_view(name)
            else:
                self.grid.views[name].set_crosshair(*self.session.crosshair_position(name))
        self._update_readout()

    def _on_window_changed(self, wl: WindowLevel) -> None:
        self.overlay_panel.show_window(wl, self.session.preset, window_step(self.session.data_range))
        for view in self.grid.views.values():
            view.set_levels((wl.low, wl.high))

    # -- drawing ------------------------------------------------------------------------------
    def _refresh_view(self, name: str) -> None:
        wl = self.session.window_level
        self.grid.views[name].set_image(self.session.image(name), (wl.low, wl.high))
        self._refresh_overlays(name)

    def _refresh_overlays(self, name: str) -> None:
        """Labels, heatmap, reference outline, crosshair and title of one view."""
        if self.session.volume is None:
            return
        panel = self.overlay_panel
        layers = self.session.slice_layers(name, panel.map_name, panel.outline, panel.show_truth)
        self.grid.views[name].show_layers(
            layers, panel.overlay_style(), self.session.crosshair_position(name)
        )

    def _show_colour_bar(self) -> None:
        """The heatmap's scale where a heatmap is drawn: it is shown, and a result is on screen."""
        self.colour_bar.setVisible(self.overlay_panel.heatmap_opacity > 0 and self.session.result is not None)

    def _redraw_result(self) -> None:
        """All that shows the result: the run line, every view's overlays, the readout, the findings."""
        self._show_colour_bar()
        self.trust.update_banners()
        for name in VIEWS:
            self._refresh_overlays(name)
        self._update_readout()
        self._update_findings()

    def _on_overlay_changed(self) -> None:
        panel = self.overlay_panel
        self.colour_bar.show_map(map_label(panel.map_name), panel.map_levels, panel.heatmap_lut())
        self._show_colour_bar()
        for name in VIEWS:
            self._refresh_overlays(name)
        self._update_readout()  # the chosen map's name and value
        self._refresh_findings()

    def _update_findings(self) -> None:
        """Recomputed in the background; `findings_ready` shows them."""
        self.session.refresh_findings(self.overlay_panel.map_name)

    # -- cursor readout -----------------------------------------------------------------------
    def _on_hovered(self, view: str, row: int, col: int) -> None:
        """The mouse moved over a view (row -1: off the image, or it left the view)."""
        self.session.pointer.hover(view, row, col)
        self._update_readout()

    def _update_readout(self) -> None:
        """Recomputed from the session every time: scan, slice, result and map as they are now."""
        self.readout.setText(self.session.readout(self.overlay_panel.map_name) or " ")

    # -- closing ------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        """Unless the reader stays for their unsaved edits: keep the layout for the next start; stop
        inference (the worker ends on its own within one MC sample) and the analysis' answers."""
        if not self.editing.may_leave("close the viewer"):
            event.ignore()
            return
        save_layout(self)
        self.runner.cancel()
        self.background.stop()
        super().closeEvent(event)
