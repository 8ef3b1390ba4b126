"""Choose a model's post-processing on its validation split, the way nnU-Net does.

For each foreground label, cutting it to its large 3D connected components is adopted when it
raises the label's mean per-case Dice on the validation patients (never the test ones). "Large" is
the largest alone, or every component of at least a fraction of the largest's size
(`FRACTIONS`): the fraction with the best validation Dice, the largest-only rule on a tie. The
choice and the validation numbers behind it go into `model.json`; `engine.postprocessing` applies
it wherever a whole volume is segmented (viewer, `aimc predict`, evaluation, report).
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


def choose_postprocessing(
    spec: ModelSpec, data: Path, progress: bool = True, log: Callable[[str], object] = print
) -> list[int]:
    """Pick the labels to cut to their large components, and the fraction, from validation Dice;
    record them in model.json."""
    layout, cases = cases_of_split(spec, data, "val")
    if layout == "nuclei":
        spec.keep_largest, spec.component_fraction = [], 1.0
        return spec.keep_largest
    # The exact (noise-free) read: the choice is about anatomy, not about one noisy chip.
    raw_spec = dataclasses.replace(spec, keep_largest=[])
    segmenter = Segmenter(
        raw_spec,
        RunSettings(model=spec.name, mode=Mode.DIGITAL, mc_samples=1, noise_level=0.0, drift_s=0.0, seed=0),
    )
    labels = range(1, spec.num_classes)
    raw: dict[int, list[float]] = {c: [] for c in labels}
    cut: dict[float, dict[int, list[float]]] = {f: {c: [] for c in labels} for f in FRACTIONS}
    for case in tqdm(cases, desc=f"{spec.name} post-processing on val", disable=not progress, leave=False):
        truth = np.rint(load_scan(case.label).data).astype(np.int64)
        labels_map = segment_volume(segmenter, load_scan(case.image)).segmentation  # as predicted
        before = dice_per_label(labels_map, truth, spec.num_classes)
        for c in labels:
            raw[c].append(before[c])
            for f in FRACTIONS:
                after = keep_large_components(labels_map, [c], f)
                cut[f][c].append(dice_per_label(after, truth, spec.num_classes)[c])

    def adopted(f: float) -> list[int]:
        return [c for c in labels if np.mean(cut[f][c]) > np.mean(raw[c])]

    def score(f: float) -> float:
        return float(np.mean([max(np.mean(cut[f][c]), np.mean(raw[c])) for c in labels]))

    fraction = max(FRACTIONS, key=lambda f: (score(f), f))  # a tie goes to the larger fraction
    spec.keep_largest, spec.component_fraction = adopted(fraction), fraction
    if not spec.keep_largest:
        spec.component_fraction = 1.0
    spec.metrics.setdefault("val", {})["postprocessing"] = {
        str(c): {
            "dice_raw": float(np.mean(raw[c])),
            "dice_largest_component": float(np.mean(cut[1.0][c])),
            **{f"dice_components_of_fraction_{f:g}": float(np.mean(cut[f][c])) for f in FRACTIONS[1:]},
        }
        for c in labels
    }
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
