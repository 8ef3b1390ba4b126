"""What a label means in the codes PACS and Slicer understand: the segmented property category and type
(SNOMED CT, as DICOM's CID 7150/7151 use them) and the anatomic region, one table for both the DICOM SEG
and Slicer's seg.nrrd, so the two exports of a result describe it the same way."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """A coded concept: value, coding scheme (SCT = SNOMED CT) and the meaning shown to readers."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class SegmentTerms:
    """How one label is coded: what kind of thing (category), which thing (type), and where (region)."""

    category: Code
    type: Code
    region: Code | None = None


ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
ALTERED_STRUCTURE = Code("49755003", "SCT", "Morphologically Altered Structure")
TISSUE = Code("85756007", "SCT", "Tissue")
BRAIN = Code("12738006", "SCT", "Brain")
HEAD = Code("69536005", "SCT", "Head")
LESION = Code("52988006", "SCT", "Lesion")
HIPPOCAMPUS = Code("5300000", "SCT", "Hippocampus")
NUCLEUS = Code("84640000", "SCT", "Nucleus")

# The shipped models' labels. A FLAIR abnormality is coded as a lesion, not a neoplasm: it includes
# oedema and the model cannot tell tumour from it. The two hippocampus parts share the type and differ
# in their segment names.
_BY_NAME = {
    "flair abnormality": SegmentTerms(ALTERED_STRUCTURE, LESION, BRAIN),
    "lesion": SegmentTerms(ALTERED_STRUCTURE, LESION),
    "anterior hippocampus": SegmentTerms(ANATOMICAL_STRUCTURE, HIPPOCAMPUS, BRAIN),
    "posterior hippocampus": SegmentTerms(ANATOMICAL_STRUCTURE, HIPPOCAMPUS, BRAIN),
    "hippocampus": SegmentTerms(ANATOMICAL_STRUCTURE, HIPPOCAMPUS, BRAIN),
    "nucleus": SegmentTerms(ANATOMICAL_STRUCTURE, NUCLEUS),
}
# A label we have no code for is "Tissue", as Slicer codes a new segment; its name still says what it is.
UNKNOWN = SegmentTerms(TISSUE, TISSUE)


def terms_for(label_name: str) -> SegmentTerms:
    """The codes of a label, by its name in model.json (case-insensitive)."""
    return _BY_NAME.get(label_name.strip().lower(), UNKNOWN)


# DICOM Body Part Examined (a model card's body_part) as an anatomic region.
_BODY_PARTS = {"BRAIN": BRAIN, "HEAD": HEAD}


def map_region(label_names: list[str], body_part: str = "") -> Code | None:
    """The one region a whole result map covers: the labels' region where they agree on one, else the
    model card's body part; None where neither says."""
    regions = {terms_for(name).region for name in label_names} - {None}
    if len(regions) == 1:
        return regions.pop()
    return _BODY_PARTS.get(body_part.strip().upper())
