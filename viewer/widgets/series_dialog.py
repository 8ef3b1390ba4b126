"""The series browser: a DICOM folder holding several series asks which one to read (description, modality,
size, date), rather than silently reading the largest."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.dicom_series import DicomSeries

COLUMNS = ("Description", "Modality", "Size", "Date", "No.", "Series UID")


class SeriesDialog(QDialog):
    """The series of one folder, most slices first and preselected; `chosen()` once accepted."""

    def __init__(self, folder: str, series: list[DicomSeries], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.series = series
        self.setWindowTitle("Choose a DICOM series")
        first = series[0]
        who = " · ".join(s for s in (first.patient_name or first.patient_id, first.study_description) if s)
        intro = QLabel(
            f"{folder} holds {len(series)} series{' (' + who + ')' if who else ''}. Which one to read?"
        )
        intro.setWordWrap(True)
        self.table = QTableWidget(len(series), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        for row, s in enumerate(series):
            cells = (s.description or "(no description)", s.modality, s.size, s.date, s.number, s.uid)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                self.table.setItem(row, col, item)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.selectRow(0)
        self.table.doubleClicked.connect(lambda _: self.accept())
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(760, 120 + 30 * min(len(series), 10))
        self.setWindowModality(Qt.WindowModality.WindowModal)

    def chosen(self) -> DicomSeries:
        rows = self.table.selectionModel().selectedRows()
        return self.series[rows[0].row() if rows else 0]
