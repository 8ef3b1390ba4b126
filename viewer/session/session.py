"""`ReadingSession`: the state of one reading, free of Qt, as 3D Slicer's logic is free of its widgets.

On the scan as it is looked at (`ScanView`: crosshair, window/level) it holds the model, the result on
screen and the results cached per settings, the reader's edits and review, and the reference
segmentation. It decides which model a scan gets
(the compatibility gate: a model that does not fit runs only when the reader asks), what a run has to
do (`request_run`, the slow part handed to a `Runner`: the Qt worker in the app, a fake in tests), and
how far to trust a result (the case verdict and the findings, computed in a `Background`).
Widgets change it through its methods and redraw when its `events` say so; they keep no reading
state of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.export_formats import NIFTI
from engine.instances import Instances, detects_instances
from engine.model_store import ModelSpec
from engine.pipeline import VolumeResult
from engine.preprocessing import AXES, get_slice, slice_count
from engine.run_settings import RunSettings
from engine.volume import Volume
from viewer.session.background import Background, Immediate, Latest
from viewer.session.display import VIEWS, instance_layer, outline
from viewer.session.edits import Editor
from viewer.session.exporting import refusal, would_replace, write_export
from viewer.session.findings_table import Findings, findings
from viewer.session.gate import Gate, check_scan
from viewer.session.notices import Notice, fit_line, gate_notice, verdict_notice
from viewer.session.readout import describe_voxel, readout_line, run_line, slice_note
from viewer.session.recent_files import RecentFiles, SettingsStore
from viewer.session.result_cache import ResultCache, missing_slices, result_key
from viewer.session.review import Review, items_for
from viewer.session.runs import Runner, RunOutcome, read_scan
from viewer.session.scan_view import ScanView
from viewer.session.verdicts import CaseVerdict, Verdicts, VerdictState, lesion_review


@dataclass(frozen=True)
class SliceLayers:
    """What one view draws over its slice of the scan (None: that layer is not shown)."""

    index: int
    count: int
    labels: np.ndarray | None
    heatmap: np.ndarray | None
    truth: np.ndarray | None
    note: str
    edits: np.ndarray | None = None  # outline of where the reader's edits changed the AI's labels


class ReadingSession(ScanView):
    """One reader's scan, crosshair, window/level, results, reference and exports."""

    def __init__(
        self,
        store: SettingsStore,
        runner: Runner,
        specs: list[ModelSpec] | None = None,
        background: Background | None = None,
    ) -> None:
        super().__init__(store)
        self.runner = runner
        self.specs = list(specs or [])  # the installed models the gate chooses from
        self.background = background if background is not None else Immediate()
        self.recent = RecentFiles(store)
        self.cache = ResultCache()
        self.spec: ModelSpec | None = None
        self.result: VolumeResult | None = None
        self.run: RunSettings | None = None
        self.truth: np.ndarray | None = None
        self.gate: Gate | None = None
        self.accepted: set[str] = set()  # models the reader ran on this scan although they do not fit it
        self.blocked: str | None = None  # the model refused on this scan (nothing ran), if any
        self.verdicts = Verdicts(self.background, self._verdict_changed)
        self._findings = Latest(self.background)
        self._nuclei: tuple[VolumeResult, Instances] | None = None  # the shown result's, once counted
        self.editor = Editor(lambda: self.result.segmentation if self.result is not None else None)
        self.review = Review(self.editor, self.centre_on)
        self.editor.changed.connect(lambda final: self.events.slice_updated.emit(list(VIEWS), final))

    # -- scan ---------------------------------------------------------------------------------
    def check(self, volume: Volume) -> Gate:
        """The gate's answer for `volume` with the model now selected (slow: may run off the UI thread)."""
        return check_scan(volume, self.specs, self.spec.name if self.spec is not None else None)

    def read(self, path: str, series: str | None = None) -> tuple[Volume, Gate]:
        """`read_scan` and the gate, both slow: for a worker thread; `open` takes the answer."""
        volume = read_scan(path, series)
        return volume, self.check(volume)

    def open(self, volume: Volume, path: str | Path, gate: Gate | None = None) -> None:
        """Show `volume` (from `read`); the previous scan's results, reference and run are dropped, and
        the model the gate chose for it (None: none fits) is selected."""
        self.runner.cancel()
        self.cache.clear()
        self.verdicts.clear()
        self.result = self.run = None
        self.truth = None
        self.gate = gate if gate is not None else self.check(volume)
        self.accepted, self.blocked = set(), None
        chosen = next((s for s in self.specs if s.name == self.gate.chosen), None)
        self.choose_model(chosen)
        self.show_scan(volume)
        self.editor.reset(volume.shape, volume.spacing)
        self.review.clear()
        self.recent.add(path)
        self.events.scan_opened.emit(volume, str(path))
        self.events.trust_changed.emit()

    # -- what the views draw ------------------------------------------------------------------
    def slice_layers(self, view: str, map_name: str, outlined: bool, show_truth: bool) -> SliceLayers:
        """Labels (filled or `outlined`), the uncertainty map, the reference outline and the title note."""
        assert self.volume is not None
        index = self.crosshair[AXES[view]]
        result, run = self.result, self.run
        labels = heatmap = edits = None
        note = ""
        if result is not None and run is not None:
            labels, edits = self.editor.edited_slice(get_slice(result.segmentation, view, index), view, index)
            labels = outline(labels) if outlined else labels
            if self._nuclei is not None and self._nuclei[0] is result and view == "axial":
                labels = instance_layer(self._nuclei[1].labels, outlined)
            heatmap = get_slice(result.maps[map_name], view, index)
            note = slice_note(result, run, view, index)
        truth = outline(get_slice(self.truth, view, index)) if self.truth is not None and show_truth else None
        return SliceLayers(index, slice_count(self.volume.shape, view), labels, heatmap, truth, note, edits)

    def describe_voxel(self, ijk: tuple[int, int, int], map_name: str) -> str:
        return describe_voxel(self.volume, self.result, ijk, map_name, self.label_names())

    def readout(self, map_name: str) -> str:
        """The readout line as things stand now: the voxel under the mouse, else at the crosshair."""
        return readout_line(
            self.volume, self.result, self.crosshair, self.pointer, map_name, self.label_names()
        )

    def label_names(self) -> dict[int, str]:
        return self.spec.label_names if self.spec is not None else {}

    def refresh_findings(self, map_name: str) -> None:
        """Recompute the findings of the result on screen in the background; `findings_ready` brings them.

        Asked again while one is computed, only the newest request runs next.
        """
        result, spec, run, truth = self.result, self.spec, self.run, self.truth
        if result is None or spec is None or run is None:
            return
        review, final = lesion_review(spec, run.mode, map_name), self.settled(result)
        count = detects_instances(spec)
        edited = self.editor.applied(result)  # the findings are the reader's: the AI's labels with the edits
        self._findings.submit(
            lambda: findings(edited, spec.label_names, map_name, truth, review, final, count),
            lambda found: self._found(result, found),
            lambda message: None,  # a partial result read while it was written: the next refresh redoes it
        )

    def _found(self, result: VolumeResult, found: Findings) -> None:
        """Findings of `result` are ready: shown if it is still on screen; its nuclei are drawn."""
        if result is not self.result:
            return
        if found.nuclei is not None:
            self._nuclei = (result, found.nuclei)
        self.events.findings_ready.emit(found)

    def settled(self, result: VolumeResult) -> bool:
        """Every slice is in and its run has ended, the model's post-processing applied: its lesions and
        verdict may be read (between the last slice and the end of the run, the labels are still raw)."""
        return result.complete and not self.runner.is_computing(result)

    # -- trust --------------------------------------------------------------------------------
    @property
    def outside_domain(self) -> bool:
        """The result on screen comes from a model that does not fit the scan (the reader asked for it)."""
        return self.run is not None and self.gate is not None and not self.gate.allows(self.run.model)

    def case_verdict(self) -> CaseVerdict:
        """The verdict of the result on screen: none for a partial result."""
        result, spec, run = self.result, self.spec, self.run
        if result is None or spec is None or run is None:
            return CaseVerdict(VerdictState.NO_RESULT)
        if not result.complete:
            return CaseVerdict(VerdictState.PARTIAL)
        return self.verdicts.get(result) or CaseVerdict(VerdictState.COMPUTING)

    def verdict_notice(self) -> Notice:
        done, total = self.segmented()
        return verdict_notice(self.case_verdict(), f"{done} of {total}")

    def gate_notice(self) -> Notice:
        model = self.blocked or (self.run.model if self.run is not None else None)
        if model is None and self.spec is not None:
            model = self.spec.name
        return gate_notice(self.gate, model, self.blocked is not None, self.outside_domain)

    def run_line(self) -> str:
        if self.blocked is not None:
            return f"{self.blocked} was not run: it does not fit this scan"
        done, total = self.segmented()
        digital = self.result is not None and 0 in self.result.previews.values()
        return run_line(self.run, done, total, self.outside_domain, digital)

    def fit_line(self, model: str) -> tuple[bool | None, str]:
        """Whether `model` fits the open scan, and why, for the model panel."""
        return fit_line(self.gate, model)

    def _verdict_changed(self, result: VolumeResult) -> None:
        if result is self.result:
            self.events.trust_changed.emit()

    def _assess(self) -> None:
        result, spec, run = self.result, self.spec, self.run
        if result is not None and spec is not None and run is not None and self.settled(result):
            self.verdicts.assess(result, spec, run)

    # -- model and runs -----------------------------------------------------------------------
    def choose_model(self, spec: ModelSpec | None) -> None:
        if spec is not None and spec is not self.spec:
            self.spec = spec
            self.events.model_changed.emit(spec)

    def request_run(
        self,
        spec: ModelSpec | None,
        run: RunSettings | None,
        deliberate: bool = False,
        keep_edits: bool | None = None,
    ) -> RunOutcome:
        """Show the result of `run` (cached, partial or new) and have the runner segment what is missing,
        the slice on screen first.

        A model that does not fit the scan is refused (nothing shown, nothing run) unless the reader
        asks `deliberate`ly; from then on it runs on this scan, its results marked outside its domain.
        Edits are never dropped unasked: another result than the edited one needs `keep_edits` (True: on
        top of the new labels; False: discarded), else nothing happens and the answer is ASK_EDITS.
        """
        if self.volume is None or spec is None or run is None:
            return RunOutcome.NOTHING
        if self.run is None or result_key(run) != result_key(self.run):
            if self.editor.has_edits() and keep_edits is None:
                return RunOutcome.ASK_EDITS
            if keep_edits is False:
                self.editor.discard()
            self.review.clear()
        self.choose_model(spec)
        if deliberate:
            self.accepted.add(spec.name)
        if self.gate is not None and not self.gate.allows(spec.name) and spec.name not in self.accepted:
            self.runner.cancel()
            self.result = self.run = None
            self.blocked = spec.name
            self.events.result_shown.emit(None)
            self.events.trust_changed.emit()
            return RunOutcome.BLOCKED
        self.blocked = None
        volume = self.volume
        result = self.cache.get_or_create(run, lambda: VolumeResult.for_model(volume, spec))
        self.result, self.run = result, run
        self.events.result_shown.emit(result)
        self._assess()
        self.events.trust_changed.emit()
        if self.runner.is_computing(result):
            return RunOutcome.RUNNING
        if result.complete:
            self.runner.cancel()
            return RunOutcome.CACHED
        self.runner.start(
            spec, run, volume, result, missing_slices(result, self.crosshair[AXES[result.axis]])
        )
        return RunOutcome.STARTED

    def is_shown(self, result: VolumeResult) -> bool:
        return result is self.result

    def segmented(self) -> tuple[int, int]:
        """(finished, total) slices of the result on screen; (0, 0) without one."""
        if self.result is None:
            return 0, 0
        return int(self.result.finished.sum()), int(self.result.finished.size)

    def slice_done(self, result: VolumeResult, index: int, finished: bool) -> None:
        """The runner put slice `index` into `result` (`finished`, or a preview from the chips so far)."""
        if result is self.result:
            views = [v for v in VIEWS if v != result.axis or self.crosshair[AXES[v]] == index]
            self.events.slice_updated.emit(views, finished)

    def run_ended(self, result: VolumeResult) -> None:
        """A run into `result` stopped: its labels may have been post-processed, its previews dropped."""
        if result is self.result:
            self._assess()
            self.events.run_ended.emit(result)
            self.events.trust_changed.emit()

    # -- editing and review -------------------------------------------------------------------
    def edit(self, view: str, phase: str, row: int, col: int) -> str:
        """The left button with an editing tool at (row, col) of `view` ('press', 'drag' or 'release');
        returns why nothing changed, or ''."""
        ijk = self.voxel_shown(view, row, col) if self.volume is not None else None
        return self.editor.handle(phase, ijk, AXES[view]) if ijk is not None else ""

    def start_review(self, map_name: str) -> None:
        """Review the result on screen, most uncertain first, from its first item not reviewed yet."""
        result, spec, run = self.result, self.spec, self.run
        if result is not None and spec is not None and run is not None:
            above = lesion_review(spec, run.mode, map_name)[0]
            self.review.start(items_for(result, map_name, self.settled(result), above), map_name)

    # -- reference segmentation ---------------------------------------------------------------
    def set_truth(self, truth: np.ndarray, name: str, scan: Volume) -> None:
        """The reference read for `scan` by `load_ground_truth`; dropped if another scan is open by now."""
        if scan is self.volume:
            self.truth = truth
            self.events.truth_loaded.emit(name)

    # -- export -------------------------------------------------------------------------------
    def export_folder(self) -> str:
        """Where the export dialog starts: the last export folder, else the scan's folder."""
        default = str(Path(self.volume.source).parent) if self.volume is not None else str(Path.home())
        return str(self.store.value("export_dir", default))

    def export_would_replace(self, folder: str | Path, formats: Sequence[str] = (NIFTI,)) -> list[str]:
        return would_replace(folder, formats)

    def export_refusal(self, formats: Sequence[str]) -> str | None:
        """Why the scan on screen cannot be exported in `formats`, before a folder is asked for."""
        return refusal(self.volume, formats) if self.volume is not None else None

    def export(
        self,
        folder: str | Path,
        map_name: str,
        uncertainty: bool,
        probability: bool,
        formats: Sequence[str] = (NIFTI,),
        edited: bool = True,
    ) -> list[Path]:
        """The result on screen in `folder` as `engine.export` writes it (`exporting.write_export`) in
        `formats`: the reader's `edited` segmentation, or the AI's, with the case verdict, the gate's fit
        and the lesions in the summary. Raises `ScanError` if the disk refuses."""
        paths = write_export(self, Path(folder), map_name, uncertainty, probability, edited, formats)
        if paths:
            self.store.setValue("export_dir", str(folder))
            if edited:
                self.editor.saved()
        return paths
