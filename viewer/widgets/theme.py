"""A dark Fusion palette: reading rooms are dim, and a bright frame around a grey scan tires the eye."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

_COLOURS = {
    QPalette.ColorRole.Window: "#2b2b2b",
    QPalette.ColorRole.WindowText: "#dcdcdc",
    QPalette.ColorRole.Base: "#1f1f1f",
    QPalette.ColorRole.AlternateBase: "#2f2f2f",
    QPalette.ColorRole.ToolTipBase: "#3a3a3a",
    QPalette.ColorRole.ToolTipText: "#eeeeee",
    QPalette.ColorRole.Text: "#dcdcdc",
    QPalette.ColorRole.Button: "#353535",
    QPalette.ColorRole.ButtonText: "#dcdcdc",
    QPalette.ColorRole.BrightText: "#ff6060",
    QPalette.ColorRole.Highlight: "#2f6ea5",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#5fa8ff",
    QPalette.ColorRole.PlaceholderText: "#888888",
}


def apply_dark_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    palette = QPalette()
    for role, colour in _COLOURS.items():
        palette.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#777777"))
    app.setPalette(palette)
