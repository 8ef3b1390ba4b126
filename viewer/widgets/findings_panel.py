"""What the reader reports: volume per label, uncertainty inside it, Dice against a reference,
and the slices ranked by uncertainty so the least certain ones are looked at first."""

from __future__ import annotations

import numpy as np
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

from engine.pipeline import VolumeResult
from viewer.session.ground_truth import dice_so_far

COLUMNS = ("Label", "mL", "Mean unc.", "Dice")
COLUMN_TIPS = ("Label of the model", "Segmented volume in millilitres",
               "Mean of the chosen uncertainty map inside the label", "Dice against the ground truth, slices so far")
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

    def show_result(self, result: VolumeResult, label_names: dict[int, str], map_name: str, map_title: str,
                    truth: np.ndarray | None = None) -> None:
        """Refresh from `result` (possibly partial); `truth` adds Dice over the finished slices."""
        self._axis = result.axis
        done, total = int(result.finished.sum()), int(result.finished.size)
        volumes = result.label_volumes_ml()
        inside = result.mean_uncertainty_in_labels(map_name)
        dice, compared = dice_so_far(result, truth) if truth is not None else ({}, 0)
        self.progress.setText(f"{done} of {total} {result.axis} slices segmented"
                              + (f"; Dice over those {compared}" if truth is not None else ""))
        self.table.setRowCount(len(volumes))
        for row, value in enumerate(sorted(volumes)):
            cells = (label_names.get(value, str(value)), f"{volumes[value]:.2f}", f"{inside[value]:.4f}",
                     f"{dice[value]:.3f}" if value in dice else "–")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        self.ranked_title.setText(f"Slices by mean {map_title} (click to jump)")
        self.ranked.clear()
        for index, mean in result.slice_ranking(map_name)[:MAX_RANKED]:
            entry = QListWidgetItem(f"{result.axis} {index + 1:>4}    {mean:.4f}")
            entry.setData(Qt.ItemDataRole.UserRole, index)
            self.ranked.addItem(entry)

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        self.sliceRequested.emit(self._axis, int(item.data(Qt.ItemDataRole.UserRole)))
