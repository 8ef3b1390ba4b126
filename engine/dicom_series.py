"""The series a DICOM folder holds, told apart by SeriesInstanceUID and described from their headers.

A folder from a PACS export often holds several series of one study (T1, T2 FLAIR, a localiser); which one
to read is the reader's choice, not the largest by default without a word. Only each series' first file
header is read here (tags and image size, no pixel data), so listing is quick even for large studies.
"""

from __future__ import annotations

from dataclasses import dataclass

# Header tags (group|element, as SimpleITK names them) shown to choose a series.
TAGS = {
    "modality": "0008|0060",
    "description": "0008|103e",
    "number": "0020|0011",
    "series_date": "0008|0021",
    "study_date": "0008|0020",
    "patient_name": "0010|0010",
    "patient_id": "0010|0020",
    "study_description": "0008|1030",
}


@dataclass(frozen=True)
class DicomSeries:
    """One series of a folder: its files in slice order and what its first header says about it."""

    uid: str
    files: tuple[str, ...]
    columns: int
    rows: int
    modality: str = ""
    description: str = ""
    number: str = ""
    date: str = ""  # the series' date (else the study's) as YYYY-MM-DD, "" if absent
    patient_name: str = ""
    patient_id: str = ""
    study_description: str = ""

    @property
    def slices(self) -> int:
        return len(self.files)

    @property
    def size(self) -> str:
        """Columns x rows x slices, as a reader says a series' size."""
        return f"{self.columns} x {self.rows} x {self.slices}"

    def summary(self) -> str:
        """One line naming the series: description, modality, size, date and UID."""
        parts = [self.description or "(no description)", self.modality or "?", self.size]
        return " · ".join([*parts, *([self.date] if self.date else []), self.uid])


def _date(text: str) -> str:
    text = text.strip()
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else text


def _describe(uid: str, files: tuple[str, ...]) -> DicomSeries:
    """The series from its first file's header (no pixels); tags it lacks are ""."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    reader.ReadImageInformation()
    tags = {
        key: reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""
        for key, tag in TAGS.items()
    }
    size = reader.GetSize()
    return DicomSeries(
        uid,
        files,
        int(size[0]),
        int(size[1]) if len(size) > 1 else 1,
        tags["modality"],
        tags["description"],
        tags["number"],
        _date(tags["series_date"] or tags["study_date"]),
        tags["patient_name"].replace("^", " ").strip(),
        tags["patient_id"],
        tags["study_description"],
    )


def list_series(folder: str) -> list[DicomSeries]:
    """The DICOM series in `folder` (a name SimpleITK can take), the one with the most slices first.

    Raises RuntimeError (SimpleITK's) when a header cannot be read.
    """
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    found = [
        _describe(uid, tuple(reader.GetGDCMSeriesFileNames(folder, uid)))
        for uid in reader.GetGDCMSeriesIDs(folder)
    ]
    return sorted(found, key=lambda s: -s.slices)  # stable: GDCM's order among equals
