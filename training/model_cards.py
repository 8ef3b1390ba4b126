"""Model cards measured from the data: what each model is for and the domain of its training scans.

The facts a scan file cannot tell (modality, MR sequence, body part) come from the data set's own
description (../shared/data/README.md); the ranges of geometry and intensity are measured on the
model's training split, never typed by hand. Training writes the card of a new model; this module's
`main` is the migration that gave the earlier models theirs:

    python -m training.model_cards --data ../shared/data [--model NAME ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engine.model_card import ModelCard, ScanStatistics, TrainingDomain
from engine.model_store import ModelSpec, find_model, list_models, write_spec
from engine.volume import Volume, load_scan
from training.data import Case
from training.evaluate import cases_of_split

# Per data set (the name a model records in data.dataset): what the scans are, from the data set's README.
DATASET_FACTS: dict[str, ModelCard] = {
    "lgg": ModelCard(
        modality="MR",
        sequence="FLAIR",
        body_part="BRAIN",
        dimensionality="3D",
        description="brain MRI, FLAIR (lower-grade glioma)",
    ),
    "hippocampus": ModelCard(
        modality="MR",
        sequence="T1",
        body_part="BRAIN",
        dimensionality="3D",
        description="brain MRI, T1, cropped around the hippocampus",
    ),
    "nuclei": ModelCard(
        modality="SM",
        body_part="",
        dimensionality="2D",
        description="fluorescence or brightfield microscopy of cell nuclei",
    ),
    "spleen": ModelCard(modality="CT", body_part="ABDOMEN", dimensionality="3D", description="abdominal CT"),
}


def image_as_volume(path: Path) -> Volume:
    """A 2D microscopy image as a one-slice volume of grey levels (the mean of its colour channels)."""
    from skimage.io import imread

    pixels = imread(path)
    grey = pixels[..., :3].mean(axis=-1) if pixels.ndim == 3 else pixels
    return Volume(np.asarray(grey, np.float32).T[:, ::-1, None].copy(), np.eye(4), str(path))


def scan_of(case: Case, layout: str) -> Volume:
    return image_as_volume(case.image) if layout == "nuclei" else load_scan(case.image)


def card_for(spec: ModelSpec, data: Path) -> ModelCard:
    """The card of `spec`: its data set's facts and the domain measured on its training split."""
    dataset = spec.data.get("dataset", "")
    if dataset not in DATASET_FACTS:
        raise ValueError(
            f"{spec.name}: no facts recorded for data set {dataset!r}; known: {', '.join(DATASET_FACTS)}"
        )
    layout, cases = cases_of_split(spec, data, "train")
    axis = spec.preprocessing.slice_axis
    stats = [ScanStatistics.of(scan_of(c, layout), axis) for c in cases]
    facts = DATASET_FACTS[dataset]
    return ModelCard(
        modality=facts.modality,
        sequence=facts.sequence,
        body_part=facts.body_part,
        dimensionality=facts.dimensionality,
        description=facts.description,
        training_domain=TrainingDomain.of(stats),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding one folder per data set")
    parser.add_argument("--model", nargs="*", help="models to update (default: every installed model)")
    args = parser.parse_args(argv)
    specs = [find_model(m) for m in args.model] if args.model else list_models()
    for spec in specs:
        spec.card = card_for(spec, args.data / spec.data["dataset"])
        write_spec(spec, spec.folder)
        print(f"{spec.name}: {spec.card.summary()}")


if __name__ == "__main__":
    main()
