"""`--device auto|cpu|cuda[:N]`: the one option that says where a command computes.

The choice becomes the process default (`engine.compute_device.use_device`), which every `Segmenter`,
chip set and training run of the command, and the processes it starts, then use. Checked without
importing torch, so a typo costs no start-up time.
"""

from __future__ import annotations

import argparse

from engine.compute_device import CHOICES, DeviceError, parse_device


def _device(text: str) -> str:
    try:
        return parse_device(text)
    except DeviceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """Add `--device` to a command's parser; `main` applies it with `use_device(args.device)`."""
    parser.add_argument(
        "--device",
        type=_device,
        default=None,
        metavar="DEVICE",
        help=f"where to compute: {CHOICES} (default: $AIMC_DEVICE, else auto: a GPU when torch sees one)",
    )
