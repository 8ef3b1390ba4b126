"""How far to trust a result, as a whole: case scores, an expected Dice with its range, a verdict.

Case scores come from the Monte-Carlo samples, aggregated where they carry signal (Kahl et al.,
"ValUES", ICLR 2024): uncertainty inside the predicted segmentation and in a band around its border,
the agreement between chips (mean pairwise Dice of the per-sample segmentations, the baseline of
Zenk, Jaeger et al. 2025) and the share of the segmentation that is uncertain. Which score is used,
its mapping to an expected Dice (isotonic regression) and the range around it are fitted per model
on its validation cases (`training/trust_calibration.py`) and kept in model.json under "trust".

The out-of-distribution score needs no metadata: how far the scan's normalised intensities lie from
the model's training and validation scans, and the run's uncertainty over the whole scan from its
runs on the validation scans.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from engine.model_store import ModelSpec
from engine.pipeline import VolumeResult
from engine.preprocessing import Preprocessing, normalise_volume
from engine.run_settings import Mode, RunSettings

BAND_MM = 3.0  # half-width of the band around the segmentation's border
UNCERTAIN_NATS = 0.5 * np.log(2)  # a voxel is "uncertain" above half the entropy of a coin toss
FAILURE_DICE = 0.7  # a case below this Dice is a failure the verdict should catch
SCORES = ("entropy_inside", "mutual_information_inside", "entropy_border", "pairwise_dice", "uncertain_ratio")
# Scores where a higher value means a better case (the others rise with doubt).
HIGHER_IS_BETTER = {"pairwise_dice"}
NO_CALIBRATION = "no trust calibration for this model"  # why a result has no verdict


def pairwise_dice(overlap: np.ndarray | None) -> float:
    """Mean Dice between the samples' segmentations, from their summed (S, S) foreground overlaps.

    1 when every chip agrees (or with a single sample); two empty segmentations agree perfectly.
    """
    if overlap is None or len(overlap) < 2:
        return 1.0
    size = np.diag(overlap).astype(np.float64)
    s, t = np.triu_indices(len(overlap), 1)
    denominator = size[s] + size[t]
    dice = np.where(denominator > 0, 2 * overlap[s, t] / np.maximum(denominator, 1), 1.0)
    return float(dice.mean())


def border_band(segmentation: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Voxels within `BAND_MM` of the segmentation's border, on either side."""
    inside = segmentation > 0
    if not inside.any():
        return inside
    outside_distance = ndimage.distance_transform_edt(~inside, sampling=spacing)
    inside_distance = ndimage.distance_transform_edt(inside, sampling=spacing)
    return (outside_distance <= BAND_MM) & (inside_distance <= BAND_MM)


def case_scores(result: VolumeResult) -> dict[str, float]:
    """Every candidate score of a finished result (NaN where a score has no voxels to read)."""
    seg = result.segmentation > 0
    entropy, mi = result.maps["entropy"], result.maps["mutual_information"]
    band = border_band(result.segmentation, result.volume.spacing)

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if values.size else float("nan")

    return {
        "entropy_inside": mean(entropy[seg]),
        "mutual_information_inside": mean(mi[seg]),
        "entropy_border": mean(entropy[band]),
        "pairwise_dice": pairwise_dice(result.overlap),
        "uncertain_ratio": float((entropy[seg | band] > UNCERTAIN_NATS).sum() / seg.sum())
        if seg.any()
        else float("nan"),
    }


@dataclass(frozen=True)
class TrustCalibration:
    """Fitted on a model's validation cases; stored in model.json under "trust"."""

    score: str  # the chosen case score
    knots: tuple[float, ...]  # isotonic fit: score values ...
    expected: tuple[float, ...]  # ... and the Dice expected at each
    error_low: float  # bounds of (true - expected) Dice holding 80 % of validation cases (conformal):
    error_high: float  # the range shown around the expected Dice
    review_below: float  # expected Dice under which the verdict is "review carefully"
    lesion_review_above: float  # mean lesion uncertainty above which a lesion is flagged
    ood_threshold: float  # OOD score above which a scan is "outside the model's training domain"
    ood_reference: tuple[float, ...]  # (mean, std) per OOD feature on validation scans
    fitted_on: str  # what it was fitted on, e.g. "val: 9 cases, analog noise 1 drift 86400 s MC 8"
    run: dict = field(default_factory=dict)  # the chips it was fitted on (noise_level, drift_s, mc_samples)
    # the OOD check tried on scans of another data set (never test scans): how many, how many it flagged
    foreign_checked: int = 0
    foreign_flagged: int = 0

    @property
    def ood_unreliable(self) -> bool:
        """The OOD check missed foreign scans when it was tried: not flagging a scan says little."""
        return self.foreign_flagged < self.foreign_checked

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrustCalibration:
        return cls(
            **{
                **d,
                "knots": tuple(d["knots"]),
                "expected": tuple(d["expected"]),
                "ood_reference": tuple(d["ood_reference"]),
            }
        )

    def expected_dice(self, score: float) -> float:
        if not np.isfinite(score):
            return float("nan")
        return float(np.interp(score, self.knots, self.expected))


@dataclass(frozen=True)
class Verdict:
    """What the reader is told about a case as a whole."""

    review: bool  # "review carefully": the expected Dice is low, or the scan is out of distribution
    expected_dice: float
    low: float  # the range around it (validation errors)
    high: float
    out_of_distribution: bool
    ood_score: float
    score: str
    score_value: float
    message: str
    settings_note: str = ""  # where the run's chips differ from those the calibration was fitted on

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


OOD_UNRELIABLE = "this model's OOD check cannot vouch for the scan"


def ood_misses(calibration: TrustCalibration) -> str:
    """What the OOD check did on foreign scans when it was fitted ("it flagged 0 of 4 ...")."""
    return (
        f"it flagged {calibration.foreign_flagged} of {calibration.foreign_checked} scans of another "
        "data set when it was fitted"
    )


INTENSITY_FEATURES = 3  # the first features of `ood_features` need no model run (`intensity_features`)


def intensity_features(data: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The scan's normalised intensity histogram: share of near-black and of bright voxels, and mean."""
    normalised = normalise_volume(data, preprocessing)
    return np.array(
        [float((normalised <= 0.05).mean()), float((normalised >= 0.5).mean()), float(normalised.mean())]
    )


def ood_features(result: VolumeResult, preprocessing: Preprocessing) -> np.ndarray:
    """What an out-of-distribution scan changes: its intensities (`intensity_features`) and how unsure
    the model is over the whole scan."""
    normalised = normalise_volume(result.volume.data, preprocessing)
    body = normalised > 0.05
    return np.concatenate(
        [
            intensity_features(result.volume.data, preprocessing),
            [
                float(result.maps["entropy"][body].mean()) if body.any() else 0.0,
                float((result.maps["entropy"] > UNCERTAIN_NATS).mean()),
            ],
        ]
    )


def ood_score(features: np.ndarray, reference: tuple[float, ...]) -> float:
    """Largest absolute z-score of the features against the validation scans' mean and std."""
    ref = np.asarray(reference, np.float64).reshape(2, -1)
    spread = np.maximum(
        ref[1], 1e-3 + 0.05 * np.abs(ref[0])
    )  # a feature constant on validation still has a scale
    return float(np.max(np.abs(features - ref[0]) / spread))


def calibration_for(spec: ModelSpec, mode: str) -> TrustCalibration | None:
    """The model's calibration for `mode`, None where it was never fitted."""
    fitted = spec.trust.get(str(mode))
    return TrustCalibration.from_dict(fitted) if fitted else None


def _drift(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def settings_note(calibration: TrustCalibration, run: RunSettings | None) -> str:
    """Where an analog run's chips differ from those the calibration was fitted on ("" if they match):
    noise, drift and the number of samples all move the uncertainty the expected Dice is read from."""
    if run is None or Mode(run.mode) is not Mode.ANALOG or not calibration.run:
        return ""
    fitted = calibration.run
    differences = [
        f"{name} {show(fitted[key])} (this run {show(getattr(run, key))})"
        for key, name, show in (
            ("noise_level", "noise", lambda v: f"{v:g}"),
            ("drift_s", "drift", _drift),
            ("mc_samples", "MC", lambda v: f"{v:g}"),
        )
        if key in fitted and not np.isclose(float(fitted[key]), float(getattr(run, key)))
    ]
    return f"calibrated at {', '.join(differences)}: the expected Dice may be off" if differences else ""


def verdict(
    result: VolumeResult,
    preprocessing: Preprocessing,
    calibration: TrustCalibration,
    run: RunSettings | None = None,
) -> Verdict:
    """The case verdict of a finished result under a model's fitted calibration; `run` (the result's
    settings) adds a note where its chips are not those the calibration was fitted on."""
    value = case_scores(result)[calibration.score]
    expected = calibration.expected_dice(value)
    ood = ood_score(ood_features(result, preprocessing), calibration.ood_reference)
    outside = ood > calibration.ood_threshold
    note = settings_note(calibration, run)
    if not np.isfinite(expected):
        expected, low, high = float("nan"), float("nan"), float("nan")
        review, message = outside, "nothing segmented"
    else:
        low = max(0.0, expected + calibration.error_low)
        high = min(1.0, expected + calibration.error_high)
        review = outside or expected < calibration.review_below
        message = f"expected Dice {expected:.2f} ({low:.2f}-{high:.2f})"
    if not outside and calibration.ood_unreliable:
        message += f"; {OOD_UNRELIABLE} ({ood_misses(calibration)})"
    if outside:
        message = f"outside the model's training domain (OOD score {ood:.1f}); " + message
    if review:
        message = "review carefully: " + message
    if note:
        message += f"; {note}"
    return Verdict(review, expected, low, high, outside, ood, calibration.score, value, message, note)
