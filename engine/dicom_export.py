"""A result as DICOM objects for PACS, OHIF and Slicer, built with highdicom on the source series' headers:

- the segmentation as a BINARY SEG, one segment per label (its name, colour, coded category and type,
  the algorithm: the model, its kind and the run settings);
- the chosen uncertainty map as a Parametric Map (float pixels, its unit and a real-world value mapping);
- the mean foreground (per-label) probability as a FRACTIONAL SEG.

Each is a new series with new UIDs in the source's study, for its patient, on its frame of reference;
every frame lies on a source slice and references that instance.
"""

from __future__ import annotations

from importlib import metadata

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from engine.dicom_source import source_frames, source_headers
from engine.model_store import Label, ModelSpec
from engine.pipeline import VolumeResult
from engine.run_settings import RunSettings
from engine.terminology import Code, map_region, terms_for
from engine.uncertainty import MAP_TITLES, MAP_UNITS

MANUFACTURER = "aimc-med"
# What we add to the study: series number (high, not to collide with a scanner's), content label, title.
OBJECTS = {
    "segmentation": (9001, "AIMC_SEG", "AI segmentation"),
    "uncertainty": (9002, "AIMC_UNCERTAINTY", "AI uncertainty"),
    "probability": (9003, "AIMC_PROB", "AI probability"),
}
# UCUM codes of the map units: entropies in nats (a dimensionless annotation), probabilities unitless.
_UCUM = {"nats": Code("{nat}", "UCUM", "nat"), "probability": Code("1", "UCUM", "no units")}
# Value 4 of Image and Frame Type (Derived Pixel Contrast, PS3.3 C.8.16.1.4): the standard deviation across
# chips is the defined term STD_DEVIATION; no defined term describes an entropy or a mutual information,
# so those keep highdicom's QUANTITY (defined terms may be extended; dciodvfy warns it does not know it).
_DERIVED_PIXEL_CONTRAST = {"std": hd.pm.DerivedPixelContrastValues.STD_DEVIATION}


def _software_version() -> str:
    try:
        return metadata.version(MANUFACTURER)
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "source checkout"


def _coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _segment_labels(spec: ModelSpec) -> list[Label]:
    """The labels that become segments: all but background (value 0), numbered 1..n in label order."""
    return [label for label in spec.labels if label.value != 0]


def algorithm(spec: ModelSpec, run: RunSettings) -> hd.AlgorithmIdentificationSequence:
    """The model and how it was run, as a reader of the SEG finds them (Algorithm Parameters). A digital
    run has no chips: the analog settings would only mislead, so they are named for analog runs alone."""
    parameters = {"architecture": spec.architecture, "kind": spec.kind, "mode": str(run.mode)}
    if str(run.mode) == "analog":
        parameters |= {
            "mc_samples": str(run.mc_samples),
            "noise_level": f"{run.noise_level:g}",
            "drift_s": f"{run.drift_s:g}",
            "seed": str(run.seed),
        }
    return hd.AlgorithmIdentificationSequence(
        name=spec.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=_software_version(),
        source=MANUFACTURER,
        parameters=parameters,
    )


def _descriptions(spec: ModelSpec, run: RunSettings) -> list[hd.seg.SegmentDescription]:
    found = algorithm(spec, run)
    descriptions = []
    for number, label in enumerate(_segment_labels(spec), start=1):
        terms = terms_for(label.name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label.name,
                segmented_property_category=_coded(terms.category),
                segmented_property_type=_coded(terms.type),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=found,
                anatomic_regions=[_coded(terms.region)] if terms.region else None,
                display_color=hd.color.CIELabColor.from_rgb(*label.color),
            )
        )
    return descriptions


def _new_object(what: str, spec: ModelSpec, run: RunSettings) -> dict:
    """A new series and instance (new UIDs) for `what` (a key of OBJECTS), and who made it: this
    software, the model, and the simulated device it ran on."""
    number, label, title = OBJECTS[what]
    return {
        "series_instance_uid": hd.UID(),
        "series_number": number,
        "sop_instance_uid": hd.UID(),
        "instance_number": 1,
        "series_description": f"{title} {spec.name}"[:64],
        "content_label": label,
        "content_description": _settings_text(spec, run)[:64],
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": spec.name,
        "software_versions": _software_version(),
        "device_serial_number": f"analog seed {run.seed}" if str(run.mode) == "analog" else "digital",
    }


def _settings_text(spec: ModelSpec, run: RunSettings) -> str:
    if str(run.mode) == "digital":
        return f"{spec.name} ({spec.kind}), digital"
    return (
        f"{spec.name} ({spec.kind}), analog, MC {run.mc_samples}, noise {run.noise_level:g}, "
        f"drift {run.drift_s:g} s, seed {run.seed}"
    )


def segmentation(
    result: VolumeResult, spec: ModelSpec, run: RunSettings, headers: list[Dataset]
) -> hd.seg.Segmentation:
    """The label map as a BINARY SEG; empty frames are left out, as viewers expect."""
    labels = _segment_labels(spec)
    numbers = np.zeros(max([label.value for label in spec.labels]) + 1, np.uint8)
    for number, label in enumerate(labels, start=1):
        numbers[label.value] = number
    frames = numbers[source_frames(result.volume, headers, result.segmentation)]
    return hd.seg.Segmentation(
        source_images=headers,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(spec, run),
        **_new_object("segmentation", spec, run),
    )


def probability_segmentation(
    result: VolumeResult, spec: ModelSpec, run: RunSettings, headers: list[Dataset]
) -> hd.seg.Segmentation:
    """The mean probability of each label (all but background) as a FRACTIONAL SEG (PROBABILITY)."""
    values = [label.value for label in _segment_labels(spec)]
    probabilities = np.clip(result.probabilities[..., values], 0.0, 1.0)
    return hd.seg.Segmentation(
        source_images=headers,
        pixel_array=source_frames(result.volume, headers, probabilities).astype(np.float32),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        segment_descriptions=_descriptions(spec, run),
        omit_empty_frames=False,
        **_new_object("probability", spec, run),
    )


def _frame_anatomy(spec: ModelSpec) -> Dataset | None:
    """The region the map covers, with Frame Laterality U (unpaired): the Parametric Map's General Series
    needs a Laterality unless its frames say which structure they cover and that it is unpaired."""
    region = map_region(
        [label.name for label in _segment_labels(spec)], spec.card.body_part if spec.card else ""
    )
    if region is None:
        return None
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [_coded(region)]
    anatomy.FrameLaterality = "U"
    return anatomy


def uncertainty_map(
    result: VolumeResult, spec: ModelSpec, run: RunSettings, headers: list[Dataset], map_name: str
) -> hd.pm.ParametricMap:
    """The `map_name` uncertainty as a Parametric Map: float32 pixels equal to the map, an identity
    real-world value mapping in the map's unit, a window over its range."""
    frames = source_frames(result.volume, headers, result.maps[map_name]).astype(np.float32)
    low, high = float(frames.min()), float(frames.max())
    title, unit = MAP_TITLES[map_name], MAP_UNITS[map_name]
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=map_name[:16],
        lut_explanation=f"{title} ({unit})"[:64],
        unit=_coded(_UCUM[unit]),
        value_range=(low, high),
        slope=1.0,
        intercept=0.0,
    )
    window = hd.VOILUTTransformation(  # LINEAR_EXACT: a window narrower than 1 on float values
        window_center=[(low + high) / 2],
        window_width=[max(high - low, 1e-6)],
        window_explanation=[title],
        voi_lut_function=hd.VOILUTFunctionValues.LINEAR_EXACT,
    )
    pm = hd.pm.ParametricMap(
        source_images=headers,
        pixel_array=frames,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[window],
        derived_pixel_contrast=_DERIVED_PIXEL_CONTRAST.get(
            map_name, hd.pm.DerivedPixelContrastValues.QUANTITY
        ),
        **_new_object("uncertainty", spec, run),
    )
    if (anatomy := _frame_anatomy(spec)) is not None:
        pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
    return pm


def dicom_objects(
    result: VolumeResult,
    spec: ModelSpec,
    run: RunSettings,
    map_name: str = "entropy",
    *,
    uncertainty: bool = True,
    probability: bool = True,
) -> dict[str, Dataset]:
    """The SEG and, where asked, the uncertainty Parametric Map and the FRACTIONAL probability SEG, keyed
    "segmentation", "uncertainty", "probability". Built in memory; raises `ScanError` for a scan not read
    from DICOM or a source series that can no longer be read."""
    headers = source_headers(result.volume)
    objects: dict[str, Dataset] = {"segmentation": segmentation(result, spec, run, headers)}
    if uncertainty:
        objects["uncertainty"] = uncertainty_map(result, spec, run, headers, map_name)
    if probability:
        objects["probability"] = probability_segmentation(result, spec, run, headers)
    return objects
