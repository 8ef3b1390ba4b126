"""Fit a model's trust calibration on its validation cases, never on its test cases.

For each validation case (several chip programmings in analog mode, for more points) the model's
result gives every candidate case score (`engine.trust.SCORES`), its true Dice, the per-lesion
uncertainties and the out-of-distribution features. Then, on validation only:
- the score is the candidate with the strongest rank correlation with Dice;
- its mapping to an expected Dice is an isotonic regression, and the range shown around it is the
  10th-90th percentile of leave-one-case-out errors (honest, unlike in-sample residuals);
- a lesion is flagged above the uncertainty that best separates predicted lesions that touch the
  reference from those that do not (Youden's J);
- the OOD threshold is 1.1 times the largest leave-one-case-out OOD score of the validation scans.
The result goes into model.json under "trust", per mode. Refit it whenever the model is replaced:

    python -m training.trust_calibration --data ../shared/data --model lgg_unet_hwa [--mode analog digital]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import spearmanr
from sklearn.isotonic import IsotonicRegression

from engine.findings import lesions
from engine.inference import Segmenter
from engine.metrics import dice_per_label
from engine.model_store import ModelSpec, find_model, write_spec
from engine.pipeline import segment_volume
from engine.run_settings import Mode, RunSettings
from engine.trust import (
    FAILURE_DICE,
    HIGHER_IS_BETTER,
    SCORES,
    TrustCalibration,
    case_scores,
    ood_features,
    ood_score,
)
from engine.volume import load_scan
from training.evaluate import cases_of_split

CALIBRATION_RUN = {"mc_samples": 8, "noise_level": 1.0, "drift_s": 86400.0}  # the model table's nominal chips
PROGRAMMINGS = 3


@dataclass
class CaseRecord:
    case: str
    dice: float
    scores: dict[str, float]
    lesions: list[tuple[float, bool]]  # (mean uncertainty, touches the reference)
    ood: np.ndarray


def measure(spec: ModelSpec, data: Path, mode: Mode, split: str = "val") -> list[CaseRecord]:
    """One record per (case, programming) of `split`."""
    layout, cases = cases_of_split(spec, data, split)
    if layout != "msd":
        raise ValueError(
            f"{spec.name}: trust calibration needs 3D volumes; {layout} images are not supported yet"
        )
    seeds = range(PROGRAMMINGS) if mode is Mode.ANALOG else range(1)
    records = []
    for seed in seeds:
        run = RunSettings(
            model=spec.name,
            mode=mode,
            seed=seed,
            **(CALIBRATION_RUN if mode is Mode.ANALOG else {"mc_samples": 1}),
        )
        segmenter = Segmenter(spec, run)
        for case in cases:
            volume, truth = load_scan(case.image), np.rint(load_scan(case.label).data).astype(np.int64)
            result = segment_volume(segmenter, volume)
            dice = float(np.mean(list(dice_per_label(result.segmentation, truth, spec.num_classes).values())))
            components, _ = ndimage.label(result.segmentation > 0, structure=np.ones((3, 3, 3)))
            found = [
                (lesion.mean_uncertainty, bool(truth[components == components[lesion.centre]].any()))
                for lesion in lesions(result)
            ]
            records.append(
                CaseRecord(
                    f"{case.case_id}/seed{seed}",
                    dice,
                    case_scores(result),
                    found,
                    ood_features(result, spec.preprocessing),
                )
            )
            print(f"{spec.name} {mode} {case.case_id} seed {seed}: Dice {dice:.3f}", flush=True)
    return records


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


def fit(records: list[CaseRecord], mode: Mode, description: str) -> TrustCalibration:
    candidates = SCORES if mode is Mode.ANALOG else ("entropy_inside", "entropy_border", "uncertain_ratio")
    score, _ = choose_score(records, candidates)
    usable = [r for r in records if np.isfinite(r.scores[score])]
    x, y = np.array([r.scores[score] for r in usable]), np.array([r.dice for r in usable])
    model = _isotonic(score, x, y)

    def held_out_errors(held: list[CaseRecord], rest: list[CaseRecord]) -> list[float]:
        m = _isotonic(score, np.array([r.scores[score] for r in rest]), np.array([r.dice for r in rest]))
        return [r.dice - float(m.predict([r.scores[score]])[0]) for r in held]

    errors = np.concatenate(_leave_one_case_out(usable, held_out_errors))
    features = np.stack([r.ood for r in records])
    reference = tuple(float(v) for v in (*features.mean(0), *features.std(0)))

    def held_out_ood(held: list[CaseRecord], rest: list[CaseRecord]) -> float:
        f = np.stack([r.ood for r in rest])
        ref = tuple(float(v) for v in (*f.mean(0), *f.std(0)))
        return max(ood_score(r.ood, ref) for r in held)

    return TrustCalibration(
        score=score,
        knots=tuple(float(v) for v in model.X_thresholds_),
        expected=tuple(float(v) for v in model.y_thresholds_),
        error_low=float(np.quantile(errors, 0.1)),
        error_high=float(np.quantile(errors, 0.9)),
        review_below=FAILURE_DICE,
        lesion_review_above=lesion_threshold(records),
        ood_threshold=1.1 * max(_leave_one_case_out(records, held_out_ood)),
        ood_reference=reference,
        fitted_on=description,
    )


def calibrate(spec: ModelSpec, data: Path, mode: Mode) -> TrustCalibration:
    records = measure(spec, data, mode)
    cases = len({r.case.split("/")[0] for r in records})
    run = (
        f"analog noise {CALIBRATION_RUN['noise_level']:g} drift {CALIBRATION_RUN['drift_s']:g} s "
        f"MC {CALIBRATION_RUN['mc_samples']}, {PROGRAMMINGS} programmings"
        if mode is Mode.ANALOG
        else "digital"
    )
    return fit(records, mode, f"val: {cases} cases, {run}")


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
            spec.trust[mode.value] = calibration.to_dict()
            write_spec(spec, spec.folder)
            print(f"{spec.name} {mode}: score {calibration.score}, {calibration.fitted_on}")


if __name__ == "__main__":
    main()
