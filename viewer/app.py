"""`aimc-viewer [SCAN]`: start the desktop viewer, optionally on a scan and with a chosen model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PySide6.QtCore import QThreadPool, QTimer
from PySide6.QtWidgets import QApplication

from engine.model_store import ModelError, find_model, list_models
from engine.volume import Volume
from viewer.session.verdicts import VerdictState
from viewer.widgets.main_window import MainWindow
from viewer.widgets.theme import apply_dark_theme


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aimc-viewer", description="Read AI segmentations with their uncertainty."
    )
    p.add_argument("scan", nargs="?", help="NIfTI, MHA, NRRD file or DICOM folder to open")
    p.add_argument("--model", help="model name in resources/models, or a model folder")
    p.add_argument("--mode", choices=("analog", "digital"), help="start in this inference mode")
    p.add_argument("--mc", type=int, help="Monte-Carlo samples to start with (1-64)")
    p.add_argument("--truth", metavar="LABELS", help="ground-truth label file to compare with (Dice)")
    p.add_argument(
        "--slice", type=int, metavar="N", help="start at axial slice N (1-based); it is segmented first"
    )
    p.add_argument("--large", choices=("axial", "coronal", "sagittal"), help="plane shown large")
    p.add_argument(
        "--screenshot", metavar="PNG", help="save the window once inference has finished, then quit"
    )
    p.add_argument("--size", help="window size WxH (default: as the viewer was last closed, else 1600x1000)")
    return p


def _save_when_done(window: MainWindow, path: str, app: QApplication) -> None:
    """For documentation: grab the window once the reading has settled (the first complete result's
    verdict shown, or the model refused for the scan), or after 15 minutes."""
    settled = (VerdictState.READY, VerdictState.UNCALIBRATED, VerdictState.FAILED)

    def grab() -> None:
        window.grab().save(path)
        app.quit()

    def on_trust() -> None:
        session = window.session
        if session.blocked is not None or session.case_verdict().state in settled:
            window.trustShown.disconnect(on_trust)
            QTimer.singleShot(1500, grab)  # the findings arrive from their worker meanwhile

    window.trustShown.connect(on_trust)
    window.openFailed.connect(lambda _: QTimer.singleShot(800, grab))
    QTimer.singleShot(15 * 60 * 1000, grab)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    specs = list_models()
    if args.model:
        try:
            chosen = find_model(args.model)
        except ModelError as exc:
            print(f"aimc-viewer: {exc}", file=sys.stderr)
            return 2
        specs = [chosen] + [s for s in specs if s.name != chosen.name]
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    app.setOrganizationName("aimc")
    app.setApplicationName("aimc-viewer")
    apply_dark_theme(app)
    window = MainWindow(specs if args.model else None)
    if args.size or not window.layout_restored:
        width, _, height = (args.size or "1600x1000").partition("x")
        window.resize(int(width), int(height))
    if args.mode:
        window.model_panel.set_mode(args.mode)
    if args.mc:
        window.model_panel.mc_slider.setValue(args.mc)
    if args.large:
        window.set_large_view(args.large)
    window.show()
    if args.screenshot:
        _save_when_done(window, str(Path(args.screenshot)), app)
    if args.scan:
        QTimer.singleShot(0, lambda: window.files.open_path(args.scan))
        if args.slice:

            def go_to_slice(volume: Volume) -> None:
                window.scanLoaded.disconnect(go_to_slice)
                window.session.move_slice("axial", min(max(args.slice, 1), volume.shape[2]) - 1)

            window.scanLoaded.connect(go_to_slice)
        if args.truth:

            def load_truth_once(_volume: Volume) -> None:
                window.scanLoaded.disconnect(load_truth_once)
                window.files.load_ground_truth(args.truth)

            window.scanLoaded.connect(load_truth_once)
    status = app.exec()
    # A worker stops within one MC sample or one chip programming (seconds): the window goes at once,
    # the process when the worker has finished, while the objects its signals reach still exist.
    window.hide()
    window.runner.cancel()
    QThreadPool.globalInstance().waitForDone()
    return status


if __name__ == "__main__":
    sys.exit(main())
