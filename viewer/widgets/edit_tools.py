"""The reader's editing tools: the Edit panel (tools, active label, brush size in mm, 3D sphere, undo and
redo), the Edit menu's keys, the brush in the slice views, and the question asked before another result
replaces an edited one. The edits themselves live in the session's `Editor`; this only forwards intent.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDockWidget,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from engine.findings import Lesion
from engine.model_store import Label, ModelSpec
from viewer.session.edits import BRUSHES, Tool
from viewer.session.findings_table import Findings
from viewer.session.session import ReadingSession
from viewer.widgets.export_dialog import ask_export_folder
from viewer.widgets.layout import add_control_tab
from viewer.widgets.review_panel import ReviewPanel

if TYPE_CHECKING:
    from viewer.widgets.main_window import MainWindow

TOOLS: dict[Tool, tuple[str, str]] = {
    Tool.NAVIGATE: ("Navigate", "Left click and drag move the crosshair (no editing)"),
    Tool.PAINT: ("Paint", "Drag to paint the active label with the brush"),
    Tool.ERASE: ("Erase", "Drag to erase the active label with the brush"),
    Tool.FILL: ("Fill", "Click inside an outlined region of the slice to fill it with the active label"),
    Tool.ERASE_REGION: ("Erase region", "Click a region of the active label to erase it in this slice"),
    Tool.REMOVE_COMPONENT: ("Remove", "Click a segmented region to remove it in 3D (all its slices)"),
    Tool.KEEP_COMPONENT: ("Keep only", "Click a segmented region to keep it and remove the others"),
}
BRUSH_MM = (0.5, 50.0)


def ask_keep_edits(parent: QWidget) -> bool:
    """Another result is about to replace the one the reader edited: keep the edits on top of it (the
    default, and what Esc chooses: nothing is lost unasked) or discard them (undoable)."""
    box = QMessageBox(parent)
    box.setWindowTitle("Keep your edits?")
    box.setText(
        "You have edited this segmentation. Keep your edits on top of the new result, or discard them?"
    )
    box.setInformativeText("Discarding can be undone with Ctrl+Z.")
    keep = box.addButton("Keep my edits", QMessageBox.ButtonRole.AcceptRole)
    box.addButton("Discard my edits", QMessageBox.ButtonRole.DestructiveRole)
    box.setDefaultButton(keep)
    box.setEscapeButton(keep)
    box.exec()
    return box.clickedButton() is keep


EXPORT, DISCARD, CANCEL = "export", "discard", "cancel"


def ask_unsaved_edits(parent: QWidget, leaving: str) -> str:
    """The reader is `leaving` ("open another scan", "close the viewer") with edits no export holds:
    export them first, discard them, or cancel and stay (the default, and what Esc chooses)."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Unsaved edits")
    box.setText(f"You have edited this segmentation and not exported it. {leaving.capitalize()} anyway?")
    box.setInformativeText("Discarded edits cannot be recovered.")
    export = box.addButton("Export the edited segmentation…", QMessageBox.ButtonRole.AcceptRole)
    discard = box.addButton("Discard my edits", QMessageBox.ButtonRole.DestructiveRole)
    cancel = box.addButton(f"Cancel: do not {leaving}", QMessageBox.ButtonRole.RejectRole)
    box.setDefaultButton(cancel)
    box.setEscapeButton(cancel)
    box.exec()
    return {export: EXPORT, discard: DISCARD}.get(box.clickedButton(), CANCEL)


class EditPanel(QGroupBox):
    """Tool buttons, the active label, the brush and its 3D mode, undo/redo and the edit counts.

    `changed` when the tool or brush changes (the views update their mouse and ring).
    """

    changed = Signal()

    def __init__(self, session: ReadingSession, parent: QWidget | None = None) -> None:
        super().__init__("Edit", parent)
        self.session = session
        editor = session.editor
        self.tools = QButtonGroup(self)
        grid = QGridLayout()
        for index, (tool, (text, tip)) in enumerate(TOOLS.items()):
            button = QToolButton()
            button.setText(text)
            button.setToolTip(tip)
            button.setCheckable(True)
            button.setChecked(tool == editor.tool)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            button.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            self.tools.addButton(button, index)
            grid.addWidget(button, index // 3, index % 3)
        self.label_combo = QComboBox()
        self.label_combo.setToolTip("The label the tools paint, fill and erase")
        self.brush = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.brush.setRange(*BRUSH_MM)
        self.brush.setDecimals(1)
        self.brush.setValue(editor.brush_mm)
        self.brush.setToolTip("Brush diameter in millimetres (the ring around the mouse)")
        self.sphere = QCheckBox("3D sphere")
        self.sphere.setToolTip("The brush is a ball: it also paints the slices above and below")
        self.undo_button, self.redo_button = QPushButton("Undo"), QPushButton("Redo")
        self.undo_button.setToolTip("Take back the last stroke (Ctrl+Z)")
        self.redo_button.setToolTip("Redo it (Ctrl+Shift+Z)")
        buttons = QHBoxLayout()
        buttons.addWidget(self.undo_button)
        buttons.addWidget(self.redo_button)
        self.counts = QLabel("No edits")
        self.counts.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow(grid)
        form.addRow("Label", self.label_combo)
        form.addRow("Brush mm", self.brush)
        form.addRow(self.sphere)
        form.addRow(buttons)
        form.addRow(self.counts)

        self.tools.idClicked.connect(self._on_tool)
        self.label_combo.currentIndexChanged.connect(self._on_label)
        self.brush.valueChanged.connect(self._on_brush)
        self.sphere.toggled.connect(self._on_sphere)
        self.undo_button.clicked.connect(editor.undo)
        self.redo_button.clicked.connect(editor.redo)
        self.refresh()

    def set_labels(self, labels: list[Label]) -> None:
        """The model's foreground labels to choose from."""
        self.label_combo.blockSignals(True)
        self.label_combo.clear()
        for label in labels:
            if label.value:
                self.label_combo.addItem(label.name, label.value)
        self.label_combo.blockSignals(False)
        self._on_label()

    def brush_mm(self) -> float | None:
        """The brush ring's diameter, or None when the tool is no brush."""
        editor = self.session.editor
        return editor.brush_mm if editor.tool in BRUSHES else None

    def set_tool(self, tool: Tool) -> None:
        button = self.tools.button(list(TOOLS).index(tool))
        button.setChecked(True)
        self._on_tool(list(TOOLS).index(tool))

    def _on_tool(self, index: int) -> None:
        self.session.editor.tool = list(TOOLS)[index]
        self.changed.emit()

    def _on_label(self, *_: object) -> None:
        value = self.label_combo.currentData()
        if value is not None:
            self.session.editor.label = int(value)

    def _on_brush(self, value: float) -> None:
        self.session.editor.brush_mm = float(value)
        self.changed.emit()

    def _on_sphere(self, on: bool) -> None:
        self.session.editor.sphere = on

    def refresh(self) -> None:
        """Undo/redo availability and the voxels the reader added and removed per label."""
        editor, spec = self.session.editor, self.session.spec
        self.undo_button.setEnabled(editor.can_undo())
        self.redo_button.setEnabled(editor.can_redo())
        if spec is None or not editor.has_edits():
            self.counts.setText("No edits: the segmentation is the AI's.")
            return
        names = spec.label_names
        parts = [
            f"{names.get(c, c)}: +{added} / −{removed} voxels"
            for c, (added, removed) in editor.counts(spec.num_classes).items()
            if added or removed
        ]
        changed = "; ".join(parts) or "none that change a label"
        self.counts.setText(f"Your edits (outlined in lavender): {changed}")


class EditingControls:
    """Wires the Edit and Review panels into `window`: a dock beside the model controls, the Edit menu,
    the views' mouse in edit mode, the review marks in the findings."""

    def __init__(self, window: MainWindow, session: ReadingSession) -> None:
        self.window, self.session = window, session
        self.panel = EditPanel(session)
        self.review = ReviewPanel(session, lambda: window.overlay_panel.map_name)
        self._lesions: list[Lesion] = []
        self.dock = self._dock()
        self.menu = self._menu()
        self.undo = self._action("&Undo edit", "Ctrl+Z", session.editor.undo)
        self.redo = self._action("&Redo edit", "Ctrl+Shift+Z", session.editor.redo)
        self.export_ai = self._export_ai_action()
        self._connect()

    def _dock(self) -> QDockWidget:
        """'Edit and review', a third tab beside Model and Display (a small screen has no room for more
        docks side by side)."""
        content = QWidget()
        column = QVBoxLayout(content)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.review)
        column.addWidget(self.panel)
        return add_control_tab(self.window, self.window.docks, "Edit and review", "editing", content)

    def _menu(self) -> QMenu:
        """The Edit menu, after File as usual."""
        bar = self.window.menuBar()
        menu = QMenu("&Edit", bar)
        view = next((a for a in bar.actions() if a.text() == "&View"), None)
        if view is not None:
            bar.insertMenu(view, menu)
        else:
            bar.addMenu(menu)
        return menu

    def _action(self, text: str, key: str, slot: Callable[[], object]) -> QAction:
        """An Edit menu entry whose key works wherever the focus is."""
        action = QAction(text, self.window)
        action.setShortcut(QKeySequence(key))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(lambda *_: slot())
        self.window.addAction(action)
        self.menu.addAction(action)
        return action

    def _export_ai_action(self) -> QAction:
        """File > Export the AI's result (unedited), beside Export results."""
        action = QAction("Export the AI's result (&unedited)…", self.window)
        action.triggered.connect(lambda *_: self.export_ai_result())
        file = next((a.menu() for a in self.window.menuBar().actions() if a.text() == "&File"), None)
        export = next((a for a in file.actions() if a.text().startswith("&Export")), None) if file else None
        if file is not None:
            following = file.actions()[file.actions().index(export) + 1] if export is not None else None
            file.insertAction(following, action)
        return action

    def may_leave(self, leaving: str) -> bool:
        """Whether the scan may be left (`leaving` says how): yes without unsaved edits; else the reader
        chooses to export them first (yes once written), discard them (yes), or stay (no)."""
        if not self.session.editor.unsaved():
            return True
        choice = ask_unsaved_edits(self.window, leaving)
        if choice == EXPORT:
            folder = ask_export_folder(self.window, self.session, self.window.exporter.formats())
            return bool(folder and self.window.exporter.export_to(folder))
        return choice == DISCARD

    def export_ai_result(self) -> list[Path]:
        """The AI's segmentation as it came, without the reader's edits (the summary says so)."""
        folder = ask_export_folder(self.window, self.session)
        return self.window.exporter.export_to(folder, edited=False) if folder else []

    def _connect(self) -> None:
        session, window = self.session, self.window
        for view in window.grid.views.values():
            view.editRequested.connect(self._on_edit)
        self.panel.changed.connect(self._update_views)
        session.editor.changed.connect(self._on_edited)
        session.review.changed.connect(self._on_review_changed)
        session.events.model_changed.connect(self._on_model_changed)
        session.events.findings_ready.connect(self._on_findings)
        session.events.scan_opened.connect(lambda *_: self._on_edited(True))
        if session.spec is not None:
            self._on_model_changed(session.spec)
        self._update_views()

    def _on_model_changed(self, spec: ModelSpec) -> None:
        self.panel.set_labels(spec.labels)

    def _update_views(self) -> None:
        editing, brush = self.session.editor.editing, self.panel.brush_mm()
        for view in self.window.grid.views.values():
            view.set_editing(editing, brush)

    def _on_edit(self, view: str, phase: str, row: int, col: int) -> None:
        problem = self.session.edit(view, phase, row, col)
        if problem:
            self.window.statusBar().showMessage(problem, 6000)

    def _on_edited(self, final: bool) -> None:
        if final:
            self.panel.refresh()
            self.undo.setEnabled(self.session.editor.can_undo())
            self.redo.setEnabled(self.session.editor.can_redo())

    def _on_review_changed(self) -> None:
        self.review.refresh()
        self._show_marks()
        if self.session.review.active:
            self.dock.raise_()

    def _on_findings(self, found: Findings) -> None:
        self._lesions = list(found.lesions or [])
        self._show_marks()

    def _show_marks(self) -> None:
        volume = self.session.volume
        if volume is not None and self._lesions:
            self.window.findings.mark_reviewed(self.session.review.marks(self._lesions, volume.shape))
