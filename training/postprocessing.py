"""Choose a model's post-processing on its validation split, the way nnU-Net does.

For each foreground label, keeping only its largest 3D connected component is adopted when it
raises the label's mean per-case Dice on the validation patients (never the test ones). The
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
from engine.postprocessing import keep_largest_component
from engine.run_settings import Mode, RunSettings
from engine.volume import load_scan
from training.evaluate import cases_of_split


def choose_postprocessing(
    spec: ModelSpec, data: Path, progress: bool = True, log: Callable[[str], object] = print
) -> list[int]:
    """Pick the labels to cut to their largest component from validation Dice; record it in model.json."""
    layout, cases = cases_of_split(spec, data, "val")
    if layout == "nuclei":
        spec.keep_largest = []
        return spec.keep_largest
    # The exact (noise-free) read: the choice is about anatomy, not about one noisy chip.
    raw_spec = dataclasses.replace(spec, keep_largest=[])
    segmenter = Segmenter(
        raw_spec,
        RunSettings(model=spec.name, mode=Mode.DIGITAL, mc_samples=1, noise_level=0.0, drift_s=0.0, seed=0),
    )
    labels = range(1, spec.num_classes)
    raw: dict[int, list[float]] = {c: [] for c in labels}
    cut: dict[int, list[float]] = {c: [] for c in labels}
    for case in tqdm(cases, desc=f"{spec.name} post-processing on val", disable=not progress, leave=False):
        truth = np.rint(load_scan(case.label).data).astype(np.int64)
        labels_map = segment_volume(segmenter, load_scan(case.image)).segmentation  # as predicted
        before = dice_per_label(labels_map, truth, spec.num_classes)
        for c in labels:
            raw[c].append(before[c])
            cut[c].append(dice_per_label(keep_largest_component(labels_map, [c]), truth, spec.num_classes)[c])
    spec.keep_largest = [c for c in labels if np.mean(cut[c]) > np.mean(raw[c])]
    spec.metrics.setdefault("val", {})["postprocessing"] = {
        str(c): {"dice_raw": float(np.mean(raw[c])), "dice_largest_component": float(np.mean(cut[c]))}
        for c in labels
    }
    for c in labels:
        choice = "keep largest component" if c in spec.keep_largest else "leave as predicted"
        log(
            f"{spec.name} label {c}: val Dice {np.mean(raw[c]):.4f} as predicted, "
            f"{np.mean(cut[c]):.4f} with its largest component only -> {choice}"
        )
    if spec.folder is not None:
        write_spec(spec, spec.folder)
    return spec.keep_largest
