"""`aimc-viewer [SCAN]`: start the desktop viewer, optionally on a scan and with a chosen model.

The start is in two steps so that the scan is on screen within moments: first a light window
(`StartWindow`: Qt, pyqtgraph and the scan reader only) shows the scan's middle slice, while a thread
imports the main window and what it builds on (torch, aihwkit, MONAI); then the main window takes its
place and opens the scan, the model being built in the inference worker as before.
`--exit-when-shown` prints when each step was reached (wall clock and CPU time), for
`scripts/viewer_start.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QThreadPool, QTimer
from PySide6.QtWidgets import QApplication

from engine.compute_device import parse_device
from engine.volume import ScanError, Volume, load_scan
from viewer.widgets.start_window import StartWindow
from viewer.widgets.theme import apply_dark_theme

LAUNCHED_ENV = "AIMC_LAUNCHED_AT"  # a launcher's time.time(), to time the start from outside


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
        "--device",
        type=parse_device,
        help="compute device: auto, cpu, cuda or cuda:N (default: as last time)",
    )
    p.add_argument(
        "--screenshot", metavar="PNG", help="save the window once inference has finished, then quit"
    )
    p.add_argument("--size", help="window size WxH (default: as the viewer was last closed, else 1600x1000)")
    p.add_argument(
        "--exit-when-shown",
        action="store_true",
        help="print the seconds until the window, the scan and the main window were shown, then quit",
    )
    return p


_IMPORTED_AT = time.time()


class _StartClock:
    """Seconds since launch (the launcher's time when it gives it, else since this module was imported)
    at each step of the start."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        launched = os.environ.get(LAUNCHED_ENV)
        self.t0 = float(launched) if launched else _IMPORTED_AT

    def mark(self, what: str) -> None:
        """The step, the wall-clock seconds since launch and the CPU seconds the process has used (on a
        loaded machine the wall clock mostly measures the other processes)."""
        if self.enabled:
            print(f"{what} {time.time() - self.t0:.3f} {time.process_time():.3f}", flush=True)


def _import_main_window(done: threading.Event, failed: list[BaseException]) -> None:
    """Import the main window and everything heavy under it (torch, aihwkit, MONAI) off the UI thread."""
    try:
        import viewer.widgets.main_window  # noqa: F401
    except BaseException as exc:  # re-raised on the UI thread
        failed.append(exc)
    finally:
        done.set()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    clock = _StartClock(args.exit_when_shown)
    chosen = None
    if args.model:
        from engine.model_store import ModelError, find_model

        try:
            chosen = find_model(args.model)
        except ModelError as exc:
            print(f"aimc-viewer: {exc}", file=sys.stderr)
            return 2
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    app.setOrganizationName("aimc")
    app.setApplicationName("aimc-viewer")
    apply_dark_theme(app)
    start = StartWindow()
    width, _, height = (args.size or "1600x1000").partition("x")
    start.resize(int(width), int(height))
    start.show()
    app.processEvents()
    clock.mark("window")
    if args.scan:
        try:
            start.show_scan(load_scan(args.scan), Path(args.scan).name)
            app.processEvents()
            clock.mark("scan")
        except ScanError:
            pass  # the main window says why when it opens the path
    # started once the scan is shown: the import would otherwise hold the interpreter while it is read
    imported, failed = threading.Event(), []
    threading.Thread(target=_import_main_window, args=(imported, failed), daemon=True).start()
    holder: dict[str, Any] = {}

    def when_imported() -> None:
        if not imported.is_set():
            QTimer.singleShot(20, when_imported)
            return
        if failed:
            print(f"aimc-viewer: cannot start: {failed[0]}", file=sys.stderr)
            app.exit(1)
            return
        holder["window"] = _main_window(app, args, chosen, start, clock)

    QTimer.singleShot(0, when_imported)
    status = app.exec()
    window = holder.get("window")
    if window is not None:
        # A worker stops within one MC sample or one chip programming (seconds): the window goes at once,
        # the process when the worker has finished, while the objects its signals reach still exist.
        window.hide()
        window.runner.cancel()
    QThreadPool.globalInstance().waitForDone()
    return status


def _main_window(
    app: QApplication, args: argparse.Namespace, chosen: Any, start: StartWindow, clock: _StartClock
) -> Any:
    """The main window in the start window's place, opening the scan (the imports are done by now)."""
    from engine.model_store import list_models
    from viewer.widgets.device_menu import add_device_menu, saved_device
    from viewer.widgets.main_window import MainWindow

    specs = None
    if chosen is not None:
        specs = [chosen] + [s for s in list_models() if s.name != chosen.name]
    window = MainWindow(specs)
    settings = QSettings("aimc", "aimc-viewer")
    add_device_menu(window, settings, args.device or saved_device(settings))
    if args.size or not window.layout_restored:  # else the layout the reader left
        window.setGeometry(start.geometry())
    if args.mode:
        window.model_panel.set_mode(args.mode)
    if args.mc:
        window.model_panel.mc_slider.setValue(args.mc)
    if args.large:
        window.set_large_view(args.large)
    window.show()
    start.close()
    clock.mark("main_window")
    if args.exit_when_shown:
        window.scanLoaded.connect(lambda _v: (clock.mark("main_window_scan"), QTimer.singleShot(0, app.quit)))
        if not args.scan:
            QTimer.singleShot(0, app.quit)
    if args.screenshot:
        _save_when_done(window, str(Path(args.screenshot)), app)
    if args.scan:
        window.files.open_path(args.scan)
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
    return window


def _save_when_done(window: Any, path: str, app: QApplication) -> None:
    """For documentation: grab the window once the reading has settled (the first complete result's
    verdict shown, or the model refused for the scan), or after 15 minutes."""
    from viewer.session.verdicts import VerdictState

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


if __name__ == "__main__":
    sys.exit(main())
