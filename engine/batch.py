"""The cases of a batch: which scans the inputs name, and one output folder name per case.

Inputs accepted, in any mix: scan files (NIfTI, MHA/MHD, NRRD), DICOM series folders, glob patterns,
an MSD `dataset.json` (or the folder holding it), a text or CSV list of scans (one per line; in a CSV
the column named path/image/scan/file, else the first), and folders, searched recursively for scan
files and DICOM series (several series in one folder are several cases). The same scan named twice
is one case. Case names come from the scans' names, made safe for a folder name and unique in the
batch (case-insensitively, for the file systems that fold case), in a stable order.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

from engine.volume import SCAN_SUFFIXES, ScanError, Volume, list_dicom_series, load_scan

LIST_SUFFIXES = (".txt", ".csv", ".tsv", ".lst", ".list")
LIST_COLUMNS = ("path", "image", "scan", "file")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
Found = tuple[str, Path, tuple[str, ...], str]  # a scan: name, where it is read from, own files, series UID


@dataclass(frozen=True)
class BatchCase:
    """One scan of a batch: its output folder name, where it is read from, for a DICOM series that
    shares its folder with other series its own files, and for a DICOM series its UID (which series of
    the folder it is, in the table)."""

    name: str
    source: str
    files: tuple[str, ...] = ()
    series_uid: str = ""

    def load(self, channel: int | None = None) -> Volume:
        """The scan (`engine.volume.load_scan`); a series among others is read from its own files."""
        if not self.files:
            return load_scan(self.source, channel)
        with _series_folder(self.files) as folder:
            volume = load_scan(folder, channel)
        volume.source = self.source
        return volume


@contextmanager
def _series_folder(files: tuple[str, ...]) -> Iterator[Path]:
    """A temporary folder of links to one series' files, for a reader that takes a folder."""
    with TemporaryDirectory(prefix="aimc-series-") as tmp:
        for k, f in enumerate(files):
            os.symlink(os.path.abspath(f), os.path.join(tmp, f"{k:06d}.dcm"))
        yield Path(tmp)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(SCAN_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _dicom_series(folder: Path) -> list[tuple[str, tuple[str, ...]]]:
    """The DICOM series directly in `folder`, each as its UID and files, in the order of their UIDs (GDCM
    reads only the headers; `list_dicom_series` takes names SimpleITK cannot)."""
    try:
        return [(s.uid, tuple(s.files)) for s in sorted(list_dicom_series(folder), key=lambda s: s.uid)]
    except ScanError:
        return []


def _in_folder(folder: Path, exclude: Path | None) -> list[Found]:
    """(name, source, files, UID) of every scan file and DICOM series under `folder`, depth first, sorted."""
    found: list[Found] = []
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (exclude is None or (here / d).resolve() != exclude)
        )
        scans = sorted(n for n in names if n.lower().endswith(SCAN_SUFFIXES) and not n.startswith("."))
        found += [(_stem(Path(n)), here / n, (), "") for n in scans]
        others = [n for n in names if n not in scans and not n.startswith(".") and n != "dataset.json"]
        if others:
            series = _dicom_series(here)
            if len(series) == 1:
                found.append((here.name, here, (), series[0][0]))
            found += [
                (f"{here.name}_series{k + 1}", here, files, uid)
                for k, (uid, files) in enumerate(series)
                if len(series) > 1
            ]
    return found


def _msd(path: Path) -> list[Found]:
    """The images of an MSD `dataset.json`: its training and test entries, relative to its folder."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ScanError(f"{path}: not a readable dataset.json ({exc})") from None
    if not isinstance(entries, dict):
        raise ScanError(f"{path}: not an MSD dataset.json (no training or test list)")
    images = []
    for part in ("training", "test"):
        for entry in entries.get(part) or []:
            image = entry.get("image") if isinstance(entry, dict) else entry
            if isinstance(image, str):
                images.append(path.parent / image)
    if not images:
        raise ScanError(f"{path}: the dataset lists no images")
    return [(_stem(p), p, (), "") for p in images]


def _listed(path: Path) -> list[Found]:
    """The scans of a text list (one per line, # comments) or a CSV/TSV table, relative to its folder."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ScanError(f"{path}: the list could not be read ({exc})") from None
    if path.suffix.lower() in (".csv", ".tsv"):
        rows = [
            r for r in csv.reader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ",") if r
        ]
        header = [c.strip().lower() for c in rows[0]] if rows else []
        column = next((header.index(c) for c in LIST_COLUMNS if c in header), None)
        entries = [
            r[column or 0].strip()
            for r in (rows[1:] if column is not None else rows)
            if len(r) > (column or 0)
        ]
    else:
        entries = [line.strip() for line in text.splitlines()]
    paths = [path.parent / e for e in entries if e and not e.startswith("#")]
    return [(_stem(p) if not p.is_dir() else p.name, p, (), "") for p in paths]


def _expand(text: str, exclude: Path | None) -> list[Found]:
    if glob.has_magic(text):
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise ScanError(f"{text}: no file or folder matches the pattern")
        return [found for m in matches for found in _expand(glob.escape(m), exclude)]
    path = Path(text)
    if not path.exists():
        raise ScanError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "dataset.json").is_file():
            return _msd(path / "dataset.json")
        found = _in_folder(path, exclude)
        if not found:
            raise ScanError(f"{path}: no scans (NIfTI, MHA/MHD, NRRD or DICOM) in this folder")
        return found
    name = path.name.lower()
    if name.endswith(".json"):
        return _msd(path)
    if name.endswith(LIST_SUFFIXES):
        return _listed(path)
    return [(_stem(path), path, (), "")]


def safe_name(text: str) -> str:
    """A folder name from a scan's name: letters, digits, dot, dash and underscore; never hidden."""
    return _UNSAFE.sub("_", text).strip("._") or "case"


def discover(inputs: Sequence[str], exclude: str | os.PathLike | None = None) -> list[BatchCase]:
    """The cases the inputs name, in input order, each scan once, with unique folder names.

    `exclude`: a folder never searched (the batch's output folder, when it lies under an input).
    An input that names nothing readable is a `ScanError`; a listed scan that turns out unreadable
    is left to the run, which reports it as a failed case.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    seen: set[tuple[str, tuple[str, ...]]] = set()
    chosen: list[Found] = []
    for text in inputs:
        for name, source, files, uid in _expand(str(text), skip):
            key = (os.path.realpath(source), files)
            if skip is not None and Path(key[0]).is_relative_to(skip):
                continue  # an output of this batch, matched by a pattern or a list
            if key not in seen:
                seen.add(key)
                chosen.append((name, source, files, uid))
    return [
        BatchCase(name, str(source), files, uid)
        for name, (_, source, files, uid) in zip(_unique_names(chosen), chosen, strict=True)
    ]


def _unique_names(chosen: list[Found]) -> list[str]:
    """Each case's name, its parent folder's prepended where names repeat, numbered where they still do."""
    base = [safe_name(name) for name, _, _, _ in chosen]
    repeated = {n.lower() for n in base if sum(m.lower() == n.lower() for m in base) > 1}
    names = [
        safe_name(f"{Path(source).parent.name}_{n}") if n.lower() in repeated else n
        for n, (_, source, _, _) in zip(base, chosen, strict=True)
    ]
    taken: set[str] = set()
    unique = []
    for n in names:
        candidate, k = n, 1
        while candidate.lower() in taken:
            k += 1
            candidate = f"{n}_{k}"
        taken.add(candidate.lower())
        unique.append(candidate)
    return unique


def is_single_scan(inputs: Sequence[str]) -> bool:
    """Whether the inputs are one scan as `aimc predict` always took: one file, or one folder that is a
    single DICOM series (and not a folder of scans, a list, a dataset or a pattern)."""
    if len(inputs) != 1 or glob.has_magic(str(inputs[0])):
        return False
    path = Path(inputs[0])
    if not path.exists():
        return True  # load_scan says what is wrong, as before
    if path.is_file():
        return not path.name.lower().endswith((".json", *LIST_SUFFIXES))
    try:
        found = _expand(str(path), None)
    except ScanError:
        return True
    return len(found) == 1 and Path(found[0][1]) == path and not found[0][2]
