"""The Review panel: start the uncertainty-guided review, see where it stands ("3 of 7 reviewed") and what
is shown, and accept, remove or step past it. The review itself is the session's `Review`."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QPushButton, QVBoxLayout, QWidget

from viewer.session.session import ReadingSession

PROGRESS_STYLE = "font-weight: bold; font-size: 13pt;"


class ReviewPanel(QGroupBox):
    """Buttons forwarding the reader's decisions to `session.review`; `map_name()` is the uncertainty map
    the review ranks by (the one on screen)."""

    def __init__(
        self, session: ReadingSession, map_name: Callable[[], str], parent: QWidget | None = None
    ) -> None:
        super().__init__("Review", parent)
        self.session, self.map_name = session, map_name
        self.start_button = QPushButton("Review, most uncertain first")
        self.start_button.setToolTip(
            "Step through the segmented regions and the uncertain regions the AI left out, the most "
            "uncertain first; the views centre on each"
        )
        self.progress = QLabel("")
        self.progress.setStyleSheet(PROGRESS_STYLE)
        self.item = QLabel("Open a scan and let the AI segment it, then review its result here.")
        self.item.setWordWrap(True)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #ffb347;")
        self.accept_button = QPushButton("Accept")
        self.accept_button.setToolTip("Right as it stands (after your edits, if you made any)")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Not a finding: remove this region from the segmentation (undoable)")
        self.previous_button, self.next_button = QPushButton("◀ Previous"), QPushButton("Next ▶")
        self.stop_button = QPushButton("Stop")
        buttons = QGridLayout()
        buttons.addWidget(self.accept_button, 0, 0)
        buttons.addWidget(self.remove_button, 0, 1)
        buttons.addWidget(self.previous_button, 1, 0)
        buttons.addWidget(self.next_button, 1, 1)
        buttons.addWidget(self.stop_button, 2, 0, 1, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.start_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.item)
        layout.addLayout(buttons)
        layout.addWidget(self.message)

        review = session.review
        self.start_button.clicked.connect(self._start)
        self.accept_button.clicked.connect(review.accept)
        self.remove_button.clicked.connect(self._remove)
        self.previous_button.clicked.connect(review.previous)
        self.next_button.clicked.connect(review.next)
        self.stop_button.clicked.connect(review.stop)
        self.refresh()

    def _start(self) -> None:
        """Start the review of the result on screen, or take up the one begun where it stopped."""
        if self.session.review.items:
            self.session.review.resume()
        else:
            self.session.start_review(self.map_name())

    def _remove(self) -> None:
        self.message.setText(self.session.review.remove())

    def refresh(self) -> None:
        """Progress, the item shown, and which buttons apply."""
        review = self.session.review
        self.progress.setText(review.progress() if review.items else "")
        self.item.setText(review.describe(self.session.label_names()) if review.items else self.item.text())
        active = review.active
        for button in (self.accept_button, self.previous_button, self.next_button, self.stop_button):
            button.setEnabled(active)
        item = review.item()
        self.remove_button.setEnabled(active and item is not None and item.label > 0)
        self.start_button.setText(
            "Resume review" if review.items and not active else "Review, most uncertain first"
        )
        if not active:
            self.message.setText("")
