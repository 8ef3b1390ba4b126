"""Choose a model's post-processing on its validation split, the way nnU-Net does.

For each foreground label, cutting it to its large 3D connected components is adopted when it
raises the label's mean per-case Dice on the validation patients (never the test ones). "Large" is
the largest alone, or every component of at least a fraction of the largest's size
(`FRACTIONS`): the fraction with the best validation Dice, the largest-only rule on a tie. The
choice and the validation numbers behind it go into `model.json`; `engine.postprocessing` applies
it wherever a whole volume is segmented (viewer, `aimc predict`, evaluation, report).
How to read the slices is chosen the same way, each reading with its own best post-processing: first,
for a model trained on patches smaller than its slices, whether to read by windows of the patch's size
(`ModelSpec.sliding_window`, adopted when it gains at least `WINDOW_MIN_GAIN`), then, under that choice,
whether to average each read with its left-right mirror's (`ModelSpec.flip_average`, `FLIP_MIN_GAIN`).
Microscopy images hold many separate nuclei, so 2D nucleus models are left as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.inference import Segmenter
from engine.metrics import dice_per_label
from engine.model_store import ModelSpec, write_spec
from engine.pipeline import segment_volume
from engine.postprocessing import keep_large_components
from engine.run_settings import Mode, RunSettings
from engine.volume import load_scan
from training.evaluate import cases_of_split

# Shares of the largest component's size down to which components are kept; 1.0: the largest only.
FRACTIONS = (1.0, 0.5, 0.2, 0.1)
# Averaging each read with its mirror's doubles every read (and every chip read): adopted only when it
# raises the best post-processed mean validation Dice by at least this much (fixed before the round-2
# models were measured with it).
FLIP_MIN_GAIN = 0.01
# Reading a 256 slice by 128 windows at MONAI's overlap reads 2.25x its pixels: the same bar as the mirror's.
WINDOW_MIN_GAIN = 0.01

# How a model reads a slice: by windows of this size (None: whole), and whether mirror-averaged.
Reading = tuple[tuple[int, int] | None, bool]


def patch_window(spec: ModelSpec) -> tuple[int, int] | None:
    """The window of the patches the model was trained on, if smaller than the slices it reads."""
    patch = spec.training.get("patch")
    size = spec.preprocessing.input_size
    if patch is None or all(patch >= n for n in size):
        return None
    return (min(patch, size[0]), min(patch, size[1]))


def _validation_dice(
    spec: ModelSpec, cases: list, reading: Reading, progress: bool
) -> tuple[dict[int, list[float]], dict[float, dict[int, list[float]]]]:
    """Per-case Dice of each foreground label on the validation cases, as predicted and cut at each of
    `FRACTIONS`, from the exact (noise-free) read: the choice is about anatomy, not about one noisy chip."""
    window, flip = reading
    raw_spec = dataclasses.replace(spec, keep_largest=[], flip_average=flip, sliding_window=window)
    segmenter = Segmenter(
        raw_spec,
        RunSettings(model=spec.name, mode=Mode.DIGITAL, mc_samples=1, noise_level=0.0, drift_s=0.0, seed=0),
    )
    labels = range(1, spec.num_classes)
    raw: dict[int, list[float]] = {c: [] for c in labels}
    cut: dict[float, dict[int, list[float]]] = {f: {c: [] for c in labels} for f in FRACTIONS}
    what = " ".join(
        ["post-processing"]
        + ([f"by {window[0]}x{window[1]} windows"] if window else [])
        + (["mirrored"] if flip else [])
    )
    for case in tqdm(cases, desc=f"{spec.name} {what} on val", disable=not progress, leave=False):
        truth = np.rint(load_scan(case.label).data).astype(np.int64)
        labels_map = segment_volume(segmenter, load_scan(case.image)).segmentation  # as predicted
        before = dice_per_label(labels_map, truth, spec.num_classes)
        for c in labels:
            raw[c].append(before[c])
            for f in FRACTIONS:
                after = keep_large_components(labels_map, [c], f)
                cut[f][c].append(dice_per_label(after, truth, spec.num_classes)[c])
    return raw, cut


def choose_postprocessing(
    spec: ModelSpec, data: Path, progress: bool = True, log: Callable[[str], object] = print
) -> list[int]:
    """Pick the labels to cut to their large components, the fraction, whether to read by windows and
    whether to average each read with its mirror's, from validation Dice; record them in model.json."""
    layout, cases = cases_of_split(spec, data, "val")
    if layout == "nuclei":
        spec.keep_largest, spec.component_fraction = [], 1.0
        spec.flip_average, spec.sliding_window = False, None
        return spec.keep_largest
    labels = range(1, spec.num_classes)
    measured: dict[Reading, tuple] = {}

    def best(reading: Reading) -> float:
        if reading not in measured:
            measured[reading] = _validation_dice(spec, cases, reading, progress)
        return max(score(reading, f) for f in FRACTIONS)

    def score(reading: Reading, f: float) -> float:
        raw, cut = measured[reading]
        return float(np.mean([max(np.mean(cut[f][c]), np.mean(raw[c])) for c in labels]))

    val = spec.metrics.setdefault("val", {})
    window = patch_window(spec)
    val.pop("sliding_window", None)
    if window is not None:
        whole, windows = best((None, False)), best((window, False))
        adopted = windows >= whole + WINDOW_MIN_GAIN
        val["sliding_window"] = {"window": list(window), "dice_whole": whole, "dice_windows": windows}
        log(
            f"{spec.name}: val Dice {whole:.4f} read whole, {windows:.4f} by {window[0]}x{window[1]} windows "
            f"(each best post-processed) -> {'windows' if adopted else 'whole'}"
        )
        window = window if adopted else None
    spec.sliding_window = window
    plain, mirrored = best((window, False)), best((window, True))
    spec.flip_average = mirrored >= plain + FLIP_MIN_GAIN
    chosen = (window, spec.flip_average)
    raw, cut = measured[chosen]
    fraction = max(FRACTIONS, key=lambda f: (score(chosen, f), f))  # a tie: the larger fraction
    spec.keep_largest = [c for c in labels if np.mean(cut[fraction][c]) > np.mean(raw[c])]
    spec.component_fraction = fraction if spec.keep_largest else 1.0
    val["postprocessing"] = {
        str(c): {
            "dice_raw": float(np.mean(raw[c])),
            "dice_largest_component": float(np.mean(cut[1.0][c])),
            **{f"dice_components_of_fraction_{f:g}": float(np.mean(cut[f][c])) for f in FRACTIONS[1:]},
        }
        for c in labels
    }
    val["flip_average"] = {"dice_plain": plain, "dice_flip_average": mirrored}
    log(
        f"{spec.name}: val Dice {plain:.4f} read as it is, {mirrored:.4f} averaged with the mirror "
        f"(each best post-processed) -> {'average' if spec.flip_average else 'read as it is'}"
    )
    for c in labels:
        tried = ", ".join(f"{np.mean(cut[f][c]):.4f} down to {f:g} of the largest" for f in FRACTIONS[1:])
        choice = (
            f"keep its components of {spec.component_fraction:g} of the largest's size"
            if c in spec.keep_largest
            else "leave as predicted"
        )
        log(
            f"{spec.name} label {c}: val Dice {np.mean(raw[c]):.4f} as predicted, "
            f"{np.mean(cut[1.0][c]):.4f} with its largest component only, {tried} -> {choice}"
        )
    if spec.folder is not None:
        write_spec(spec, spec.folder)
    return spec.keep_largest
