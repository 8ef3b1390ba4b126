"""The paper's claims settled with confidence intervals: its drift protocol, many chip programmings,
and a paired bootstrap over patients and programmings (`training.report.bootstrap`).

The protocol is the one of the authors' analog-NAS code: nominal device noise, weights read 60 s,
1 hour, 1 day and 30 days after programming, each model on many programmings, each programming read
once (single reads) and as a Monte-Carlo ensemble. Every (model, reads, drift, programming) is one
pass over the LGG test split, kept per patient in `OUT/measurements/claims_runs.csv` with the weights'
sha256 (a replaced model is measured again), so the sweep resumes where it stopped and runs on any
`engine.executor.Executor`.

    python -m training.report.claims --data ../shared/data --programmings 10 [--workers N]

`--reads`, `--drift` and `--arch` measure part of the protocol now (a machine's share, or the cells
that fit in a session); the section it then writes into `OUT/README.md` still shows every cell
measured so far, of every shipped model. `--from-measurements` only rewrites that section.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.executor import Executor
from engine.model_store import ModelSpec, weights_hash
from engine.run_settings import Mode, RunSettings
from training.evaluate import evaluate_run
from training.report.bootstrap import Interval, Term, paired_difference
from training.report.jobs import CLAIMS_RUN_KEY, CLAIMS_RUNS_FILE, Bar, DatasetSplit, RowCache
from training.report.markdown import md_table, replace_section, write_csv

DRIFTS = {"60 s": 60.0, "1 hour": 3600.0, "1 day": 86400.0, "30 days": 30 * 86400.0}
READS = {"single": 1, "MC 4": 4}  # chip reads per programming: one, or the ensemble the targets use
NOISE = 1.0
# the kind of a mirror-averaging model read without its mirror: the claims' control for what the
# mirror, not training, does to Dice and entropy
NO_MIRROR = ", no mirror"


@dataclass(frozen=True)
class ClaimJob:
    """One pass of a model over the test split: digitally, or on one programming at one drift."""

    spec: ModelSpec
    weights: str  # sha256 of the model's weights, so that rows of replaced weights are not reused
    layout: str
    cases: tuple
    reads: str  # "digital" or a key of READS
    drift_s: float
    seed: int

    @property
    def run(self) -> RunSettings:
        digital = self.reads == "digital"
        return RunSettings(
            model=self.spec.name,
            mode=Mode.DIGITAL if digital else Mode.ANALOG,
            mc_samples=1 if digital else READS[self.reads],
            noise_level=NOISE,
            drift_s=self.drift_s,
            seed=self.seed,
        )

    def key(self, case: str) -> dict:
        return dict(
            model=self.spec.name,
            weights=self.weights[:16],
            reads=self.reads,
            drift_s=self.drift_s,
            seed=self.seed,
            case=case,
        )


def with_plain_reads(models: dict[tuple[str, str], ModelSpec]) -> dict[tuple[str, str], ModelSpec]:
    """`models` and, for each that averages every read with its mirror, the same weights read without
    it (kind `kind + NO_MIRROR`, named `name:no-mirror`): its HWA claims are then also settled between
    plain reads, apart from the mirror that only some of the models use."""
    plain = {
        (arch, kind + NO_MIRROR): dataclasses.replace(spec, name=f"{spec.name}:no-mirror", flip_average=False)
        for (arch, kind), spec in models.items()
        if spec.flip_average and not kind.endswith(NO_MIRROR)
    }
    return {**models, **plain}


def claim_jobs(
    models: dict[tuple[str, str], ModelSpec],
    split: DatasetSplit,
    programmings: int,
    reads: Iterable[str] | None = None,
    drifts: Iterable[str] | None = None,
) -> list[ClaimJob]:
    """The sweep's passes (the digital ones always, the chips' for these `reads` and `drifts`, by
    default all), programming by programming, so that a partial sweep covers every model."""
    reads = list(READS if reads is None else reads)
    drift_values = [DRIFTS[d] for d in (DRIFTS if drifts is None else drifts)]
    jobs = []
    for spec in models.values():
        weights, cases = weights_hash(spec), tuple(split.cases)
        jobs.append(ClaimJob(spec, weights, split.layout, cases, "digital", 0.0, 0))
        jobs += [
            ClaimJob(spec, weights, split.layout, cases, r, drift, seed)
            for seed in range(programmings)
            for r in reads
            for drift in drift_values
        ]
    return sorted(jobs, key=lambda j: (j.reads != "digital", j.seed))


def _claim_run(job: ClaimJob) -> list[dict]:
    """Per patient: Dice and mean entropy in the lesion band (built on the worker, from names)."""
    mirror = job.spec.flip_average  # explicit: the worker reads the model's own setting from its folder
    found = evaluate_run(job.spec, list(job.cases), job.layout, job.run, progress=False, mirror=mirror)
    return [
        {"case": r["case"], "dice": r["mean_dice"], "entropy_band": r["mean_entropy_lesion_band"]}
        for r in found["cases"]
    ]


def measure_claims(
    models: dict[tuple[str, str], ModelSpec],
    split: DatasetSplit,
    out: Path,
    programmings: int,
    bar: Bar,
    executor: Executor | None = None,
    measure: bool = True,
    reads: Iterable[str] | None = None,
    drifts: Iterable[str] | None = None,
) -> RowCache:
    """The sweep's rows, measuring the passes not yet kept (of `reads` and `drifts`) when `measure`."""
    cache = RowCache(out / "measurements" / CLAIMS_RUNS_FILE, CLAIMS_RUN_KEY)
    jobs = claim_jobs(with_plain_reads(models), split, programmings, reads, drifts)
    todo = [j for j in jobs if not all(cache.has(**j.key(c.case_id)) for c in j.cases)]
    if measure and todo:
        done = (executor or Executor(0)).map(_claim_run, todo)
        for job, rows in bar(done, "claims: drift protocol", len(jobs), len(jobs) - len(todo)):
            for row in rows:
                cache.add({**job.key(row["case"]), "dice": row["dice"], "entropy_band": row["entropy_band"]})
    return cache


class Measured:
    """The sweep's rows as arrays: per model, reads and drift, (programmings, patients)."""

    def __init__(
        self, rows: list[dict], models: dict[tuple[str, str], ModelSpec], split: DatasetSplit
    ) -> None:
        self.patients = [c.case_id for c in split.cases]
        self.weights = {spec.name: weights_hash(spec)[:16] for spec in models.values()}
        self.rows = [r for r in rows if self.weights.get(r["model"]) == r["weights"]]

    def values(self, model: str, reads: str, drift_s: float, column: str) -> np.ndarray | None:
        """(programmings, patients) for the programmings measured on every patient; None if none is."""
        by_seed: dict[str, dict[str, float]] = {}
        for r in self.rows:
            if r["model"] == model and r["reads"] == reads and float(r["drift_s"]) == drift_s:
                by_seed.setdefault(r["seed"], {})[r["case"]] = float(r[column])
        full = [s for s in sorted(by_seed, key=int) if len(by_seed[s]) == len(self.patients)]
        if not full:
            return None
        return np.array([[by_seed[s][p] for p in self.patients] for s in full])

    def digital(self, model: str) -> np.ndarray | None:
        found = self.values(model, "digital", 0.0, "dice")
        return None if found is None else found[0]


@dataclass(frozen=True)
class Claim:
    """One claim of the paper as a difference whose sign decides it."""

    text: str
    terms: tuple[tuple[float, str], ...]  # (sign, model), each model's drop or uncertainty
    column: str  # "dice" (the terms are drops: digital - chips) or "entropy_band"


def lgg_claims(models: dict[tuple[str, str], ModelSpec]) -> list[Claim]:
    """The paper's claims that the shipped LGG models can test."""
    name = {key: spec.name for key, spec in models.items()}
    claims = []
    for other, label in (("unet", "U-Net"), ("unetpp", "U-Net++")):
        if ("swinunetr", "digital") in name and (other, "digital") in name:
            claims.append(
                Claim(
                    f"Swin-UNETR loses less Dice on chips than the {label} (drop Swin - drop {label})",
                    ((1.0, name[("swinunetr", "digital")]), (-1.0, name[(other, "digital")])),
                    "dice",
                )
            )
    plain_claims = []  # listed after the claims as shipped
    for arch, label in (("unet", "U-Net"), ("unetpp", "U-Net++"), ("swinunetr", "Swin-UNETR")):
        if (arch, "digital") in name and (arch, "hwa") in name:
            shipped = {kind: name[(arch, kind)] for kind in ("hwa", "digital")}
            claims += _hwa_claims(label, shipped)
            plain = {kind: name.get((arch, kind + NO_MIRROR), shipped[kind]) for kind in shipped}
            if plain != shipped:
                plain_claims += _hwa_claims(label, plain, ", both read without the mirror")
    return claims + plain_claims


def _hwa_claims(label: str, names: dict[str, str], how: str = "") -> list[Claim]:
    """The two HWA claims of one architecture between the models `names` (by kind), read `how`."""
    pair = ((1.0, names["hwa"]), (-1.0, names["digital"]))
    return [
        Claim(f"HWA training shrinks the {label}'s drop{how} (drop HWA - drop digital)", pair, "dice"),
        Claim(
            f"the HWA {label} is more certain on chips{how} (entropy in the lesion band, HWA - digital)",
            pair,
            "entropy_band",
        ),
    ]


def settle(claim: Claim, measured: Measured, reads: str, drift_s: float) -> Interval | None:
    """The claim's interval under one protocol; None until every model in it is measured there."""
    terms = []
    for sign, model in claim.terms:
        analog = measured.values(model, reads, drift_s, claim.column)
        digital = measured.digital(model) if claim.column == "dice" else None
        if analog is None or (claim.column == "dice" and digital is None):
            return None
        terms.append(Term(sign, analog, digital))
    return paired_difference(terms)


def claims_rows(models: dict[tuple[str, str], ModelSpec], measured: Measured) -> tuple[list[dict], list[str]]:
    """A row per claim and protocol measured; the protocols not measured yet."""
    rows, missing = [], []
    for claim in lgg_claims(models):
        for reads in READS:
            for drift_name, drift_s in DRIFTS.items():
                found = settle(claim, measured, reads, drift_s)
                if found is None:
                    missing.append(f"{claim.text}, {reads}, {drift_name}")
                    continue
                rows.append(
                    {
                        "claim": claim.text,
                        "reads": reads,
                        "drift": drift_name,
                        "estimate": found.estimate,
                        "low": found.low,
                        "high": found.high,
                        "sample": f"{found.patients} x {found.programmings}",
                        "verdict": found.verdict(),
                    }
                )
    return rows, missing


COLUMNS = [
    ("claim", "claim (the difference that decides it)", ""),
    ("reads", "reads", ""),
    ("drift", "drift", ""),
    ("estimate", "difference", "+.3f"),
    ("low", "95 % low", "+.3f"),
    ("high", "95 % high", "+.3f"),
    ("sample", "patients x programmings", ""),
    ("verdict", "verdict", ""),
]


def claims_section(
    rows: list[dict], missing: list[str], programmings: int, mirrored: Iterable[str] = ()
) -> list[str]:
    """The section; `mirrored` names the models that average every slice with its mirror."""
    text = [
        "## 5. The claims, settled with intervals",
        "",
        f"The paper's protocol (nominal noise, drift {', '.join(DRIFTS)}), up to {programmings} chip "
        "programmings per model, each read once and as an MC 4 ensemble, on the LGG test patients. Each "
        "difference comes with a 95 % two-level paired bootstrap interval (patients shared by the models "
        "compared, programmings drawn per model; `training/report/bootstrap.py`). A claim is supported "
        "when the whole interval is below zero, contradicted when it is above, and otherwise "
        "inconclusive at this sample size. Measure what is missing and rewrite this section with "
        f"`python -m training.report.claims --data ../shared/data --programmings {programmings}`; "
        "add `--from-measurements` to rewrite it from the runs kept in `measurements/` (seconds).",
        "",
    ]
    if rows:
        text += [md_table(rows, COLUMNS), ""]
    if mirrored := sorted(mirrored):
        text += [
            "Each model is read as it ships. "
            f"{', '.join(f'`{m}`' for m in mirrored)} average every slice with its mirror (chosen on "
            "validation for Dice, `model.json` `inference`), so one of their reads is two chip reads "
            "averaged, and the entropy rises where the two disagree: a difference against a model "
            "without the mirror is one of the models as shipped, not of their training alone. The claims "
            "whose models are 'both read without the mirror' read the same weights with it switched off "
            "(`name:no-mirror`): they compare the training alone.",
            "",
        ]
    if missing:
        claims = sorted({m.rsplit(", ", 2)[0] for m in missing})
        text += [
            f"Not measured yet: {len(missing)} of {len(missing) + len(rows)} claim x reads x drift cells, "
            f"of: {'; '.join(claims)}.",
            "",
        ]
    return text


def claims_report(
    models: dict[tuple[str, str], ModelSpec],
    split: DatasetSplit,
    out: Path,
    programmings: int,
    bar: Bar,
    executor: Executor | None = None,
    measure: bool = True,
    reads: Iterable[str] | None = None,
    drifts: Iterable[str] | None = None,
) -> list[str]:
    cache = measure_claims(models, split, out, programmings, bar, executor, measure, reads, drifts)
    models = with_plain_reads(models)
    rows, missing = claims_rows(models, Measured(cache.rows, models, split))
    write_csv(rows, out / "claims.csv")
    mirrored = [spec.name for spec in models.values() if spec.flip_average]
    return claims_section(rows, missing, max(programmings, kept_programmings(cache.rows)), mirrored)


def kept_programmings(rows: list[dict]) -> int:
    """The most chip programmings of any kept pass: a sweep asked for fewer (to fill a few cells
    first) must not make the section say so of the cells measured with more."""
    return max((int(r["seed"]) + 1 for r in rows if r["reads"] != "digital"), default=0)


def main(argv: list[str] | None = None) -> None:
    from training.report.build import models_of, splits_of

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding one folder per data set")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--programmings", type=int, default=10)
    parser.add_argument("--arch", nargs="+", help="only these LGG architectures (default: all shipped)")
    parser.add_argument(
        "--kind",
        nargs="+",
        choices=["digital", "hwa"],
        help="only these training kinds (e.g. a digital model whose HWA version is still training)",
    )
    parser.add_argument(
        "--reads", nargs="+", choices=list(READS), default=list(READS), help="measure only these"
    )
    parser.add_argument(
        "--drift", nargs="+", choices=list(DRIFTS), default=list(DRIFTS), help="measure only these"
    )
    parser.add_argument("--workers", type=int, default=0, help="local Dask workers (0: this process)")
    parser.add_argument("--scheduler", help="an existing Dask scheduler, tcp://HOST:PORT")
    parser.add_argument(
        "--from-measurements",
        action="store_true",
        help="measure nothing: rewrite the section from the runs kept",
    )
    args = parser.parse_args(argv)
    shipped = models_of("lgg")
    split = splits_of(args.data, None)["lgg"]

    def bar(items: Iterable, desc: str, total: int | None = None, initial: int = 0) -> Iterable:
        return tqdm(items, desc=desc, total=total, initial=initial)

    if not args.from_measurements:
        measured = {
            (arch, kind): spec
            for (arch, kind), spec in shipped.items()
            if (not args.arch or arch in args.arch) and (not args.kind or kind in args.kind)
        }
        with Executor(args.workers, args.scheduler) as executor:
            measure_claims(
                measured, split, args.out, args.programmings, bar, executor, True, args.reads, args.drift
            )
    # the section speaks of every shipped model, whichever were measured now
    text = claims_report(shipped, split, args.out, args.programmings, bar, measure=False)
    replace_section(args.out / "README.md", text)
    print("\n".join(text))


if __name__ == "__main__":
    main()
