"""The text a reader sees about the run and the voxel under the mouse: settings, position, value, label.

Kept apart from the widgets so that what the viewer says (a preview, a slice not segmented yet)
is decided, and tested, in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.images2d import is_planar, position_text
from engine.pipeline import VolumeResult
from engine.preprocessing import AXES
from engine.run_settings import Mode, RunSettings
from engine.uncertainty import MAP_TITLES, MAP_UNITS
from engine.volume import Volume
from viewer.session.display import inside, voxel_at

DRIFT_CHOICES: tuple[tuple[str, float], ...] = (
    ("1 second", 1.0),
    ("1 minute", 60.0),
    ("1 hour", 3600.0),
    ("1 day", 86400.0),
    ("1 week", 604800.0),
    ("1 month", 2592000.0),
    ("1 year", 31536000.0),
)


def drift_text(seconds: float) -> str:
    return next((text for text, s in DRIFT_CHOICES if s == seconds), f"{seconds:g} s")


def describe_run(run: RunSettings) -> str:
    if run.mode == Mode.DIGITAL:
        return f"{run.model} · digital"
    return (
        f"{run.model} · analog chip · {run.mc_samples} MC sample{'s' if run.mc_samples > 1 else ''}"
        f" · noise {run.noise_level:g} · drift {drift_text(run.drift_s)}"
    )


DIGITAL_PREVIEW_NOTE = "(digital preview until the analog result is in)"


def run_line(
    run: RunSettings | None, done: int, total: int, outside: bool, digital_preview: bool = False
) -> str:
    """The line above the views: the settings of the result on screen, how far it got, whether its
    model was run outside its training domain, and whether slices show the `digital_preview`."""
    if run is None:
        return "No result"
    mark = "⚠ OUTSIDE THE MODEL'S TRAINING DOMAIN   ·   " if outside else ""
    if digital_preview:  # first, where the line is never cut
        mark += "DIGITAL PREVIEW on unfinished slices until the chips' result replaces it   ·   "
    return f"{mark}{describe_run(run)}   ·   {done}/{total} slices segmented"


def scan_title(volume: Volume) -> str:
    """The scan's name and, for DICOM, its patient, study and series: which of a folder's series is open."""
    meta = volume.meta
    patient = str(meta.get("patient_name", "")).replace("^", " ").strip() or meta.get("patient_id")
    said = (patient, meta.get("study_description"))
    series = meta.get("series_description") or (
        "series " + meta["series_uid"] if "series_uid" in meta else ""
    )
    return " · ".join([Path(volume.source).name, *(str(s) for s in (*said, series) if s)])


def map_label(map_name: str) -> str:
    """`predictive entropy (nats)`: the map's title and unit, as axes and summaries name it."""
    return f"{MAP_TITLES[map_name]} ({MAP_UNITS[map_name]})"


def slice_note(result: VolumeResult, run: RunSettings, view: str, index: int) -> str:
    """What a view's title adds about its slice of the result: a preview, or not segmented yet."""
    if view != result.axis:
        return ""
    if index in result.previews:
        samples = result.previews[index]
        if samples == 0:
            return DIGITAL_PREVIEW_NOTE
        return f"(preview: {samples} of {run.mc_samples} samples)"
    return "" if result.finished[index] else "(not segmented yet)"


def describe_voxel(
    volume: Volume | None,
    result: VolumeResult | None,
    ijk: tuple[int, int, int],
    map_name: str,
    label_names: dict[int, str],
) -> str:
    """Voxel index, RAS position in mm, intensity, label and uncertainty at `ijk` ("" outside the scan)."""
    if volume is None or not inside(volume.shape, ijk):
        return ""
    x, y, z = volume.world(ijk)
    where = (
        position_text(volume, ijk)
        if is_planar(volume)
        else f"voxel ({ijk[0]}, {ijk[1]}, {ijk[2]})   RAS ({x:.1f}, {y:.1f}, {z:.1f}) mm"
    )
    text = f"{where}   intensity {volume.data[ijk]:.5g}"
    if result is None:
        return text
    index = ijk[AXES[result.axis]]
    if not result.finished[index] and index not in result.previews:
        return text + "   label: not segmented yet"
    value = int(result.segmentation[ijk])
    label = label_names.get(value, str(value))
    uncertainty = float(result.maps[map_name][ijk])
    preview = "" if result.finished[index] else "   " + _preview_words(result.previews.get(index, 0))
    return (
        text + f"   label {label}   {MAP_TITLES[map_name]} {uncertainty:.4f} {MAP_UNITS[map_name]}" + preview
    )


def _preview_words(samples: int) -> str:
    """How an unfinished slice is shown: 0 samples is the digital network's one pass."""
    if samples == 0:
        return "(digital preview)"
    return f"(preview from {samples} sample{'s' if samples > 1 else ''})"


@dataclass
class Pointer:
    """Where the mouse is over an image, as (view, row, col) of the slice shown; None when it is over none.

    Kept as a place on screen, not as a voxel: the readout recomputes the voxel from the scan, slice and
    result of the moment, so it never repeats a value of a scan, map or slice that has gone.
    """

    over: tuple[str, int, int] | None = None

    def hover(self, view: str, row: int, col: int) -> None:
        self.over = (view, row, col) if row >= 0 and col >= 0 else None

    def leave(self) -> None:
        self.over = None


def readout_line(
    volume: Volume | None,
    result: VolumeResult | None,
    crosshair: tuple[int, int, int],
    pointer: Pointer,
    map_name: str,
    label_names: dict[int, str],
) -> str:
    """The line under the views: the voxel under the mouse ("mouse"), else at the crosshair."""
    if volume is None:
        return ""
    if pointer.over is not None:
        view, row, col = pointer.over
        ijk = voxel_at(volume.shape, view, crosshair[AXES[view]], row, col)
        if inside(volume.shape, ijk):
            return "mouse      " + describe_voxel(volume, result, ijk, map_name, label_names)
    return "crosshair  " + describe_voxel(volume, result, crosshair, map_name, label_names)


class RemainingTime:
    """The time left of a run's phase (programming the chips, then the slices) at the pace it went so far.

    A phase's pace is measured from its own start: chips and slices take very different times.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._phase = ""
        self._start = (0.0, 0)  # time and steps done when the phase was first seen

    def update(self, phase: str, done: int, total: int) -> str:
        now = self.clock()
        if phase != self._phase or done < self._start[1]:
            self._phase, self._start = phase, (now, done)
        if done >= total:
            return ""
        steps = done - self._start[1]
        if steps < 1:
            return "estimating the time left"
        seconds = round((now - self._start[0]) / steps * (total - done))
        minutes, rest = divmod(max(seconds, 1), 60)
        return f"about {minutes} min {rest} s left" if minutes else f"about {rest} s left"
