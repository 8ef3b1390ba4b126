"""Choose a model's post-processing on its validation split, the way nnU-Net does.

For each foreground label, cutting it to its large 3D connected components is adopted when it
raises the label's mean per-case Dice on the validation patients (never the test ones). "Large" is
the largest alone, or every component of at least a fraction of the largest's size
(`FRACTIONS`): the fraction with the best validation Dice, the largest-only rule on a tie. The
choice and the validation numbers behind it go into `model.json`; `engine.postprocessing` applies
it wherever a whole volume is segmented (viewer, `aimc predict`, evaluation, report).
Left-right mirror averaging (`ModelSpec.flip_average`) is chosen the same way, each setting with its own
best post-processing; it is adopted when it gains at least `FLIP_MIN_GAIN`.
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


def _validation_dice(
    spec: ModelSpec, cases: list, flip: bool, progress: bool
) -> tuple[dict[int, list[float]], dict[float, dict[int, list[float]]]]:
    """Per-case Dice of each foreground label on the validation cases, as predicted and cut at each of
    `FRACTIONS`, from the exact (noise-free) read: the choice is about anatomy, not about one noisy chip."""
    raw_spec = dataclasses.replace(spec, keep_largest=[], flip_average=flip)
    segmenter = Segmenter(
        raw_spec,
        RunSettings(model=spec.name, mode=Mode.DIGITAL, mc_samples=1, noise_level=0.0, drift_s=0.0, seed=0),
    )
    labels = range(1, spec.num_classes)
    raw: dict[int, list[float]] = {c: [] for c in labels}
    cut: dict[float, dict[int, list[float]]] = {f: {c: [] for c in labels} for f in FRACTIONS}
    what = "with mirror averaging" if flip else "post-processing"
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
    """Pick the labels to cut to their large components, the fraction, and whether to average each read
    with its mirror's, from validation Dice; record them in model.json."""
    layout, cases = cases_of_split(spec, data, "val")
    if layout == "nuclei":
        spec.keep_largest, spec.component_fraction, spec.flip_average = [], 1.0, False
        return spec.keep_largest
    labels = range(1, spec.num_classes)
    measured = {flip: _validation_dice(spec, cases, flip, progress) for flip in (False, True)}

    def score(flip: bool, f: float) -> float:
        raw, cut = measured[flip]
        return float(np.mean([max(np.mean(cut[f][c]), np.mean(raw[c])) for c in labels]))

    best = {flip: max(score(flip, f) for f in FRACTIONS) for flip in measured}
    spec.flip_average = best[True] >= best[False] + FLIP_MIN_GAIN
    raw, cut = measured[spec.flip_average]
    fraction = max(FRACTIONS, key=lambda f: (score(spec.flip_average, f), f))  # a tie: the larger fraction
    spec.keep_largest = [c for c in labels if np.mean(cut[fraction][c]) > np.mean(raw[c])]
    spec.component_fraction = fraction if spec.keep_largest else 1.0
    val = spec.metrics.setdefault("val", {})
    val["postprocessing"] = {
        str(c): {
            "dice_raw": float(np.mean(raw[c])),
            "dice_largest_component": float(np.mean(cut[1.0][c])),
            **{f"dice_components_of_fraction_{f:g}": float(np.mean(cut[f][c])) for f in FRACTIONS[1:]},
        }
        for c in labels
    }
    val["flip_average"] = {"dice_plain": best[False], "dice_flip_average": best[True]}
    log(
        f"{spec.name}: val Dice {best[False]:.4f} read as it is, {best[True]:.4f} averaged with the mirror "
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
