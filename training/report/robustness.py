"""Claim 1, noise robustness (paper Fig. 1): test Dice of every model, digitally and on chips over a
noise sweep.

Each run is one pass of a model over a test split with one programmed chip and single reads; the runs
are appended to `OUT/measurements/robustness_runs.csv` and averaged over programmings here. A run the
claims sweep (`training.report.claims`) has already made on the same weights (the same chips: nominal
noise, single reads, the same drift and programming; or digitally) is taken from its per-patient rows
instead of being measured again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.executor import Executor
from engine.model_store import NOMINAL_CHIPS, ModelSpec, weights_hash
from engine.run_settings import Mode
from training.evaluate import evaluate_run
from training.report.jobs import CLAIMS_RUN_KEY, CLAIMS_RUNS_FILE, Bar, DatasetSplit, RobustnessJob, RowCache

NOISE_LEVELS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
DRIFTS = {"1 hour": 3600.0, "1 day": 86400.0}
PAPER_DROP = {"unet": 0.15, "unetpp": 0.22, "swinunetr": 0.04}  # Dice drop at nominal noise, brain
RUNS_FILE = "robustness_runs.csv"
RUN_KEY = ("model", "cases", "noise", "drift_s", "seed")


def robustness_jobs(sets: dict[str, DatasetSplit], programmings: int) -> list[RobustnessJob]:
    """Every run of the sweep: each model digitally once, then on chips per drift, noise and programming.

    At noise 0 a chip is the ideal device (no programming, drift-variability or read noise), so its
    programmings agree to the last bit: it is measured once. Digital runs come first, then nominal
    noise (1.0), so that a partial sweep already gives the drop table; the rest goes programming by
    programming, so that a partial sweep has every model's whole curve, over fewer programmings.
    """
    jobs = []
    for s in sets.values():
        jobs += [
            RobustnessJob(spec, s.layout, s.cases, Mode.DIGITAL, 0.0, 3600.0, 0) for spec in s.models.values()
        ]
        jobs += [
            RobustnessJob(spec, s.layout, s.cases, Mode.ANALOG, n, d, seed)
            for spec in s.models.values()
            for d in DRIFTS.values()
            for n in NOISE_LEVELS
            for seed in range(programmings if n > 0 else 1)
        ]
    return sorted(jobs, key=lambda j: j.priority)


def _robustness_run(job: RobustnessJob) -> float:
    return evaluate_run(job.spec, job.cases, job.layout, job.run, progress=False)["mean_dice"]


def from_claims(jobs: list[RobustnessJob], out: Path) -> list[tuple[RobustnessJob, float]]:
    """Those of `jobs` that the claims sweep measured on every one of their patients, with their mean Dice."""
    path = out / "measurements" / CLAIMS_RUNS_FILE
    if not jobs or not path.exists():
        return []
    dice: dict[tuple, float] = {}
    for r in RowCache(path, CLAIMS_RUN_KEY).rows:
        if r["reads"] in ("digital", "single"):
            dice[(r["model"], r["weights"], r["reads"], float(r["drift_s"]), int(r["seed"]), r["case"])] = (
                float(r["dice"])
            )
    hashes: dict[str, str] = {}
    found = []
    for job in jobs:
        if job.mode == Mode.ANALOG and job.noise != 1.0:
            continue
        weights = hashes.setdefault(job.spec.name, weights_hash(job.spec)[:16])
        digital = job.mode == Mode.DIGITAL
        run = ("digital", 0.0, 0) if digital else ("single", job.drift_s, job.seed)
        per_case = [dice.get((job.spec.name, weights, *run, c.case_id)) for c in job.cases]
        if all(d is not None for d in per_case):
            found.append((job, float(np.mean(per_case))))
    return found


def robustness(
    sets: dict[str, DatasetSplit],
    out: Path,
    programmings: int,
    bar: Bar,
    executor: Executor | None = None,
    measure: bool = True,
    nominal_only: bool = False,
) -> tuple[list[dict], int, int]:
    """Mean test Dice of every model of every data set, digitally and on chips over the noise sweep.

    Returns the measured rows, and how many of the sweep's runs are measured out of how many.
    `nominal_only` measures just the digital runs and those at noise 1.0 (the drop table). Each run
    is one unit of `executor` (default: this process)."""
    cache = RowCache(out / "measurements" / RUNS_FILE, RUN_KEY)
    jobs = robustness_jobs(sets, programmings)
    wanted = [j for j in jobs if not (nominal_only and j.mode == "analog" and j.noise != 1.0)]
    todo = [j for j in wanted if not cache.has(**j.key)]
    for job, dice in from_claims(todo, out):
        cache.add({**job.key, "mean_dice": dice})
    todo = [j for j in todo if not cache.has(**j.key)]
    if measure:
        desc = "noise robustness, nominal noise" if nominal_only else "noise robustness"
        for job, dice in bar(
            (executor or Executor(0)).map(_robustness_run, todo),
            desc,
            len(wanted),
            len(wanted) - len(todo),
        ):
            cache.add({**job.key, "mean_dice": dice})
    done = sum(cache.has(**j.key) for j in jobs)
    return cache.rows, done, len(jobs)


def robustness_table(rows: list[dict], sets: dict[str, DatasetSplit]) -> tuple[list[dict], dict[str, float]]:
    """Mean and std over programmings per (model, drift, noise); each model's digital Dice."""
    table, digital = [], {}
    for dataset, s in sets.items():
        mine = [r for r in rows if int(r["cases"]) == len(s.cases)]
        for r in mine:
            if r["noise"] == "digital":
                digital[r["model"]] = float(r["mean_dice"])
        for (arch, kind), spec in s.models.items():
            for dname, d in DRIFTS.items():
                for n in NOISE_LEVELS:
                    vals = [
                        float(r["mean_dice"])
                        for r in mine
                        if r["model"] == spec.name
                        and r["noise"] != "digital"
                        and float(r["noise"]) == n
                        and float(r["drift_s"]) == d
                    ]
                    if vals:
                        table.append(
                            {
                                "dataset": dataset,
                                "arch": arch,
                                "kind": kind,
                                "model": spec.name,
                                "drift": dname,
                                "noise": n,
                                "mean": float(np.mean(vals)),
                                "std": float(np.std(vals)),
                                "n": len(vals),
                            }
                        )
    return table, digital


def ensemble_columns(spec: ModelSpec, digital: float) -> dict:
    """The model's recorded 4-chip ensemble Dice at nominal noise after 1 day, and its drop ("-" if none)."""
    recorded = spec.test_metrics(NOMINAL_CHIPS)
    if not recorded:
        return {"ensemble_day": "-", "ensemble_drop_day": "-"}
    return {"ensemble_day": recorded["mean_dice"], "ensemble_drop_day": digital - recorded["mean_dice"]}


def drop_rows(table: list[dict], digital: dict[str, float], sets: dict[str, DatasetSplit]) -> list[dict]:
    """Per model measured at nominal noise after both drift times: its Dice drops against its digital run."""
    drops = []
    for dataset, s in sets.items():
        for (arch, kind), spec in s.models.items():
            at = {r["drift"]: r for r in table if r["model"] == spec.name and r["noise"] == 1.0}
            if spec.name in digital and len(at) == len(DRIFTS):
                drops.append(
                    {
                        "dataset": dataset,
                        "model": spec.name,
                        "arch": arch,
                        "kind": kind,
                        "programmings": min(r["n"] for r in at.values()),
                        "digital": digital[spec.name],
                        "hour": at["1 hour"]["mean"],
                        "hour_std": at["1 hour"]["std"],
                        "drop_hour": digital[spec.name] - at["1 hour"]["mean"],
                        "day": at["1 day"]["mean"],
                        "day_std": at["1 day"]["std"],
                        "drop_day": digital[spec.name] - at["1 day"]["mean"],
                        "paper_drop": PAPER_DROP[arch] if kind == "digital" and dataset == "lgg" else "-",
                        **ensemble_columns(spec, digital[spec.name]),
                    }
                )
    return drops


@dataclass(frozen=True)
class Comparison:
    """The isotropic model's (Swin-UNETR's) Dice drop against the pyramidal models' under one protocol."""

    isotropic: float
    others: dict[str, float]  # architecture -> drop

    @property
    def beats(self) -> list[str]:
        """The pyramidal models that lose more than the isotropic one."""
        return [a for a, d in self.others.items() if self.isotropic < d]


def digitally_trained_lgg(drops: list[dict]) -> dict[str, dict]:
    """The drop rows of the paper's comparison: LGG models trained digitally, by architecture."""
    return {r["arch"]: r for r in drops if r["dataset"] == "lgg" and r["kind"] == "digital"}


def isotropic_comparison(rows: dict[str, dict], key: str) -> Comparison | None:
    """Swin-UNETR against the pyramidal models on the drop in column `key`; None unless both are measured."""
    drop = {a: r[key] for a, r in rows.items() if isinstance(r.get(key), float)}
    if "swinunetr" not in drop or len(drop) < 2:
        return None
    return Comparison(drop["swinunetr"], {a: d for a, d in drop.items() if a != "swinunetr"})
