"""What a model is for: the scans it was trained on, in terms a new scan can be compared with.

A card names the modality (DICOM Modality codes: MR, CT, SM for microscopy), the MR sequence, the body
part (DICOM BodyPartExamined), whether the model reads 3D volumes or 2D images, and the ranges that its
training scans spanned: in-plane size, spacing, slice count and intensity quantiles. The same
`ScanStatistics` are computed for every scan that is opened, so the compatibility gate compares like
with like whether or not the scan carries metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from engine.preprocessing import AXES

if TYPE_CHECKING:  # reading a card (aimc models) needs no scan reader: nibabel and pydicom stay unloaded
    from engine.volume import Volume

QUANTILES = (1, 50, 99)  # intensity percentiles that describe a scan's histogram


@dataclass(frozen=True)
class ScanStatistics:
    """Geometry and intensity of one scan, along a model's slice axis."""

    dimensionality: str  # "3D" volume or "2D" image (one slice)
    in_plane: tuple[int, int]  # slice size in voxels
    slices: int
    in_plane_spacing: float  # mm (mean of the two in-plane axes)
    slice_spacing: float  # mm
    quantiles: tuple[float, ...]  # intensity at QUANTILES percent
    negative_fraction: float  # voxels below zero: CT (HU) has many, MR and microscopy none

    @classmethod
    def of(cls, volume: Volume, axis: str = "axial") -> ScanStatistics:
        k = AXES[axis]
        plane = [i for i in range(3) if i != k]
        shape, spacing = volume.shape, volume.spacing
        data = volume.data
        sample = data.ravel()[
            :: max(1, data.size // 2_000_000)
        ]  # quantiles of a strided sample: fast on big CTs
        return cls(
            dimensionality="2D" if shape[k] == 1 else "3D",
            in_plane=(int(shape[plane[0]]), int(shape[plane[1]])),
            slices=int(shape[k]),
            in_plane_spacing=float(np.mean([spacing[i] for i in plane])),
            slice_spacing=float(spacing[k]),
            quantiles=tuple(float(q) for q in np.percentile(sample, QUANTILES)),
            negative_fraction=float((sample < 0).mean()),
        )


@dataclass(frozen=True)
class Range:
    low: float
    high: float

    def contains(self, value: float, slack: float = 0.0) -> bool:
        """Inside the range widened by `slack` times its width (and at least `slack` times its ends)."""
        pad = slack * max(self.high - self.low, abs(self.low), abs(self.high))
        return self.low - pad <= value <= self.high + pad

    def __str__(self) -> str:
        return f"{self.low:g}..{self.high:g}"


@dataclass(frozen=True)
class TrainingDomain:
    """The ranges that a model's training scans spanned, per `ScanStatistics` field."""

    scans: int
    in_plane: Range  # the larger in-plane side, voxels
    slices: Range
    in_plane_spacing: Range
    slice_spacing: Range
    quantiles: tuple[Range, ...]
    negative_fraction: Range

    @classmethod
    def of(cls, stats: list[ScanStatistics]) -> TrainingDomain:
        def span(values: list[float]) -> Range:
            return Range(float(min(values)), float(max(values)))

        return cls(
            scans=len(stats),
            in_plane=span([max(s.in_plane) for s in stats]),
            slices=span([s.slices for s in stats]),
            in_plane_spacing=span([s.in_plane_spacing for s in stats]),
            slice_spacing=span([s.slice_spacing for s in stats]),
            quantiles=tuple(span([s.quantiles[i] for s in stats]) for i in range(len(QUANTILES))),
            negative_fraction=span([s.negative_fraction for s in stats]),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainingDomain:
        def rng(v: dict) -> Range:
            return Range(float(v["low"]), float(v["high"]))

        return cls(
            scans=int(d["scans"]),
            **{f.name: rng(d[f.name]) for f in fields(cls) if f.name not in ("scans", "quantiles")},
            quantiles=tuple(rng(q) for q in d["quantiles"]),
        )


@dataclass(frozen=True)
class ModelCard:
    """Recorded in model.json under "card"; `training_domain` is measured on the training split."""

    modality: str  # DICOM Modality: "MR", "CT", "SM" (microscopy)
    body_part: str  # DICOM BodyPartExamined, e.g. "BRAIN"; "" where it does not apply
    dimensionality: str  # "3D" or "2D"
    sequence: str = ""  # MR sequence, e.g. "FLAIR", "T1"
    description: str = ""  # in words, for the user: "brain MRI, FLAIR"
    training_domain: TrainingDomain | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "training_domain"}
        if self.training_domain is not None:
            d["training_domain"] = self.training_domain.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        domain = d.get("training_domain")
        return cls(
            modality=str(d["modality"]),
            body_part=str(d.get("body_part", "")),
            dimensionality=str(d["dimensionality"]),
            sequence=str(d.get("sequence", "")),
            description=str(d.get("description", "")),
            training_domain=TrainingDomain.from_dict(domain) if domain else None,
        )

    def summary(self) -> str:
        """One line for `aimc models` and the viewer."""
        what = self.description or " ".join(p for p in (self.modality, self.sequence, self.body_part) if p)
        line = f"{what} ({self.dimensionality})"
        t = self.training_domain
        if t is not None and self.dimensionality == "3D":
            line += (
                f"; trained on {t.scans} scans, in-plane {t.in_plane} voxels at {t.in_plane_spacing} mm, "
                f"{t.slices} slices at {t.slice_spacing} mm"
            )
        elif t is not None:
            line += f"; trained on {t.scans} images, {t.in_plane} pixels on their longer side"
        return line
