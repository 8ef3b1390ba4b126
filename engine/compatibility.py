"""Does a model fit a scan? The gate that keeps a brain-FLAIR model off an abdominal CT.

Evidence in order of strength:
1. the scan's own metadata (DICOM Modality, BodyPartExamined, SeriesDescription) against the model card;
2. where a scan carries none (NIfTI, MHA), its geometry and intensities against the ranges of the
   model's training scans: dimensionality, in-plane size, slice count, voxel spacing, and negative
   intensities (Hounsfield units: CT) where the model never saw any.
Raw MR intensities are arbitrary units that differ by scanner, so they are not a reason to refuse a
model here; they feed the out-of-distribution score of a run instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.images2d import is_planar
from engine.model_card import ModelCard, ScanStatistics
from engine.model_store import ModelError, ModelSpec
from engine.volume import Volume

SIZE_SLACK = 2.0  # a scan may be up to this factor smaller or larger than any training scan
NEGATIVE_LIMIT = 0.05  # more than this fraction of negative voxels: CT-like, if the model never saw them
_SAME_BODY_PART = ({"BRAIN", "HEAD", "SKULL", "HEADNECK"}, {"ABDOMEN", "ABDOMENPELVIS", "SPLEEN", "LIVER"})
_SEQUENCES = ("FLAIR", "T1", "T2", "DWI", "ADC", "SWI", "PD")
_UNKNOWN = {"", "UNKNOWN", "OT"}


@dataclass(frozen=True)
class Fit:
    """The verdict for one (scan, model) pair, with the reasons a reader is shown."""

    model: str
    fits: bool
    by_metadata: bool  # the scan's metadata confirmed or refuted it (stronger than statistics)
    reasons: tuple[str, ...]

    def explain(self) -> str:
        return "; ".join(self.reasons)


def _body_part_matches(scan: str, model: str) -> bool:
    scan, model = scan.replace(" ", "").upper(), model.replace(" ", "").upper()
    return scan == model or any(scan in group and model in group for group in _SAME_BODY_PART)


def _sequence_of(description: str) -> set[str]:
    words = set(re.split(r"[^A-Z0-9]+", description.upper()))
    return {s for s in _SEQUENCES if s in words or (s == "FLAIR" and "FLAIR" in description.upper())}


def _metadata(volume: Volume, card: ModelCard) -> tuple[bool | None, list[str]]:
    """(True, False or None = no metadata to judge by, reasons) from the DICOM attributes a scan carries."""
    reasons: list[str] = []
    verdict: bool | None = None
    modality = volume.modality.strip().upper()
    if modality not in _UNKNOWN:
        if modality != card.modality:
            return False, [f"the scan is {modality}; the model reads {card.modality}"]
        verdict, reasons = True, [f"modality {modality}"]
    part = str(volume.meta.get("body_part", "")).strip()
    if part and card.body_part:
        if not _body_part_matches(part, card.body_part):
            return False, [f"the scan shows {part}; the model was trained on {card.body_part}"]
        verdict, reasons = True, [*reasons, f"body part {part}"]
    found = _sequence_of(str(volume.meta.get("series_description", "")))
    if found and card.sequence:
        if card.sequence not in found:
            return False, [f"the series is {'/'.join(sorted(found))}; the model reads {card.sequence}"]
        verdict, reasons = True, [*reasons, f"sequence {card.sequence}"]
    return verdict, reasons


def _statistics(stats: ScanStatistics, card: ModelCard) -> list[str]:
    """What in the scan's geometry or intensities lies outside the model's training domain."""
    domain = card.training_domain
    if domain is None:
        return []
    problems = []
    side = max(stats.in_plane)
    if not domain.in_plane.low / SIZE_SLACK <= side <= domain.in_plane.high * SIZE_SLACK:
        problems.append(
            f"slices of {stats.in_plane[0]}x{stats.in_plane[1]} voxels; the model was trained on "
            f"{domain.in_plane} voxels"
        )
    if (
        card.dimensionality == "3D"
        and not domain.slices.low / SIZE_SLACK <= stats.slices <= domain.slices.high * SIZE_SLACK
    ):
        problems.append(f"{stats.slices} slices; the model was trained on {domain.slices}")
    if card.modality != "SM":  # microscopy pixel sizes are rarely recorded: 1 unit stands for unknown
        for name, value, rng in (
            ("in-plane spacing", stats.in_plane_spacing, domain.in_plane_spacing),
            ("slice spacing", stats.slice_spacing, domain.slice_spacing),
        ):
            if card.dimensionality == "3D" and not rng.low / SIZE_SLACK <= value <= rng.high * SIZE_SLACK:
                problems.append(f"{name} {value:.3g} mm; the model was trained on {rng} mm")
    if stats.negative_fraction > NEGATIVE_LIMIT and domain.negative_fraction.high < NEGATIVE_LIMIT / 5:
        problems.append(
            f"{100 * stats.negative_fraction:.0f}% of voxels are negative (CT-like); "
            "the model's training scans had none"
        )
    return problems


def dimensionality(volume: Volume) -> str:
    """ "2D" for an image (read from a 2D file, or one slice thick along any axis), "3D" for a volume."""
    return "2D" if is_planar(volume) or 1 in volume.shape else "3D"


def dimension_mismatch(volume: Volume, spec: ModelSpec) -> str | None:
    """Why `spec` cannot read `volume` as a 2D image or a 3D volume; None where they agree (or the
    model has no card to say). The one refusal no statistics can soften: a microscopy model on each
    slice of an MRI, or a brain model on a photograph, is not a reading of the scan; `aimc predict`
    refuses it unless forced."""
    if spec.card is None or (scan := dimensionality(volume)) == spec.card.dimensionality:
        return None
    what = "a 2D image" if scan == "2D" else "a 3D volume"
    return f"the scan is {what}; the model reads {spec.card.dimensionality} scans"


def dimension_refusal(volume: Volume, spec: ModelSpec, specs: list[ModelSpec]) -> str | None:
    """The one-line refusal of `spec` for `volume`, naming the installed models that read its kind."""
    mismatch = dimension_mismatch(volume, spec)
    if mismatch is None:
        return None
    others = [s.name for s in specs if dimension_mismatch(volume, s) is None and s.card is not None]
    hint = f"; models for it: {', '.join(others)}" if others else "; no installed model reads it"
    return f"{volume.source}: {mismatch} ({spec.name}){hint}; --force runs it anyway"


def assess(volume: Volume, spec: ModelSpec) -> Fit:
    """Whether `spec` fits `volume`, and why."""
    card = spec.card
    if card is None:
        return Fit(spec.name, True, False, ("the model has no card: its fit cannot be checked",))
    if mismatch := dimension_mismatch(volume, spec):
        return Fit(spec.name, False, False, (mismatch,))
    stats = ScanStatistics.of(volume, spec.preprocessing.slice_axis)
    verdict, reasons = _metadata(volume, card)
    if verdict is False:
        return Fit(spec.name, False, True, tuple(reasons))
    problems = _statistics(stats, card)
    if problems:
        return Fit(spec.name, False, verdict is True, tuple(problems))
    if verdict:
        return Fit(spec.name, True, True, (f"{', '.join(reasons)} as the model's training scans",))
    return Fit(
        spec.name,
        True,
        False,
        ("size, spacing and intensities within the model's training scans (the scan carries no modality)",),
    )


def _preference(spec: ModelSpec, fit: Fit) -> tuple:
    """Metadata-confirmed first, then the U-Net (the best measured), the hardware-aware kind, the name."""
    return (not fit.by_metadata, spec.architecture != "unet", spec.kind != "hwa", spec.name)


def choose_model(
    volume: Volume, specs: list[ModelSpec], current: str | None = None
) -> tuple[ModelSpec | None, list[Fit]]:
    """The installed model that fits `volume` best (the current one if it still fits), with every verdict.

    None when no model fits: the caller says so instead of running one silently.
    """
    fits = [assess(volume, s) for s in specs]
    fitting = [(s, f) for s, f in zip(specs, fits, strict=True) if f.fits]
    if not fitting:
        return None, fits
    for s, _ in fitting:
        if s.name == current:
            return s, fits
    return min(fitting, key=lambda sf: _preference(*sf))[0], fits


def model_for_scan(
    volume: Volume, spec: ModelSpec | None, force: bool, installed: list[ModelSpec]
) -> tuple[ModelSpec, Fit]:
    """The model to run on `volume` and the gate's fit, as `aimc predict` decides for one scan or each
    case of a batch: `spec` if it fits (or `force`), else (no `spec`) the installed model that fits best.
    A model that does not fit, or no model fitting, is a `ModelError` saying why."""
    if spec is not None:
        fit = assess(volume, spec)
        if not fit.fits and not force:
            # a 2D image for a 3D model (or the reverse): name the installed models that read it
            raise ModelError(
                dimension_refusal(volume, spec, installed)
                or f"model {spec.name} does not fit this scan: {fit.explain()}; "
                "--force runs it anyway (the result is marked outside the training domain)"
            )
        return spec, fit
    chosen, fits = choose_model(volume, installed)
    if chosen is None:
        why = "; ".join(f"{f.model}: {f.explain()}" for f in fits[:3]) or "no models are installed"
        raise ModelError(f"no installed model fits this scan ({why}); choose one with --model NAME --force")
    return chosen, next(f for f in fits if f.model == chosen.name)
