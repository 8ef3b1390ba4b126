"""The Findings dock: the session's findings (volume and uncertainty per label, Dice against a reference)
as a table, and the slices ranked by uncertainty as a list that jumps to a slice when clicked."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.session.findings import Findings

COLUMNS = ("Label", "mL", "Mean unc.", "Dice")
COLUMN_TIPS = (
    "Label of the model",
    "Segmented volume in millilitres",
    "Mean of the chosen uncertainty map inside the label",
    "Dice against the ground truth, slices so far",
)
MAX_RANKED = 50


class FindingsPanel(QWidget):
    """Summary table and ranked slice list of the displayed result; `sliceRequested` on a click."""

    sliceRequested = Signal(str, int)  # axis, slice index

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._axis = "axial"
        self.progress = QLabel("No result yet")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for col, tip in enumerate(COLUMN_TIPS):
            header = self.table.horizontalHeaderItem(col)
            if header is not None:
                header.setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMaximumHeight(84)
        self.ranked_title = QLabel("Slices by uncertainty (click to jump)")
        self.ranked = QListWidget()
        self.ranked.setMinimumHeight(120)
        self.ranked.itemClicked.connect(self._on_item_clicked)
        self.ranked.itemActivated.connect(self._on_item_clicked)
        layout = QVBoxLayout(self)
        layout.addWidget(self.progress)
        layout.addWidget(self.table)
        layout.addWidget(self.ranked_title)
        layout.addWidget(self.ranked, 1)

    def clear(self) -> None:
        self.progress.setText("No result yet")
        self.table.setRowCount(0)
        self.ranked.clear()

    def show_findings(self, findings: Findings) -> None:
        """Refresh from the session's findings of the result on screen (possibly partial)."""
        self._axis = findings.axis
        self.progress.setText(findings.progress)
        self.table.setRowCount(len(findings.labels))
        for row, label in enumerate(findings.labels):
            cells = (
                label.name,
                f"{label.volume_ml:.2f}",
                f"{label.mean_uncertainty:.4f}",
                f"{label.dice:.3f}" if label.dice is not None else "–",
            )
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        self.ranked_title.setText(findings.ranking_title)
        self.ranked.clear()
        for index, mean in findings.ranking[:MAX_RANKED]:
            entry = QListWidgetItem(f"{findings.axis} {index + 1:>4}    {mean:.4f}")
            entry.setData(Qt.ItemDataRole.UserRole, index)
            self.ranked.addItem(entry)

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        self.sliceRequested.emit(self._axis, int(item.data(Qt.ItemDataRole.UserRole)))
