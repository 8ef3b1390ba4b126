"""The Findings dock: the session's findings (volume and uncertainty per label, Dice against a reference)
as a table, the lesions of a complete result (ranked by uncertainty, flagged for review) as a table that
centres the views on a lesion when clicked, and the slices ranked by uncertainty near the segmentation
as a list that jumps to a slice when clicked."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from viewer.session.findings_table import Findings

COLUMNS = ("Label", "mL", "Unc.", "Dice")
COLUMN_TIPS = (
    "Label of the model",
    "Segmented volume in millilitres",
    "Mean of the chosen uncertainty map inside the label",
    "Dice against the ground truth, slices so far",
)
LESION_COLUMNS = ("Label", "mL", "Ø mm", "Slices", "Unc.", "")
LESION_TIPS = (
    "Label of the model; each row is one connected region",
    "Volume in millilitres",
    "Largest in-plane diameter in millimetres",
    "Slices it spans, numbered as in the views",
    "Mean of the chosen uncertainty map inside the lesion",
    "Flagged for review: its uncertainty is above the model's calibrated threshold",
)
NUCLEUS_COLUMNS = ("Nucleus", "px", "Unc.", "P")
NUCLEUS_TIPS = (
    "Number of the nucleus in the instance map (instances.nii.gz and nuclei.csv on export)",
    "Area (px: the image records no pixel size)",
    "Mean of the chosen uncertainty map inside the nucleus",
    "Mean foreground probability inside the nucleus",
)
REVIEW_COLOUR = "#ffb347"
MAX_RANKED = 50
MAX_LABEL_ROWS = 3  # the label table shows this many rows before it scrolls


def _table(columns: tuple[str, ...], tips: tuple[str, ...], numbers_fit: bool = True) -> QTableWidget:
    """A read-only table; the number columns share the width (`numbers_fit`), or the first one takes it."""
    table = QTableWidget(0, len(columns))
    _set_columns(table, columns, tips)
    table.verticalHeader().setVisible(False)
    table.setWordWrap(False)  # a long label name is elided (full in its tooltip), rows keep one line
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    fit, stretch = QHeaderView.ResizeMode.ResizeToContents, QHeaderView.ResizeMode.Stretch
    table.horizontalHeader().setSectionResizeMode(stretch if numbers_fit else fit)
    table.horizontalHeader().setSectionResizeMode(0, fit if numbers_fit else stretch)
    return table


def _set_columns(table: QTableWidget, columns: tuple[str, ...], tips: tuple[str, ...]) -> None:
    table.setColumnCount(len(columns))
    table.setHorizontalHeaderLabels(columns)
    for col, tip in enumerate(tips):
        item = table.horizontalHeaderItem(col)
        if item is not None:
            item.setToolTip(tip)


def _fill_row(table: QTableWidget, row: int, cells: tuple[str, ...]) -> None:
    for col, text in enumerate(cells):
        item = QTableWidgetItem(text)
        item.setToolTip(text)
        if col:
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        table.setItem(row, col, item)


class FindingsPanel(QWidget):
    """Summary table, lesion table and ranked slice list of the displayed result.

    `sliceRequested` when a ranked slice is clicked, `lesionRequested` (its centre voxel) for a lesion.
    """

    sliceRequested = Signal(str, int)  # axis, slice index
    lesionRequested = Signal(object)  # (i, j, k) canonical voxel at the lesion's centre

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._axis = "axial"
        self.progress = QLabel("No result yet")
        self.progress.setWordWrap(True)  # long lines would widen the dock past a small screen
        self.table = _table(COLUMNS, COLUMN_TIPS)
        self._fit_label_table(1)
        self.lesion_title = QLabel("Lesions")
        self.lesion_title.setWordWrap(True)
        self.lesion_note = QLabel("")
        self.lesion_note.setWordWrap(True)
        self.lesion_note.setStyleSheet("color: #a0a0a0;")
        self.lesions = _table(LESION_COLUMNS, LESION_TIPS, numbers_fit=False)
        self.lesions.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.lesions.cellClicked.connect(self._on_lesion_clicked)
        self.ranked_title = QLabel("Slices by uncertainty (click to jump)")
        self.ranked_title.setWordWrap(True)
        self.ranked = QListWidget()
        self.ranked.itemClicked.connect(self._on_item_clicked)
        self.ranked.itemActivated.connect(self._on_item_clicked)
        self.tabs = QTabWidget()  # lesions and slices share the height a small screen leaves
        for title, widgets in (
            ("Lesions", (self.lesion_title, self.lesion_note, self.lesions)),
            ("Slices", (self.ranked_title, self.ranked)),
        ):
            page = QWidget()
            column = QVBoxLayout(page)
            column.setContentsMargins(2, 4, 2, 2)
            for widget in widgets:
                column.addWidget(widget, 1 if isinstance(widget, QAbstractItemView) else 0)
            self.tabs.addTab(page, title)
        layout = QVBoxLayout(self)
        layout.addWidget(self.progress)
        layout.addWidget(self.table)
        layout.addWidget(self.tabs, 1)

    def _fit_label_table(self, rows: int) -> None:
        """As tall as its rows (up to `MAX_LABEL_ROWS`): the lesions below get the rest."""
        shown = min(max(rows, 1), MAX_LABEL_ROWS)
        height = (
            self.table.horizontalHeader().sizeHint().height()
            + shown * self.table.verticalHeader().defaultSectionSize()
        )
        self.table.setFixedHeight(height + 2 * self.table.frameWidth())

    def clear(self) -> None:
        self.progress.setText("No result yet")
        self.table.setRowCount(0)
        self.lesions.setRowCount(0)
        self.lesion_note.setText("")
        self.lesion_title.setText("")
        self.tabs.setTabText(0, "Lesions")
        self.ranked.clear()

    def show_findings(self, findings: Findings) -> None:
        """Refresh from the session's findings of the result on screen (possibly partial)."""
        self._axis = findings.axis
        self.progress.setText(findings.progress)
        self.table.setRowCount(len(findings.labels))
        self._fit_label_table(len(findings.labels))
        size_item = self.table.horizontalHeaderItem(1)
        if size_item is not None:
            size_item.setText(findings.size_unit)
        for row, label in enumerate(findings.labels):
            _fill_row(
                self.table,
                row,
                (
                    label.name,
                    f"{label.volume_ml:.2f}" if label.area is None else f"{label.area:.0f}",
                    f"{label.mean_uncertainty:.4f}",
                    f"{label.dice:.3f}" if label.dice is not None else "–",
                ),
            )
        self._show_lesions(findings)
        self.ranked_title.setText(findings.ranking_title)
        self.ranked.clear()
        for index, mean in findings.ranking[:MAX_RANKED]:
            entry = QListWidgetItem(f"{findings.axis} {index + 1:>4}    {mean:.4f}")
            entry.setData(Qt.ItemDataRole.UserRole, index)
            self.ranked.addItem(entry)

    def _show_nuclei(self, findings: Findings) -> None:
        """A nuclei model on a 2D image: the nuclei in place of lesions, their count on the tab."""
        nuclei = findings.nuclei.nuclei if findings.nuclei is not None else []
        _set_columns(
            self.lesions, (NUCLEUS_COLUMNS[0], findings.size_unit, *NUCLEUS_COLUMNS[2:]), NUCLEUS_TIPS
        )
        self.tabs.setTabText(0, f"Nuclei ({len(nuclei)})" if findings.nuclei is not None else "Nuclei")
        self.lesion_title.setText("Click a nucleus to centre the view on it" if nuclei else "")
        self.lesion_title.setVisible(bool(nuclei))
        self.lesion_note.setText(findings.lesion_note)
        self.lesions.setRowCount(len(nuclei))
        for row, nucleus in enumerate(nuclei):
            _fill_row(self.lesions, row, findings.nucleus_cells(nucleus))
            self.lesions.item(row, 0).setData(Qt.ItemDataRole.UserRole, nucleus.centre)

    def _show_lesions(self, findings: Findings) -> None:
        if findings.counts_nuclei:
            self._show_nuclei(findings)
            return
        _set_columns(self.lesions, LESION_COLUMNS, LESION_TIPS)
        found = findings.lesions or []
        flagged = sum(lesion.review for lesion in found)
        self.lesion_title.setText(
            "Most uncertain first"
            + (f", {flagged} to review" if flagged else "")
            + "; click to centre the views"
            if found
            else ""
        )
        self.lesion_title.setVisible(bool(found))
        self.tabs.setTabText(0, f"Lesions ({len(found)})" if findings.lesions is not None else "Lesions")
        self.lesion_note.setText(findings.lesion_note)
        self.lesions.setRowCount(len(found))
        for row, lesion in enumerate(found):
            _fill_row(self.lesions, row, findings.lesion_cells(lesion))
            self.lesions.item(row, 0).setData(Qt.ItemDataRole.UserRole, lesion.centre)
            if lesion.review:
                for col in range(self.lesions.columnCount()):
                    self.lesions.item(row, col).setForeground(QColor(REVIEW_COLOUR))

    def mark_reviewed(self, marks: list[str]) -> None:
        """Beside each lesion, how the reader's review decided it ("✓ accepted", "✎ edited"; '' not yet)."""
        last = self.lesions.columnCount() - 1
        for row, mark in enumerate(marks[: self.lesions.rowCount()]):
            item = self.lesions.item(row, last)
            if item is not None:
                flag = "review" if item.text().startswith("review") else ""
                item.setText(" ".join(filter(None, (flag, mark))))
                item.setToolTip(item.text())

    def _on_lesion_clicked(self, row: int, _column: int) -> None:
        item = self.lesions.item(row, 0)
        if item is not None:
            self.lesionRequested.emit(tuple(item.data(Qt.ItemDataRole.UserRole)))

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        self.sliceRequested.emit(self._axis, int(item.data(Qt.ItemDataRole.UserRole)))
