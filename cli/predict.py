"""`aimc predict`: one scan in, one output set out, with the model gate, the case verdict and the lesions.

Everything that can be refused is refused before torch, aihwkit and MONAI load (seconds and a
gigabyte): the settings (argparse), the scan (read with nibabel or SimpleITK), the output folder
(locked, our own files recognised by their manifest) and the model (its folder, and whether it fits
the scan). Only then is the network built and run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from engine.compatibility import Fit, model_for_scan
from engine.export import RESULT_FILES, SUMMARY, case_trust, write_results
from engine.export_formats import NIFTI, check_formats, file_names, parse_formats
from engine.files import OutputSet
from engine.model_store import ModelSpec, find_model, scan_models
from engine.run_settings import RunSettings
from engine.volume import ScanError, Volume, load_scan

if TYPE_CHECKING:
    from engine.inference import Segmenter
    from engine.pipeline import VolumeResult


def choose(volume: Volume, name: str | None, force: bool) -> tuple[ModelSpec, Fit]:
    """The model to run and the gate's fit: `name` if it fits the scan (or `force`), else the installed
    model that fits best, chosen as the viewer chooses (`engine.compatibility.model_for_scan`)."""
    spec = find_model(name) if name else None
    return model_for_scan(volume, spec, force, scan_models()[0])


def gate_line(fit: Fit, asked: bool) -> str:
    """What the gate decided, for stderr."""
    if not fit.fits:
        return f"aimc: running {fit.model} OUTSIDE its training domain (--force): {fit.explain()}"
    how = "as asked" if asked else "chosen by the model gate"
    return f"aimc: model {fit.model} ({how}): {fit.explain()}"


def load(spec: ModelSpec, run: RunSettings) -> Segmenter:
    """Build the network and program its chips (torch, aihwkit and MONAI load here); weights that do not
    fit are a `ModelError`."""
    from engine.inference import Segmenter

    segmenter = Segmenter(spec, run)
    segmenter.program_all()
    return segmenter


def segment(segmenter: Segmenter, volume: Volume, spec: ModelSpec, quiet: bool) -> VolumeResult:
    """Every slice of `volume`, with a progress bar on a terminal."""
    from tqdm import tqdm

    from engine.pipeline import VolumeResult, run_slices

    result = VolumeResult.for_model(volume, spec)
    bar = tqdm(
        total=int(result.finished.size),
        unit="slice",
        disable=not sys.stderr.isatty() or quiet,
        desc=f"{spec.name} {segmenter.run.mode}",
    )
    for r in run_slices(segmenter, volume, result.axis):
        result.add(r)
        bar.update(1)
    bar.close()
    result.finalise()
    return result


def summary_lines(summary: dict) -> list[str]:
    """The short printed summary: volumes, the verdict, the lesions to review."""

    def size(entry: dict) -> str:  # a 2D image has areas (engine.images2d.in_image_units), not volumes
        if "volume_ml" in entry:
            return f"{entry['volume_ml']:.2f} mL"
        return f"{entry['area_px']} px" if "area_px" in entry else f"{entry['area_um2']:.1f} µm²"

    volumes = ", ".join(f"{name} {size(entry)}" for name, entry in summary["labels"].items())
    lines = [f"segmented: {volumes or 'nothing'}"]
    if "nuclei" in summary:
        lines.append(f"{summary['nuclei']['count']} nuclei (instance map and table written)")
    if not summary["gate"]["fits"]:
        lines.append("OUTSIDE THE MODEL'S TRAINING DOMAIN: " + "; ".join(summary["gate"]["reasons"]))
    verdict = summary["verdict"]
    lines.append(f"verdict: {verdict['message'] if verdict['available'] else verdict['reason']}")
    found = summary.get("lesions", [])  # none for a 2D image
    flagged = [lesion for lesion in found if lesion["review"]]
    if found:
        top = found[0]
        lines.append(
            f"lesions: {len(found)}, {len(flagged)} flagged for review; most uncertain: {top['label']} "
            f"{size(top)}, slices {top['first_slice']}-{top['last_slice']}"
        )
    return lines


def say_which_series(folder: str, read: str) -> None:
    """A folder of several DICOM series: say on stderr which one was read and how to choose another."""
    from engine.volume import list_dicom_series

    found = list_dicom_series(folder)
    print(
        f"aimc: note: {folder} holds {len(found)} DICOM series; read the one with the most slices "
        f"({read}). Choose another with --series UID:",
        file=sys.stderr,
    )
    for series in found:
        print(f"  {'*' if series.uid == read else ' '} {series.summary()}", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def predict(args: argparse.Namespace) -> int:
    """The command: check, choose, run, write, say what was found. SIGTERM ends it as Ctrl-C does: the
    output set being written is dropped, the folder keeps its earlier set."""
    series = getattr(args, "series", None)
    volume = load_scan(args.scan, channel=args.channel, series=series)
    if series is None and volume.meta.get("series_count", 1) > 1:
        say_which_series(args.scan, volume.meta["series_uid"])
    try:
        formats = parse_formats(args.format or [NIFTI])
    except ValueError as exc:
        raise ScanError(str(exc)) from None
    check_formats(volume, formats)  # a DICOM SEG needs a DICOM source: said before any work
    spec, fit = choose(volume, args.model, args.force)
    run = RunSettings(
        model=spec.name,
        mode=args.mode,
        mc_samples=args.mc,
        noise_level=args.noise,
        drift_s=args.drift,
        seed=args.seed,
    )
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        with OutputSet(args.out, overwrite=args.overwrite, protect=[args.scan]) as outputs:
            outputs.check([*(RESULT_FILES if NIFTI in formats else (SUMMARY,)), *file_names(formats)])
            t0 = time.perf_counter()
            segmenter = load(spec, run)
            if not args.quiet:  # after the model loaded: a refusal stays one line
                print(gate_line(fit, bool(args.model)), file=sys.stderr)
            result = segment(segmenter, volume, spec, args.quiet)
            trust = case_trust(result, spec, run)
            paths = write_results(
                result, Path(args.out), spec, run, fit=fit, outputs=outputs, formats=formats, **trust
            )
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if not args.quiet:
        summary = json.loads(paths["summary"].read_text())
        print(f"{len(result.seconds)} slices in {time.perf_counter() - t0:.1f}s; wrote {args.out}")
        print("\n".join(summary_lines(summary)))
    return 0
