"""`aimc`: the command line of the product (predict, models, train, evaluate, report, bench).

Errors in the user's input end with one line on stderr and exit status 2, never a traceback.
Arguments are checked here, before anything heavy loads: torch, aihwkit and MONAI are imported only by
the commands that run a network, so `aimc --help` and `aimc models` start at once (`aimc bench`
measures it). `train` and `evaluate` live in `training/` and are imported only when asked for.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from cli.batch import add_batch_options, add_executor_options
from cli.device_option import add_device_option
from engine.compute_device import use_device
from engine.run_settings import MAX_DRIFT_S, MAX_MC, MAX_NOISE_LEVEL, MAX_SEED, MIN_DRIFT_S

if TYPE_CHECKING:
    from engine.analog.device import DeviceSettings
    from engine.run_settings import RunSettings


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


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be within 0..{MAX_SEED}")
    return value


def _channel(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("channel must be 0 or more")
    return value


def _folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name the output folder")
    return text


def predict_settings(args: argparse.Namespace, model: str) -> RunSettings:
    """The run settings `aimc predict` was given, for one scan or a batch."""
    from engine.run_settings import RunSettings

    return RunSettings(
        model=model,
        mode=args.mode,
        mc_samples=args.mc,
        noise_level=args.noise,
        drift_s=args.drift,
        seed=args.seed,
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from cli.batch import is_batch, predict_batch

    try:
        batch = args.series is None and is_batch(args)  # a chosen series is one scan of its folder
    except OSError:  # a name the system refuses (too long): `predict` says so in one line
        batch = False
    if batch:
        return predict_batch(args)
    from cli.predict import predict

    args.scan = args.scan[0]
    return predict(args)


def cmd_models(args: argparse.Namespace) -> int:
    from engine.model_store import NOMINAL_CHIPS, find_model, scan_models

    if args.detail:
        spec = find_model(args.detail)
        print(model_card_text(spec))
        if args.layers:
            print_layers(spec)
        return 0
    specs, broken = scan_models()
    if not specs and not broken:
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
        print(
            f"{'':28s} {s.card.summary() if s.card is not None else 'no model card: its fit is not checked'}"
        )
    for name, problem in broken.items():
        print(f"{name:28s} BROKEN: {problem}")
    return 0


def model_card_text(spec) -> str:  # spec: engine.model_store.ModelSpec
    """`aimc models --detail`: what the model is for, its labels, its training domain and calibration."""
    from engine.model_card import QUANTILES

    labels = ", ".join(f"{label.value} {label.name}" for label in spec.labels)
    size = "x".join(map(str, spec.preprocessing.input_size))
    lines = [
        f"{spec.name}: {spec.architecture} ({spec.kind}), {spec.preprocessing.slice_axis} slices at {size}",
        f"labels: {labels}",
    ]
    card = spec.card
    if card is None:
        lines.append("card: none (the model gate cannot check which scans it fits)")
    else:
        lines.append(f"card: {card.summary()}")
        domain = card.training_domain
        if domain is not None:
            lines.append(
                "training domain: intensity percentiles "
                + ", ".join(f"{q}%: {r}" for q, r in zip(QUANTILES, domain.quantiles, strict=True))
                + f"; share of negative voxels {domain.negative_fraction}"
            )
    calibrated = ", ".join(sorted(spec.trust)) or "none"
    lines.append(f"trust calibration (case verdict): {calibrated}")
    lines.append("layers on analog tiles: aimc models --detail NAME --layers")
    return "\n".join(lines)


def print_layers(spec) -> None:  # spec: engine.model_store.ModelSpec
    """Which layers run on analog tiles and which stay digital (builds the network: loads torch)."""
    from engine.analog.conversion import layer_report, to_analog

    rows = layer_report(to_analog(spec.build(), spec.device))
    print(f"{'layer':60s} {'type':22s} {'weights':>9s}  runs on")
    for r in rows:
        print(f"{r.name:60s} {r.kind:22s} {r.parameters:9d}  {'analog tiles' if r.on_tiles else 'digital'}")
    on = sum(r.parameters for r in rows if r.on_tiles)
    total = sum(r.parameters for r in rows)
    print(
        f"{on} of {total} weights on analog tiles; digital: "
        f"{', '.join(sorted({r.kind for r in rows if not r.on_tiles})) or 'none'}"
    )


def models_markdown(specs: list) -> str:
    """The README's table of shipped models, straight from each model.json (no numbers typed by hand).

    An HWA model's drop is against its digital counterpart (`training.init`) run digitally, as the
    quality bar reads; a digital model's drop is its own, digital against analog. When the counterpart
    has been replaced since (`training.init_weights` is not its weights' hash), against the test Dice
    its start had (`training.init_test_dice`), if recorded.
    """
    from engine.model_store import NOMINAL_CHIPS, weights_hash

    by_name = {s.name: s for s in specs}

    lines = [
        "| model | data | training | test Dice digital | analog (noise 1, 1 day) | drop |",
        "|---|---|---|---|---|---|",
    ]
    for s in specs:
        t = s.training
        size = "x".join(map(str, s.preprocessing.input_size))
        if t.get("patch"):
            size += f" ({t['patch']}x{t['patch']} patches)"
        if s.preprocessing.context:
            size += f", 2.5D ({2 * s.preprocessing.context + 1} slices)"
        how = f"{t.get('epochs_run', '?')} epochs, {size}, {t.get('wall_time_s', 0) / 60:.0f} min" + (
            f", from `{t['init']}`" if t.get("init") else ""
        )
        dig = s.test_metrics("digital").get("mean_dice")
        ana = s.test_metrics(NOMINAL_CHIPS)
        base = by_name.get(t.get("init") or s.name)
        ref = base.test_metrics("digital").get("mean_dice") if base else None
        if t.get("init") and base and t.get("init_weights") not in (None, weights_hash(base)):
            # trained from weights of that name that have been replaced since: its own start's Dice
            how += " (weights since replaced)"
            ref = t.get("init_test_dice")
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
        loader_workers=args.loader_workers,
        settings=_hwa_settings(args),
    )
    return 0


def _hwa_settings(args: argparse.Namespace) -> DeviceSettings | None:
    """The device settings of an HWA training; None keeps every default of DeviceSettings."""
    from engine.analog.device import DeviceSettings

    changes = {
        name: value
        for name, value in (("train_clip_sigma", args.clip_sigma), ("train_weight_noise", args.weight_noise))
        if value is not None
    }
    return DeviceSettings(**changes) if changes else None


def cmd_postprocess(args: argparse.Namespace) -> int:
    from engine.model_store import find_model
    from training.postprocessing import choose_postprocessing

    choose_postprocessing(find_model(args.model), Path(args.data), progress=not args.quiet)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cli.batch import executor_of
    from engine.export import write_json
    from training.evaluate import evaluate, print_report

    with executor_of(args) as executor:
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
            executor=executor,
        )
    print_report(report)
    if args.json:
        write_json(report, Path(args.json))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from cli.benchmark import run_benchmark

    run_benchmark(
        Path(args.json),
        rounds=args.rounds,
        archs=tuple(args.arch),
        threads=args.threads,
        cold_start_only=args.cold_start,
        batch=tuple(args.batch),
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cli.batch import executor_of
    from engine.executor import Executor
    from training.report.build import write_report

    with Executor(0) if args.from_measurements else executor_of(args) as executor:
        path = write_report(
            Path(args.out),
            Path(args.data),
            args.programmings,
            args.mc,
            args.limit,
            not args.quiet,
            executor,
            measure=not args.from_measurements,
            claim_programmings=args.claim_programmings,
        )
    print(f"wrote {path}")
    return 0


class _Parser(argparse.ArgumentParser):
    """A wrong argument is one line on stderr and exit status 2 (argparse would print the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aimc",
        description="AI segmentation with uncertainty on simulated analog in-memory computing chips",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="segment scans and write seg, uncertainty, probability and a summary")
    p.add_argument(
        "scan",
        nargs="+",
        help="NIfTI file, MHA/MHD, NRRD, a DICOM folder, a PNG, TIFF or JPEG image; for a batch: "
        "several, a glob, a folder of scans or DICOM series, an MSD dataset.json, or a text/CSV list "
        "(one output folder per case)",
    )
    p.add_argument(
        "--model",
        help="model name in resources/models or a model folder (default: the installed model that fits "
        "the scan, chosen as the viewer chooses)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="run --model even if it does not fit the scan (the result is marked outside its domain)",
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
    p.add_argument("--seed", type=_seed, default=0, help=f"chip programming and read seed, 0..{MAX_SEED}")
    p.add_argument(
        "--channel",
        type=_channel,
        default=None,
        help="channel or time point of a 4D scan, or of a colour image",
    )
    p.add_argument("--out", required=True, type=_folder, help="output folder")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in the output folder that aimc did not write (or that were changed since); "
        "in a batch, also redo the cases whose outputs are already complete",
    )
    p.add_argument(
        "--format",
        action="append",
        metavar="FORMATS",
        help="nifti (default), dicom-seg (SEG + parametric map + fractional SEG; DICOM scans only), "
        "seg-nrrd (3D Slicer); repeat or separate with commas",
    )
    p.add_argument(
        "--series",
        metavar="UID",
        help="SeriesInstanceUID to read from a DICOM folder of several series (default: the one with the "
        "most slices; a note on stderr lists the others)",
    )
    p.add_argument("--quiet", action="store_true")
    add_batch_options(p)
    add_device_option(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("models", help="list the installed models")
    p.add_argument("--detail", metavar="NAME", help="the model card of NAME: what it is for, labels, domain")
    p.add_argument(
        "--layers", action="store_true", help="with --detail: which layers run on analog tiles (loads torch)"
    )
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
    p.add_argument(
        "--loader-workers",
        type=int,
        choices=[0, 1],
        default=0,
        help="1: augment the next batch in a worker process while this one trains (the same batches)",
    )
    p.add_argument(
        "--clip-sigma",
        type=float,
        help="HWA: clip each layer's weights at this many standard deviations after every step (default 2.5)",
    )
    p.add_argument(
        "--weight-noise",
        type=float,
        help="HWA: std of the weight noise added in each training forward, relative to the largest "
        "weight (default 0.08)",
    )
    add_device_option(p)
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
    add_executor_options(p)
    add_device_option(p)
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
    p.add_argument(
        "--claim-programmings",
        type=int,
        default=10,
        help="chip programmings per model and drift for the claims' bootstrap intervals",
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N test patients (a quick look)")
    add_executor_options(p)
    p.add_argument(
        "--from-measurements",
        action="store_true",
        help="measure nothing slow: write the report from OUT/measurements/ as far as it goes",
    )
    p.add_argument("--quiet", action="store_true")
    add_device_option(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="time digital, aihwkit's tile and the fast analog path side by side")
    p.add_argument("--json", default="out/bench.json", help="where to write the results as JSON")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per architecture")
    p.add_argument(
        "--arch", nargs="+", choices=["unet", "unetpp", "swinunetr"], default=["unet", "unetpp", "swinunetr"]
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    p.add_argument(
        "--cold-start", action="store_true", help="only the cold start of the command line (seconds)"
    )
    p.add_argument(
        "--batch",
        nargs="*",
        choices=["digital", "analog"],
        default=["digital"],
        help="modes of the 10-scan batch rows (serial, 1 and 2 Dask workers; analog at MC 4); none: skip",
    )
    add_device_option(p)
    p.set_defaults(func=cmd_bench)
    return parser


# The errors that are the user's to fix: one line, exit status 2.
_USER_ERRORS = (
    ("engine.volume", "ScanError"),
    ("engine.model_store", "ModelError"),
    ("engine.files", "OutputError"),
)


def _for_the_user(exc: Exception) -> bool:
    """Whether `exc` is one of `_USER_ERRORS` (or a ValueError). The classes are looked up in the modules
    already loaded: a module never imported raised nothing, and importing engine.volume for its
    ScanError alone would load nibabel and pydicom for every command."""
    kinds = tuple(
        getattr(sys.modules[module], name) for module, name in _USER_ERRORS if module in sys.modules
    )
    return isinstance(exc, (ValueError, *kinds))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # --help and wrong arguments end here, having loaded nothing
    use_device(getattr(args, "device", None))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("aimc: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _for_the_user(exc):
            raise
        message = str(exc).encode("utf-8", "backslashreplace").decode()  # names that are not UTF-8
        print(f"aimc: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
