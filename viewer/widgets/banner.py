"""A banner above the views for one of the session's notices: the model gate or the case verdict.

Its colour says how much to trust what is on screen (green: the verdict expects a good result,
amber: review carefully, red: the model does not fit the scan); the words say why.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from viewer.session.notices import Level, Notice

STYLES = {  # background, text
    Level.INFO: ("#3a3f47", "#e6e6e6"),
    Level.GOOD: ("#1f5a32", "#ffffff"),
    Level.REVIEW: ("#b86e00", "#ffffff"),
    Level.DANGER: ("#9e1c1c", "#ffffff"),
}


class Banner(QFrame):
    """Shows a `Notice` (hidden for `Level.NONE`); `actionClicked` when its button is pressed."""

    actionClicked = Signal()

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(name)
        self.notice = Notice(Level.NONE)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.button = QPushButton()
        self.button.clicked.connect(self.actionClicked)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.button)
        self.setVisible(False)

    def show_notice(self, notice: Notice) -> None:
        self.notice = notice
        if notice.level is Level.NONE:
            self.setVisible(False)
            return
        background, text = STYLES[notice.level]
        name = self.objectName()
        self.setStyleSheet(
            f"QFrame#{name} {{ background-color: {background}; border-radius: 3px; }}"
            f"QFrame#{name} QLabel {{ color: {text}; }}"
        )
        detail = f" — {_escape(notice.detail)}" if notice.detail else ""
        self.label.setText(f"<b>{_escape(notice.headline)}</b>{detail}")
        self.label.setToolTip(notice.text)
        self.button.setText(notice.action)
        self.button.setVisible(bool(notice.action))
        self.setVisible(True)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
