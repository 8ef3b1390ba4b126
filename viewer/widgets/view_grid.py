"""The three planes laid out as one large view and two small ones; any plane can be the large one."""

from __future__ import annotations

from PySide6.QtWidgets import QGridLayout, QWidget

from viewer.session.display import VIEWS
from viewer.widgets.slice_view import SliceView


class ViewGrid(QWidget):
    """Axial, coronal and sagittal `SliceView`s; `set_large` swaps which one gets the big cell."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.views: dict[str, SliceView] = {v: SliceView(v) for v in VIEWS}
        self.large = VIEWS[0]
        self._layout = QGridLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(4)
        self._layout.setColumnStretch(0, 2)
        self._layout.setColumnStretch(1, 1)
        self._layout.setRowStretch(0, 1)
        self._layout.setRowStretch(1, 1)
        self.set_large(self.large)

    def set_large(self, view: str) -> None:
        """Put `view` in the large cell and the other two, in fixed order, on the right."""
        if view not in self.views:
            raise ValueError(f"unknown view {view!r}")
        self.large = view
        for widget in self.views.values():
            self._layout.removeWidget(widget)
        self._layout.addWidget(self.views[view], 0, 0, 2, 1)
        small = [v for v in VIEWS if v != view]
        self._layout.addWidget(self.views[small[0]], 0, 1)
        self._layout.addWidget(self.views[small[1]], 1, 1)

    def set_planar(self, planar: bool) -> None:
        """A 2D image (one slice) shows only its axial view, across the whole grid, without the patient
        directions at its edges (a micrograph has no anterior or left); a volume all three, with them."""
        for name in VIEWS[1:]:
            self.views[name].setVisible(not planar)
        for letter in self.views[VIEWS[0]].letters.values():
            letter.setVisible(not planar)
        self._layout.setColumnStretch(1, 0 if planar else 1)

    def reset_zoom(self) -> None:
        for view in self.views.values():
            view.reset_zoom()
