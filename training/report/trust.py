"""Does the trust layer tell the reader when not to believe the AI? Measured on each model's TEST split.

Everything judged here was chosen on validation (`training/trust_calibration.py`): the case score,
its map to an expected Dice, the OOD reference and threshold. Each model's test split is measured
once per set of weights (the records carry the weights' hash) and only read after that:
- pixels near the lesion (within `engine.findings.NEAR_MM` of the true or predicted lesion): error
  AUROC of the entropy and of the mutual information, and the ECE of the top-class probability;
- cases: failure (Dice < 0.7) detection AUROC, AURC and E-AURC (risk 1 - Dice) of the chosen score
  against the agreement between chips (mean pairwise Dice, the baseline of Zenk, Jaeger et al. 2025),
  Spearman of the score against Dice, the mean absolute error of the expected Dice and how often the
  true Dice falls in the range shown;
- OOD: false alarms on the in-distribution test scans, and flags on scans of another anatomy or
  modality (the other data set's test scans and the abdominal CT).

    python -m training.report.trust --data ../shared/data [--model lgg_unet_hwa:analog ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import binomtest, spearmanr
from sklearn.metrics import roc_auc_score

from engine.model_store import ModelSpec, find_model
from engine.run_settings import Mode
from engine.trust import FAILURE_DICE, HIGHER_IS_BETTER, TrustCalibration, calibration_for, ood_score
from engine.volume import Volume, load_scan
from training import trust_records
from training.report.markdown import md_table, write_csv
from training.trust_calibration import RECORDS, foreign_scans, validation_coverage
from training.trust_records import CONFIDENCE_BINS, PIXEL_MAPS, CaseRecord

# (model, mode) measured, in the order of the table; the LGG HWA U-Net on chips carries the targets
MEASURED = (
    ("lgg_unet_hwa", Mode.ANALOG),
    ("lgg_unet_hwa", Mode.DIGITAL),
    ("lgg_unet_digital", Mode.DIGITAL),
    ("lgg_swinunetr_hwa", Mode.ANALOG),
    ("lgg_swinunetr_hwa", Mode.DIGITAL),
    ("lgg_swinunetr_digital", Mode.DIGITAL),
    ("hippocampus_unet_hwa", Mode.ANALOG),
    ("hippocampus_unet_hwa", Mode.DIGITAL),
    ("hippocampus_unet_digital", Mode.DIGITAL),
    ("nuclei_unet_hwa", Mode.ANALOG),
    ("nuclei_unet_hwa", Mode.DIGITAL),
    ("nuclei_unet_digital", Mode.DIGITAL),
)
TEST_PROGRAMMINGS = 1  # one chip programming per test case (each record is MC 8 on those chips)
FOREIGN_SCANS = 8  # of the other data set's test scans, plus the CT


def foreign_volumes(spec: ModelSpec, data_root: Path) -> dict[str, Volume]:
    """Scans the model was not made for: the other data set's first test scans and the abdominal CT."""
    volumes = foreign_scans(spec, data_root, "test", FOREIGN_SCANS)
    for ct in sorted((data_root / "ct_example").glob("*ct*.nii*"))[:1]:
        volumes[f"ct/{ct.name}"] = load_scan(ct)
    return volumes


def test_records(spec: ModelSpec, mode: Mode, data_root: Path) -> dict:
    """The model's test records and foreign OOD features: saved ones for these weights, else measured."""
    path = RECORDS / f"{spec.name}_{mode}_test.json"
    saved = trust_records.load(path, spec)
    if saved is not None:
        return saved
    data = data_root / spec.data["dataset"]
    progress = trust_records.progress_path(path)
    records = trust_records.measure(spec, data, mode, "test", TEST_PROGRAMMINGS, progress=progress)
    foreign = trust_records.foreign_features(spec, foreign_volumes(spec, data_root), mode)
    trust_records.save(path, spec, mode, "test", records, foreign=foreign)
    return trust_records.load(path, spec) or {}


def _histogram_auroc(wrong: np.ndarray, right: np.ndarray) -> float:
    """AUROC of a binned score separating wrong from right pixels (ties within a bin count half)."""
    if wrong.sum() == 0 or right.sum() == 0:
        return float("nan")
    right_below = np.concatenate([[0], np.cumsum(right)[:-1]])
    return float((wrong * (right_below + 0.5 * right)).sum() / (wrong.sum() * right.sum()))


def pixel_metrics(records: list[CaseRecord]) -> dict[str, float]:
    """Near-lesion error AUROC per map and the ECE of the top-class probability, over all records."""
    out = {}
    for name in PIXEL_MAPS:
        if not all(name in r.pixels for r in records):  # measured before this map was recorded
            continue
        wrong = np.sum([r.pixels[name][0] for r in records], axis=0)
        right = np.sum([r.pixels[name][1] for r in records], axis=0)
        out[f"auroc_{name}"] = _histogram_auroc(wrong, right)
    count, correct, confidence = (
        np.sum([r.pixels["confidence"][i] for r in records], axis=0) for i in range(3)
    )
    confidence = confidence / 1e6
    seen = count > 0
    gap = np.abs(correct[seen] / count[seen] - confidence[seen] / count[seen])
    out["ece"] = float((count[seen] * gap).sum() / count.sum())
    assert len(count) == CONFIDENCE_BINS
    return out


def _doubt(score: str, values: np.ndarray) -> np.ndarray:
    return -values if score in HIGHER_IS_BETTER else values


def aurc(doubt: np.ndarray, risk: np.ndarray) -> tuple[float, float]:
    """Area under the risk-coverage curve (cases kept most-trusted first) and its excess over the
    best possible order (E-AURC)."""

    def area(order: np.ndarray) -> float:
        return float(np.mean(np.cumsum(risk[order]) / np.arange(1, len(risk) + 1)))

    value = area(np.argsort(doubt, kind="stable"))
    return value, value - area(np.argsort(risk, kind="stable"))


def case_metrics(records: list[CaseRecord], score: str) -> dict[str, float]:
    """Failure detection by one case score (NaN where it cannot be read)."""
    values = np.array([r.scores.get(score, np.nan) for r in records])
    dice = np.array([r.dice for r in records])
    ok = np.isfinite(values)
    doubt, dice = _doubt(score, values[ok]), dice[ok]
    failed = dice < FAILURE_DICE
    area, excess = aurc(doubt, 1 - dice) if ok.any() else (float("nan"), float("nan"))
    return {
        "cases": int(ok.sum()),
        "failures": int(failed.sum()),
        "failure_auroc": float(roc_auc_score(failed, doubt))
        if 0 < failed.sum() < len(failed)
        else float("nan"),
        "aurc": area,
        "e_aurc": excess,
        "spearman": float(spearmanr(doubt, dice)[0]) if np.ptp(doubt) > 0 else float("nan"),
    }


def expected_dice_metrics(records: list[CaseRecord], calibration: TrustCalibration) -> dict[str, float]:
    expected = np.array([calibration.expected_dice(r.scores[calibration.score]) for r in records])
    dice = np.array([r.dice for r in records])
    ok = np.isfinite(expected)
    low, high = expected + calibration.error_low, expected + calibration.error_high
    inside = (dice >= low) & (dice <= high)
    if not ok.any():
        return {"expected_mae": float("nan"), "in_range": float("nan"), "in_range_shown": "-"}
    hits, n = int(inside[ok].sum()), int(ok.sum())
    # a coverage read off a few test cases is itself uncertain: its 95 % (Wilson) interval says
    # whether it differs from the 80 % nominal at all
    interval = binomtest(hits, n).proportion_ci(0.95, method="wilson")
    return {
        "expected_mae": float(np.abs(expected[ok] - dice[ok]).mean()),
        "in_range": hits / n,
        "in_range_low": float(interval.low),
        "in_range_high": float(interval.high),
        "in_range_shown": f"{hits / n:.0%} ({100 * interval.low:.0f}-{interval.high:.0%})",
    }


def ood_metrics(saved: dict, calibration: TrustCalibration) -> dict[str, float]:
    def flagged(features: list) -> bool:
        return ood_score(np.asarray(features), calibration.ood_reference) > calibration.ood_threshold

    own = [flagged(r.ood) for r in saved["records"]]
    foreign = {name: flagged(f) for name, f in saved.get("foreign", {}).items()}
    return {
        "false_alarms": float(np.mean(own)),
        "foreign_flagged": float(np.mean(list(foreign.values()))) if foreign else float("nan"),
        "foreign_scans": len(foreign),
        "foreign_missed": ", ".join(n for n, f in foreign.items() if not f) or "none",
    }


def trust_row(spec: ModelSpec, mode: Mode, saved: dict) -> dict:
    """One row of the table: the model's test records judged by its validation calibration."""
    calibration = calibration_for(spec, mode)
    records = saved["records"]
    row: dict = {"model": spec.name, "mode": str(mode), "cases": len(records)}
    row["lowest_dice"] = min(r.dice for r in records)
    row.update(pixel_metrics(records))
    if mode is Mode.DIGITAL:  # one pass: no spread between samples, so no mutual information
        row["auroc_mutual_information"] = row["auroc_expected_entropy"] = "-"
    if calibration is None:
        return {**row, "score": "not calibrated"}
    chosen = case_metrics(records, calibration.score)
    baseline = case_metrics(records, "pairwise_dice") if mode is Mode.ANALOG else {}
    row.update(
        score=calibration.score,
        failures=chosen["failures"],
        failure_auroc=chosen["failure_auroc"],
        aurc=chosen["aurc"],
        e_aurc=chosen["e_aurc"],
        spearman=chosen["spearman"],
        baseline_auroc=baseline.get("failure_auroc", "-"),
        baseline_aurc=baseline.get("aurc", "-"),
        baseline_e_aurc=baseline.get("e_aurc", "-"),
        baseline_spearman=baseline.get("spearman", "-"),
        **expected_dice_metrics(records, calibration),
        **ood_metrics(saved, calibration),
    )
    if calibration.foreign_checked:
        row["foreign_val"] = f"{calibration.foreign_flagged} of {calibration.foreign_checked}"
    validation = trust_records.load(RECORDS / f"{spec.name}_{mode}_val.json", spec)
    if validation is not None:  # what the range promised before the test cases were read
        row["val_in_range"] = validation_coverage(validation["records"], calibration.score)
    if not chosen["failures"]:  # AUROC needs both classes: with no failure there is nothing to detect
        row.update(failure_auroc="no failures", baseline_auroc="no failures" if baseline else "-")
    return row


CASE_COLUMNS = [
    ("model", "model", ""),
    ("mode", "mode", ""),
    ("cases", "test cases", "d"),
    ("failures", "failures (Dice < 0.7)", "d"),
    ("score", "score (chosen on val)", ""),
    ("failure_auroc", "failure AUROC", ".2f"),
    ("baseline_auroc", "AUROC, chip agreement", ".2f"),
    ("aurc", "AURC", ".3f"),
    ("baseline_aurc", "AURC, chip agreement", ".3f"),
    ("e_aurc", "E-AURC", ".3f"),
    ("spearman", "Spearman (score, Dice)", ".2f"),
    ("expected_mae", "expected-Dice MAE", ".3f"),
    ("val_in_range", "in range, val (nested)", ".0%"),
    ("in_range_shown", "true Dice in range (95 % interval)", ""),
]
PIXEL_OOD_COLUMNS = [
    ("model", "model", ""),
    ("mode", "mode", ""),
    ("auroc_entropy", "pixel AUROC entropy (near lesion)", ".3f"),
    ("auroc_mutual_information", "pixel AUROC MI (near lesion)", ".3f"),
    ("auroc_expected_entropy", "pixel AUROC mean chip entropy (near lesion)", ".3f"),
    ("ece", "ECE (near lesion)", ".3f"),
    ("false_alarms", "OOD false alarms (test)", ".0%"),
    ("foreign_val", "foreign training scans flagged when fitted", ""),
    ("foreign_flagged", "foreign test scans flagged", ".0%"),
    ("foreign_missed", "foreign scans missed", ""),
]


def _targets(rows: list[dict]) -> str:
    """The verdict sentence, read off the numbers against the issue's targets."""
    main = next((r for r in rows if r["model"] == "lgg_unet_hwa" and r["mode"] == "analog"), None)
    if main is None or "failure_auroc" not in main:
        return "The LGG HWA U-Net on chips, which carries the targets, is not measured yet."
    best_pixel = max(
        main.get(f"auroc_{name}", 0.0) for name in PIXEL_MAPS if isinstance(main.get(f"auroc_{name}"), float)
    )
    checks = [
        ("failure AUROC >= 0.90", main["failure_auroc"], main["failure_auroc"] >= 0.90),
        ("Spearman <= -0.8", main["spearman"], main["spearman"] <= -0.8),
        ("expected-Dice MAE <= 0.1", main["expected_mae"], main["expected_mae"] <= 0.1),
        ("pixel AUROC near the lesion >= 0.90", best_pixel, best_pixel >= 0.90),
    ]
    met = [f"{name} ({value:.2f})" for name, value, ok in checks if ok]
    missed = [f"{name} ({value:.2f})" for name, value, ok in checks if not ok]
    false_alarms = max(r.get("false_alarms", 0.0) for r in rows)
    short = [
        f"{r['model']} ({r['mode']}) {r['foreign_flagged']:.0%}"
        for r in rows
        if isinstance(r.get("foreign_flagged"), float) and r["foreign_flagged"] < 1.0
    ]
    foreign = (
        f"foreign scans flagged short of the 100 % target: {', '.join(short)}"
        if short
        else "every foreign scan flagged (target 100 %)"
    )
    quiet = [r for r in rows if r.get("failure_auroc") == "no failures"]
    no_failures = (
        f" {', '.join(sorted({r['model'] for r in quiet}))}: no test case failed (every Dice >= 0.7, "
        f"lowest {min(r['lowest_dice'] for r in quiet):.2f}), so failure detection cannot be measured "
        "there, and with so narrow a Dice spread the score's rank correlation is weak."
        if quiet
        else ""
    )
    return (
        f"LGG HWA U-Net on chips (noise 1, 1 day, MC 8), test split: met {', '.join(met) or 'none'}; "
        f"missed {', '.join(missed) or 'none'}. OOD: at most {false_alarms:.0%} false alarms on "
        f"in-distribution test scans (target <= 5 %); {foreign}." + no_failures
    )


def _coverage(rows: list[dict]) -> str:
    """Whether any range's test coverage is told apart from its 80 % nominal by its interval."""
    judged = [r for r in rows if "in_range_low" in r]
    off = [
        f"{r['model']} ({r['mode']}) {r['in_range']:.0%}"
        for r in judged
        if not r["in_range_low"] <= 0.8 <= r["in_range_high"]
    ]
    if not judged:
        return "No expected-Dice range is measured yet."
    if off:
        return f"Coverage told apart from the 80 % nominal by its interval: {', '.join(off)}."
    return (
        "Every range's coverage interval holds the 80 % nominal: at these test sizes a coverage of "
        f"{min(r['in_range'] for r in judged):.0%} to {max(r['in_range'] for r in judged):.0%} "
        "does not tell the ranges apart from nominal."
    )


def _table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    return md_table([{key: row.get(key, "-") for key, _, _ in columns} for row in rows], columns)


def trust_section(rows: list[dict], unmeasured: list[str]) -> list[str]:
    text = [
        "### Case-level trust and OOD (test split; every choice made on validation)",
        "",
        "Does the verdict tell the reader when not to believe the AI? Each model's calibration "
        "(`training/trust_calibration.py`: score, expected-Dice map, range, OOD threshold) was fitted on "
        "its validation patients only; here it meets the test patients once. Pixels are judged near the "
        "lesion (within 10 mm of the true or predicted lesion; for nuclei, whose images carry no pixel "
        "size, 10 pixels of a nucleus), not over the head. The chip-agreement "
        "columns are the baseline score (mean pairwise Dice between the MC samples' segmentations). "
        "The expected-Dice range holds 80 % of the leave-one-patient-out validation errors by the "
        "split-conformal rule (the plain 10th-90th percentile covers less at these sizes). Its coverage "
        "on validation, each patient's range refitted without that patient, is shown beside the "
        "share of test cases whose true Dice falls in it, with its 95 % interval. When a calibration is "
        "fitted, its OOD check is also tried on the first training scans of another data set (never "
        "test scans): where it misses any, the verdict tells the reader that not flagging a scan "
        "vouches for nothing.",
        "",
        _table(rows, CASE_COLUMNS),
        "",
        _coverage(rows),
        "",
        _table(rows, PIXEL_OOD_COLUMNS),
        "",
        _targets(rows),
        "",
    ]
    if unmeasured:
        text += [f"Not measured yet: {', '.join(unmeasured)}.", ""]
    return text


def trust_report(data_root: Path, out: Path, measure: bool, models=MEASURED) -> list[str]:
    """The section, measuring what is missing when `measure` (each model's test split, once)."""
    rows, unmeasured = [], []
    for name, mode in models:
        spec = find_model(name)
        path = RECORDS / f"{name}_{mode}_test.json"
        saved = test_records(spec, mode, data_root) if measure else trust_records.load(path, spec)
        if saved:
            rows.append(trust_row(spec, mode, saved))
        else:
            unmeasured.append(f"{name} ({mode})")
    write_csv(rows, out / "trust.csv")
    return trust_section(rows, unmeasured)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding one folder per data set")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--model", nargs="+", help="NAME:MODE pairs (default: all of MEASURED)")
    args = parser.parse_args(argv)
    models = [(n, Mode(m)) for n, m in (x.split(":") for x in args.model)] if args.model else MEASURED
    print("\n".join(trust_report(args.data, args.out, True, models)))


if __name__ == "__main__":
    main()
