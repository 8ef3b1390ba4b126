"""Fit a model's trust calibration on its validation cases, never on its test cases.

For each validation case (several chip programmings in analog mode, for more points) the model's
result gives every candidate case score (`engine.trust.SCORES`), its true Dice, the per-lesion
uncertainties and the out-of-distribution features (`training.trust_records`). Then, on validation only:
- the score is the candidate with the strongest rank correlation with Dice;
- its mapping to an expected Dice is an isotonic regression, and the range shown around it is the
  split-conformal 80 % range of the leave-one-case-out errors (honest, unlike in-sample residuals).
  Their plain 10th-90th percentile covers less than 80 % at these sizes: between the k-th and j-th of
  n exchangeable errors a new one falls with probability (j - k)/(n + 1), 73 % for 22 patients'
  percentiles (`range_bounds`; measured on validation by `validation_coverage`);
- a lesion is flagged above the uncertainty that best separates predicted lesions that touch the
  reference from those that do not (Youden's J);
- the OOD reference: the intensity features over the training and validation scans (no model run
  needed, so all of them: nine validation scans alone made a good test scan look foreign), the
  uncertainty features over the validation runs; the threshold is 1.1 times the largest
  leave-one-case-out OOD score of those scans. Then it is tried on training scans of another data set
  (`FOREIGN`; never test scans): where it misses any, the verdict says that not flagging a scan
  vouches for nothing.
The result goes into model.json under "trust", per mode, with the chips it was fitted on. Refit it
whenever the model is replaced (the records are saved with the weights' hash and re-measured then):

    python -m training.trust_calibration --data ../shared/data --model lgg_unet_hwa [--mode analog digital]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.isotonic import IsotonicRegression

from engine.model_store import ModelSpec, find_model, read_spec, write_spec
from engine.run_settings import Mode
from engine.trust import (
    FAILURE_DICE,
    HIGHER_IS_BETTER,
    INTENSITY_FEATURES,
    SCORES,
    TrustCalibration,
    intensity_features,
    ood_score,
)
from engine.volume import Volume, load_scan
from training import trust_records
from training.evaluate import cases_of_split
from training.trust_records import CALIBRATION_RUN, CaseRecord

PROGRAMMINGS = 3
RANGE_COVERAGE = 0.8  # nominal share of cases whose true Dice falls in the range shown
# whose scans are foreign to whom (a microscopy model shown MR volumes); their training scans try the
# OOD check when it is fitted, their test scans judge it in the report
FOREIGN = {"lgg": "hippocampus", "hippocampus": "lgg", "nuclei": "lgg"}
FOREIGN_CHECKS = 4  # training scans of the foreign data set tried
RECORDS = Path(__file__).resolve().parents[1] / "reports" / "measurements" / "trust"


def _oriented(score: str, values: np.ndarray) -> np.ndarray:
    """Scores turned so that higher always means more doubt."""
    return -values if score in HIGHER_IS_BETTER else values


def choose_score(records: list[CaseRecord], candidates: tuple[str, ...]) -> tuple[str, dict[str, float]]:
    """The candidate whose doubt falls most consistently as Dice rises (most negative Spearman)."""
    dice = np.array([r.dice for r in records])
    rho = {}
    for name in candidates:
        values = np.array([r.scores[name] for r in records])
        ok = np.isfinite(values)
        if ok.sum() >= 4 and np.ptp(values[ok]) > 0:
            rho[name] = float(spearmanr(_oriented(name, values[ok]), dice[ok])[0])
    if not rho:
        raise ValueError("no candidate score varies over the validation cases")
    return min(rho, key=lambda n: rho[n]), rho


def _isotonic(score: str, x: np.ndarray, y: np.ndarray) -> IsotonicRegression:
    return IsotonicRegression(
        increasing=score in HIGHER_IS_BETTER, out_of_bounds="clip", y_min=0.0, y_max=1.0
    ).fit(x, y)


def _leave_one_case_out(records: list[CaseRecord], fn) -> list:
    """fn(held-out records, the others) for each case (all programmings of a case held out together)."""
    names = sorted({r.case.split("/")[0] for r in records})
    return [
        fn(
            [r for r in records if r.case.split("/")[0] == n],
            [r for r in records if r.case.split("/")[0] != n],
        )
        for n in names
    ]


def _errors(score: str, held: list[CaseRecord], rest: list[CaseRecord]) -> list[float]:
    """True minus expected Dice of the held-out records, by the map fitted on the rest."""
    m = _isotonic(score, np.array([r.scores[score] for r in rest]), np.array([r.dice for r in rest]))
    return [r.dice - float(m.predict([r.scores[score]])[0]) for r in held]


def held_out_errors(records: list[CaseRecord], score: str) -> np.ndarray:
    """Each record's error with its case left out of the map (records with the score defined)."""
    return np.concatenate(_leave_one_case_out(records, lambda held, rest: _errors(score, held, rest)))


def range_bounds(errors: np.ndarray, coverage: float = RANGE_COVERAGE) -> tuple[float, float]:
    """(low, high) error bounds that a new case's error falls between with probability >= `coverage`
    when errors are exchangeable: the split-conformal order statistics, an equal tail on each side.
    With too few errors for that (fewer than 9 at 80 %) the extremes are the best there is."""
    ordered = np.sort(np.asarray(errors, np.float64))
    n, tail = len(ordered), (1.0 - coverage) / 2
    k = max(math.floor((n + 1) * tail), 1)
    j = min(math.ceil((n + 1) * (1.0 - tail)), n)
    return float(ordered[k - 1]), float(ordered[j - 1])


def validation_coverage(records: list[CaseRecord], score: str) -> float:
    """How often a validation case's true Dice falls in the range fitted without it (nested
    leave-one-case-out: map and range both refitted on the other cases), for the fixed `score`."""
    usable = [r for r in records if np.isfinite(r.scores[score])]

    def inside(held: list[CaseRecord], rest: list[CaseRecord]) -> list[bool]:
        low, high = range_bounds(held_out_errors(rest, score))
        return [low <= e <= high for e in _errors(score, held, rest)]

    return float(np.mean(np.concatenate(_leave_one_case_out(usable, inside))))


def lesion_threshold(records: list[CaseRecord]) -> float:
    """Uncertainty that best separates predicted lesions off the reference from those on it (Youden's J)."""
    values = np.array([u for r in records for u, _ in r.lesions])
    touches = np.array([t for r in records for _, t in r.lesions])
    if touches.all() or not touches.any():
        return float(np.quantile(values, 0.9)) if len(values) else float("inf")
    best, best_j = float(values.max()), -1.0
    for t in np.unique(values):
        j = (values[~touches] >= t).mean() - (values[touches] >= t).mean()
        if j > best_j:
            best, best_j = float(t), j
    return best


def ood_reference(records: list[CaseRecord], intensities: np.ndarray) -> tuple[float, ...]:
    """(mean..., std...) per OOD feature: intensities over `intensities` (one row per scan), the
    uncertainty features over the records."""
    uncertainty = np.stack([r.ood[INTENSITY_FEATURES:] for r in records])
    means = np.concatenate([intensities.mean(0), uncertainty.mean(0)])
    stds = np.concatenate([intensities.std(0), uncertainty.std(0)])
    return tuple(float(v) for v in (*means, *stds))


def ood_threshold(records: list[CaseRecord], intensities: dict[str, np.ndarray]) -> float:
    """1.1 times the largest OOD score of a scan held out of its own reference: each validation case
    (all features), and each training scan (intensity features; it has no model run)."""
    rows = np.stack(list(intensities.values()))
    names = list(intensities)

    def held_out(held: list[CaseRecord], rest: list[CaseRecord]) -> float:
        case = held[0].case.split("/")[0]
        others = rows[[n != case for n in names]]
        return max(ood_score(r.ood, ood_reference(rest, others)) for r in held)

    worst = max(_leave_one_case_out(records, held_out))
    validation = {r.case.split("/")[0] for r in records}
    for i, name in enumerate(names):
        if name in validation:
            continue
        reference = np.asarray(ood_reference(records, np.delete(rows, i, 0))).reshape(2, -1)
        intensity_only = tuple(
            float(v) for v in (*reference[0, :INTENSITY_FEATURES], *reference[1, :INTENSITY_FEATURES])
        )
        worst = max(worst, ood_score(rows[i], intensity_only))
    return 1.1 * worst


def fit(
    records: list[CaseRecord],
    mode: Mode,
    description: str,
    intensities: dict[str, np.ndarray] | None = None,
    run: dict | None = None,
    foreign: dict[str, np.ndarray] | None = None,
) -> TrustCalibration:
    """The calibration from validation records; `intensities` (case -> intensity features of the
    training and validation scans) widen the OOD reference beyond the validation runs, and `foreign`
    (scan -> OOD features of the model's runs on another data set's scans) tries the OOD check."""
    candidates = SCORES if mode is Mode.ANALOG else ("entropy_inside", "entropy_border", "uncertain_ratio")
    score, _ = choose_score(records, candidates)
    usable = [r for r in records if np.isfinite(r.scores[score])]
    x, y = np.array([r.scores[score] for r in usable]), np.array([r.dice for r in usable])
    model = _isotonic(score, x, y)

    low, high = range_bounds(held_out_errors(usable, score))
    if intensities is None:  # the validation runs' own intensities, one row per case
        intensities = {r.case.split("/")[0]: r.ood[:INTENSITY_FEATURES] for r in records}
    reference = ood_reference(records, np.stack(list(intensities.values())))
    threshold = ood_threshold(records, intensities)
    tried = [ood_score(f, reference) > threshold for f in (foreign or {}).values()]
    return TrustCalibration(
        score=score,
        knots=tuple(float(v) for v in model.X_thresholds_),
        expected=tuple(float(v) for v in model.y_thresholds_),
        error_low=low,
        error_high=high,
        review_below=FAILURE_DICE,
        lesion_review_above=lesion_threshold(records),
        ood_threshold=threshold,
        ood_reference=reference,
        fitted_on=description,
        run=dict(run or {}),
        foreign_checked=len(tried),
        foreign_flagged=int(sum(tried)),
    )


def scan_intensities(spec: ModelSpec, data: Path) -> dict[str, np.ndarray]:
    """Intensity features of every training and validation scan of the model (never its test scans)."""
    out = {}
    for split in ("train", "val"):
        for case in cases_of_split(spec, data, split)[1]:
            out[case.case_id] = intensity_features(load_scan(case.image).data, spec.preprocessing)
    return out


def foreign_scans(spec: ModelSpec, data_root: Path, split: str, count: int) -> dict[str, Volume]:
    """The first `count` scans of `split` of the data set foreign to the model (none if absent), by the
    split of that data set's own digital U-Net."""
    other = FOREIGN.get(spec.data["dataset"])
    if other is None or not (data_root / other).is_dir():
        return {}
    owner = find_model(f"{other}_unet_digital")
    cases = cases_of_split(owner, data_root / other, split)[1][:count]
    return {f"{other}/{case.case_id}": load_scan(case.image) for case in cases}


def validation_records(spec: ModelSpec, data: Path, mode: Mode) -> list[CaseRecord]:
    """The model's validation records: saved ones if measured on these weights, else measured now."""
    path = RECORDS / f"{spec.name}_{mode}_val.json"
    saved = trust_records.load(path, spec)
    if saved is not None:
        return saved["records"]
    progress = trust_records.progress_path(path)
    records = trust_records.measure(spec, data, mode, "val", PROGRAMMINGS, progress=progress)
    trust_records.save(path, spec, mode, "val", records)
    return records


def calibrate(spec: ModelSpec, data: Path, mode: Mode) -> TrustCalibration:
    records = validation_records(spec, data, mode)
    intensities = scan_intensities(spec, data)
    cases = len({r.case.split("/")[0] for r in records})
    run = CALIBRATION_RUN if mode is Mode.ANALOG else {}
    chips = (
        f"analog noise {run['noise_level']:g} drift {run['drift_s']:g} s MC {run['mc_samples']}, "
        f"{PROGRAMMINGS} programmings"
        if run
        else "digital"
    )
    description = f"val: {cases} cases, {chips}; OOD intensities over {len(intensities)} train+val scans"
    volumes = foreign_scans(spec, data.parent, "train", FOREIGN_CHECKS)
    foreign = {k: np.asarray(v) for k, v in trust_records.foreign_features(spec, volumes, mode).items()}
    return fit(records, mode, description, intensities, run, foreign)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding one folder per data set")
    parser.add_argument("--model", nargs="+", required=True)
    parser.add_argument("--mode", nargs="+", choices=[m.value for m in Mode], default=[m.value for m in Mode])
    args = parser.parse_args(argv)
    for name in args.model:
        spec = find_model(name)
        for mode in map(Mode, args.mode):
            calibration = calibrate(spec, args.data / spec.data["dataset"], mode)
            stored = read_spec(spec.folder)  # as it is now: another run may have stored its mode meanwhile
            stored.trust[mode.value] = calibration.to_dict()
            write_spec(stored, spec.folder)
            print(
                f"{spec.name} {mode}: score {calibration.score}, {calibration.fitted_on}; OOD check flagged "
                f"{calibration.foreign_flagged} of {calibration.foreign_checked} foreign scans"
            )


if __name__ == "__main__":
    main()
