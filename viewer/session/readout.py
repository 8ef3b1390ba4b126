"""The text a reader sees about the run and the voxel under the mouse: settings, position, value, label.

Kept apart from the widgets so that what the viewer says (a preview, a slice not segmented yet)
is decided, and tested, in one place.
"""

from __future__ import annotations

from engine.images2d import is_planar, position_text
from engine.pipeline import VolumeResult
from engine.preprocessing import AXES
from engine.run_settings import Mode, RunSettings
from engine.uncertainty import MAP_TITLES, MAP_UNITS
from engine.volume import Volume
from viewer.session.display import inside

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


def run_line(run: RunSettings | None, done: int, total: int, outside: bool) -> str:
    """The line above the views: the settings of the result on screen, how far it got, and whether its
    model was run outside its training domain."""
    if run is None:
        return "No result"
    mark = "⚠ OUTSIDE THE MODEL'S TRAINING DOMAIN   ·   " if outside else ""
    return f"{mark}{describe_run(run)}   ·   {done}/{total} slices segmented"


def map_label(map_name: str) -> str:
    """`predictive entropy (nats)`: the map's title and unit, as axes and summaries name it."""
    return f"{MAP_TITLES[map_name]} ({MAP_UNITS[map_name]})"


def slice_note(result: VolumeResult, run: RunSettings, view: str, index: int) -> str:
    """What a view's title adds about its slice of the result: a preview, or not segmented yet."""
    if view != result.axis:
        return ""
    if index in result.previews:
        return f"(preview: {result.previews[index]} of {run.mc_samples} samples)"
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
    samples = result.previews.get(index, 0)
    preview = (
        "" if result.finished[index] else f"   (preview from {samples} sample{'s' if samples > 1 else ''})"
    )
    return (
        text + f"   label {label}   {MAP_TITLES[map_name]} {uncertainty:.4f} {MAP_UNITS[map_name]}" + preview
    )
