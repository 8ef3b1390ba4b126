"""Help menu content: the keyboard and mouse reference, and the About box (versions, data credits)."""

from __future__ import annotations

import html
from importlib.metadata import PackageNotFoundError, version

from PySide6.QtWidgets import QMessageBox, QWidget

# (keys, what they do); a test checks that every key listed here is bound in the main window.
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("Ctrl+O", "Open a scan (NIfTI, MHA, NRRD, a DICOM file of a series)"),
    ("Ctrl+Shift+O", "Open a DICOM folder"),
    ("Ctrl+G", "Load a ground-truth label file"),
    ("Ctrl+E", "Export segmentation (and chosen maps) as NIfTI into a folder"),
    ("Ctrl+Shift+S", "Save a screenshot of the views (PNG); File menu: of the whole window"),
    ("Ctrl+R", "Run or resume inference with the current settings"),
    ("Ctrl+Z / Ctrl+Shift+Z", "Undo / redo the last edit (a brush stroke, a fill, a removal)"),
    ("PgUp / PgDown", "Next / previous slice in the active view"),
    ("1 / 2 / 3", "Large view: axial / coronal / sagittal"),
    ("S", "Show or hide the segmentation"),
    ("U", "Show or hide the uncertainty heatmap"),
    ("O", "Segmentation as fill or outline"),
    ("G", "Show or hide the ground-truth outline"),
    ("M", "Switch digital / analog inference"),
    ("Home", "Reset zoom and pan in every view"),
    ("Esc", "Cancel the running inference"),
    ("F1", "This list"),
    ("Ctrl+Q", "Quit"),
)
MOUSE: tuple[tuple[str, str], ...] = (
    ("Up / Down", "Next / previous slice (in the view last clicked)"),
    ("Wheel", "Step slices"),
    ("Ctrl+wheel", "Zoom"),
    ("Left click / drag", "Move the crosshair (the other views follow)"),
    ("Left click / drag, with an edit tool", "Paint, erase, fill or remove (Edit and review panel)"),
    ("Middle drag, Shift+left drag", "Pan"),
    ("Right drag", "Window (left/right) and level (up/down)"),
    ("Double-click", "Make this view the large one"),
)

CITATIONS = (
    "Buda M, Saha A, Mazurowski MA. Association of genomic subtypes of lower-grade gliomas with shape "
    "features automatically extracted by a deep learning algorithm. Computers in Biology and Medicine 109 "
    "(2019) 218-225.",
    "Pedano N et al. Radiology Data from The Cancer Genome Atlas Low Grade Glioma [TCGA-LGG] collection. "
    "TCIA (2016), doi:10.7937/K9/TCIA.2016.L4LTD3TK (images CC BY 3.0).",
    "Antonelli M et al. The Medical Segmentation Decathlon. Nature Communications 13, 4128 (2022).",
    "Wasserthal J et al. TotalSegmentator: robust segmentation of 104 anatomic structures in CT images. "
    "Radiology: Artificial Intelligence 5(5) (2023).",
)
PACKAGES = (
    "aimc-med",
    "torch",
    "aihwkit",
    "monai",
    "PySide6-Essentials",
    "pyqtgraph",
    "superqt",
    "nibabel",
    "SimpleITK",
    "numpy",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def shortcuts_html() -> str:
    def rows(pairs: tuple[tuple[str, str], ...]) -> str:
        return "".join(
            f"<tr><td><b>{html.escape(k)}</b>&nbsp;&nbsp;</td><td>{html.escape(v)}</td></tr>"
            for k, v in pairs
        )

    return f"<h3>Keyboard</h3><table>{rows(SHORTCUTS)}</table><h3>In a view</h3><table>{rows(MOUSE)}</table>"


def about_html() -> str:
    versions = "".join(
        f"<tr><td>{html.escape(k)}&nbsp;&nbsp;</td><td>{html.escape(v)}</td></tr>"
        for k, v in package_versions().items()
    )
    cites = "".join(f"<li>{html.escape(c)}</li>" for c in CITATIONS)
    return (
        "<h3>AIMC viewer</h3>"
        "<p>Reads AI segmentations of 3D scans together with the AI's own uncertainty; the network runs "
        "digitally or on simulated analog in-memory computing chips (aihwkit), and the disagreement "
        "between chips is the uncertainty shown.</p>"
        "<p><b>Research software, not a medical device.</b> Volumes on the LGG data are nominal "
        "(the source slices carry no spacing; a 1 mm grid is assumed).</p>"
        f"<h4>Versions</h4><table>{versions}</table>"
        f"<h4>Data</h4><ul>{cites}</ul>"
    )


def show_shortcuts(parent: QWidget) -> None:
    box = QMessageBox(
        QMessageBox.Icon.NoIcon,
        "Keyboard and mouse",
        shortcuts_html(),
        QMessageBox.StandardButton.Close,
        parent,
    )
    box.exec()


def show_about(parent: QWidget) -> None:
    QMessageBox.about(parent, "About AIMC viewer", about_html())
