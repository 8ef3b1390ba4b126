"""`aimc`: the command line of the product (predict, models, train, evaluate, report, bench).

Errors in the user's input end with one line on stderr and exit status 2, never a traceback.
`train` and `evaluate` live in `training/` and are imported only when asked for.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engine.run_settings import MAX_DRIFT_S, MAX_MC, MAX_NOISE_LEVEL, MIN_DRIFT_S


def _positive_drift(text: str) -> float:
    value = float(text)
    if not MIN_DRIFT_S <= value <= MAX_DRIFT_S:
        raise argparse.ArgumentTypeError(f"drift must be within {MIN_DRIFT_S:g}..{MAX_DRIFT_S:g} s")
    return value


def _noise(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= MAX_NOISE_LEVEL:
        raise argparse.ArgumentTypeError(f"noise level must be within 0..{MAX_NOISE_LEVEL:g}")
    return value


def _mc(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_MC:
        raise argparse.ArgumentTypeError(f"MC samples must be within 1..{MAX_MC}")
    return value


def cmd_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.export import write_results
    from engine.inference import Segmenter
    from engine.model_store import default_model, find_model
    from engine.pipeline import VolumeResult, run_slices
    from engine.run_settings import RunSettings
    from engine.volume import load_scan

    volume = load_scan(args.scan, channel=args.channel, series=args.series)
    if args.series is None and volume.meta.get("series_count", 1) > 1:
        _say_which_series(args.scan, volume.meta["series_uid"])
    spec = find_model(args.model) if args.model else default_model()
    run = RunSettings(
        model=spec.name,
        mode=args.mode,
        mc_samples=args.mc,
        noise_level=args.noise,
        drift_s=args.drift,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    segmenter = Segmenter(spec, run)
    segmenter.program_all()
    result = VolumeResult.for_model(volume, spec)
    bar = tqdm(
        total=int(result.finished.size),
        unit="slice",
        disable=not sys.stderr.isatty() or args.quiet,
        desc=f"{spec.name} {run.mode}",
    )
    for r in run_slices(segmenter, volume, result.axis):
        result.add(r)
        bar.update(1)
    bar.close()
    result.finalise()
    paths = write_results(result, Path(args.out), spec, run)
    if not args.quiet:
        written = ", ".join(str(p) for p in paths.values())
        print(f"{len(result.seconds)} slices in {time.perf_counter() - t0:.1f}s; wrote {written}")
    return 0


def _say_which_series(folder: str, read: str) -> None:
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


def cmd_models(args: argparse.Namespace) -> int:
    from engine.model_store import NOMINAL_CHIPS, find_model, list_models

    if args.detail:
        from engine.analog.conversion import layer_report, to_analog

        spec = find_model(args.detail)
        rows = layer_report(to_analog(spec.build(), spec.device))
        labels = ", ".join(label.name for label in spec.labels)
        print(f"{spec.name}: {spec.architecture} ({spec.kind}), labels {labels}")
        print(f"{'layer':60s} {'type':22s} {'weights':>9s}  runs on")
        for r in rows:
            print(
                f"{r.name:60s} {r.kind:22s} {r.parameters:9d}  {'analog tiles' if r.on_tiles else 'digital'}"
            )
        on = sum(r.parameters for r in rows if r.on_tiles)
        total = sum(r.parameters for r in rows)
        print(
            f"{on} of {total} weights on analog tiles; digital: "
            f"{', '.join(sorted({r.kind for r in rows if not r.on_tiles})) or 'none'}"
        )
        return 0
    specs = list_models()
    if not specs:
        print("no models installed in resources/models")
        return 0
    if args.markdown:
        print(models_markdown(specs))
        return 0
    print(f"{'model':28s} {'arch':10s} {'kind':8s} {'data':8s} test Dice: digital, analog (noise 1, 1 day)")
    for s in specs:
        dig = s.test_metrics("digital").get("mean_dice")
        ana = s.test_metrics(NOMINAL_CHIPS)
        dig_s = f"{dig:.3f}" if dig is not None else "-"
        ana_s = f"{ana['mean_dice']:.3f} ± {ana['std_dice_over_programmings']:.3f}" if ana else "-"
        print(
            f"{s.name:28s} {s.architecture:10s} {s.kind:8s} {s.data.get('dataset', ''):8s} {dig_s}, {ana_s}"
        )
    return 0


def models_markdown(specs: list) -> str:
    """The README's table of shipped models, straight from each model.json (no numbers typed by hand).

    An HWA model's drop is against its digital counterpart (`training.init`) run digitally, as the
    quality bar reads; a digital model's drop is its own, digital against analog.
    """
    from engine.model_store import NOMINAL_CHIPS

    by_name = {s.name: s for s in specs}

    lines = [
        "| model | data | training | test Dice digital | analog (noise 1, 1 day) | drop |",
        "|---|---|---|---|---|---|",
    ]
    for s in specs:
        t = s.training
        size = "x".join(map(str, s.preprocessing.input_size))
        how = f"{t.get('epochs_run', '?')} epochs, {size}, {t.get('wall_time_s', 0) / 60:.0f} min" + (
            f", from `{t['init']}`" if t.get("init") else ""
        )
        dig = s.test_metrics("digital").get("mean_dice")
        ana = s.test_metrics(NOMINAL_CHIPS)
        base = by_name.get(t.get("init") or s.name)
        ref = base.test_metrics("digital").get("mean_dice") if base else None
        drop = ref - ana["mean_dice"] if ana and ref is not None else None
        lines.append(
            f"| `{s.name}` | {s.data.get('dataset', '')} | {how} | {'-' if dig is None else f'{dig:.3f}'} | "
            + (f"{ana['mean_dice']:.3f} ± {ana['std_dice_over_programmings']:.3f}" if ana else "-")
            + f" | {'-' if drop is None else f'{drop:.3f}'} |"
        )
    return "\n".join(lines)


def cmd_train(args: argparse.Namespace) -> int:
    from training.train import train

    train(
        Path(args.data),
        args.arch,
        args.kind,
        Path(args.out),
        init=args.init,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_minutes=args.max_minutes,
        runs_dir=Path(args.runs_dir),
        size=args.size,
        context=args.context,
        augment=args.augment,
        loss=args.loss,
        crop=args.crop,
        arch_arguments=args.arch_args,
        patience=args.patience,
        crop_foreground=args.crop_foreground,
    )
    return 0


def cmd_postprocess(args: argparse.Namespace) -> int:
    from engine.model_store import find_model
    from training.postprocessing import choose_postprocessing

    choose_postprocessing(find_model(args.model), Path(args.data), progress=not args.quiet)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.export import write_json
    from training.evaluate import evaluate, print_report

    report = evaluate(
        args.model,
        Path(args.data),
        args.split,
        args.mode,
        args.mc,
        args.noise,
        args.drift,
        args.programmings,
        record=args.record,
        progress=not args.quiet,
    )
    print_report(report)
    if args.json:
        write_json(report, Path(args.json))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from cli.benchmark import run_benchmark

    run_benchmark(Path(args.json), rounds=args.rounds, archs=tuple(args.arch), threads=args.threads)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from training.report.build import write_report

    path = write_report(
        Path(args.out),
        Path(args.data),
        args.programmings,
        args.mc,
        args.limit,
        not args.quiet,
        args.workers,
        measure=not args.from_measurements,
    )
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aimc",
        description="AI segmentation with uncertainty on simulated analog in-memory computing chips",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="segment a scan and write seg, uncertainty, probability and a summary")
    p.add_argument("scan", help="NIfTI file, MHA/MHD, NRRD or a DICOM folder")
    p.add_argument(
        "--model", help="model name in resources/models or a model folder (default: the LGG U-Net)"
    )
    p.add_argument("--mode", choices=["digital", "analog"], default="analog")
    p.add_argument("--mc", type=_mc, default=8, help=f"Monte-Carlo samples (chips) per slice, 1..{MAX_MC}")
    p.add_argument(
        "--noise",
        type=_noise,
        default=1.0,
        help=f"device noise level: 0 ideal, 1 nominal PCM, up to {MAX_NOISE_LEVEL:g}",
    )
    p.add_argument(
        "--drift", type=_positive_drift, default=3600.0, help="seconds from programming to inference"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channel", type=int, default=None, help="channel or time point of a 4D scan")
    p.add_argument(
        "--series",
        metavar="UID",
        help="SeriesInstanceUID to read from a DICOM folder of several series (default: the one with the "
        "most slices; a note on stderr lists the others)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("models", help="list the installed models")
    p.add_argument("--detail", metavar="NAME", help="show which layers of NAME run on analog tiles")
    p.add_argument(
        "--markdown", action="store_true", help="the measured test Dice of every model as a Markdown table"
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train a digital model or adapt one by hardware-aware training")
    p.add_argument("--data", required=True, help="MSD folder (dataset.json) or nuclei folder")
    p.add_argument("--arch", choices=["unet", "unetpp", "swinunetr"], default="unet")
    p.add_argument("--kind", choices=["digital", "hwa"], default="digital")
    p.add_argument(
        "--init",
        help="model to start from: the digital model an HWA model adapts, or, for --kind "
        "digital, a shipped digital model trained further (a second round, warm-restarted schedule)",
    )
    p.add_argument("--lr", type=float, help="initial learning rate (default: 1e-3 digital, 2e-4 HWA)")
    p.add_argument("--out", required=True, help="model folder to write, e.g. resources/models/NAME")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=120.0)
    p.add_argument(
        "--size", type=int, help="square input size of a new model (default: the preset's, 128 for LGG)"
    )
    p.add_argument(
        "--context", type=int, default=0, help="2.5D: neighbouring slices on each side fed as channels"
    )
    p.add_argument("--augment", choices=["standard", "strong"], default="standard")
    p.add_argument("--loss", choices=["dicece", "dicefocal"], default="dicece")
    p.add_argument(
        "--arch-args",
        type=json.loads,
        help="JSON overriding the default widths, e.g. '{\"features\": [28, 28, 56, 112, 224, 28]}'",
    )
    p.add_argument(
        "--patience", type=int, help="stop when validation Dice has not improved for this many epochs"
    )
    p.add_argument("--crop", type=int, help="train on random CROP x CROP patches of the slices")
    p.add_argument(
        "--crop-foreground", type=float, default=1 / 3, help="share of patches centred on a lesion pixel"
    )
    p.add_argument("--runs-dir", default="runs", help="where checkpoints and the log go (resumed from there)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("postprocess", help="choose a model's post-processing on its validation split")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the data set folder the model was trained on")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_postprocess)

    p = sub.add_parser("evaluate", help="Dice and uncertainty of a model on a split of its data set")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the data set folder the model was trained on")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--mode", choices=["digital", "analog"], default="digital")
    p.add_argument("--mc", type=_mc, default=8)
    p.add_argument("--noise", type=_noise, default=1.0)
    p.add_argument("--drift", type=_positive_drift, default=86400.0)
    p.add_argument("--programmings", type=int, default=3, help="chip programmings (seeds) in analog mode")
    p.add_argument("--json", help="write the report (with per-case rows) to this file")
    p.add_argument("--record", action="store_true", help="store the summary in the model's model.json")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="measure the paper's claims on the test splits (long; resumable)")
    p.add_argument("--out", default="reports")
    p.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "data"),
        help="folder holding the data sets: lgg/ (required), hippocampus/, nuclei/",
    )
    p.add_argument("--programmings", type=int, default=5, help="chip programmings per noise level")
    p.add_argument("--mc", type=_mc, default=16, help="Monte-Carlo samples for the uncertainty claims")
    p.add_argument("--limit", type=int, default=None, help="only the first N test patients (a quick look)")
    p.add_argument(
        "--workers", type=int, default=1, help="measurements run at once (one process, one thread each)"
    )
    p.add_argument(
        "--from-measurements",
        action="store_true",
        help="measure nothing slow: write the report from OUT/measurements/ as far as it goes",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="time digital, aihwkit's tile and the fast analog path side by side")
    p.add_argument("--json", default="out/bench.json", help="where to write the results as JSON")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per architecture")
    p.add_argument(
        "--arch", nargs="+", choices=["unet", "unetpp", "swinunetr"], default=["unet", "unetpp", "swinunetr"]
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from engine.model_store import ModelError
    from engine.volume import ScanError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ScanError, ModelError, ValueError) as exc:
        print(f"aimc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aimc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
