"""The report's measurements: what one run measures, where finished runs are kept, and who runs them.

A job names one slow measurement (a frozen dataclass, so that its fields are read by name, never by
position): a model's description, cases and settings, never a network; the worker that runs it builds
the model and chips (`engine.executor`). Jobs run through an `engine.executor.Executor` (a local
Dask cluster, an existing one, or this process). Finished measurements are appended to
`OUT/measurements/` as they come in, so an interrupted report resumes where it stopped.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.model_store import ModelSpec
from engine.run_settings import Mode, RunSettings
from engine.volume import Volume, load_scan
from training.data import Case

KINDS = ("digital", "hwa")  # how a model was trained; with its architecture, the key of a measured model
# the claims sweep's passes, per patient (`training.report.claims`); the noise sweep reuses them
CLAIMS_RUNS_FILE = "claims_runs.csv"
CLAIMS_RUN_KEY = ("model", "weights", "reads", "drift_s", "seed", "case")

Bar = Callable[..., Iterable]  # bar(items, description, total, initial): a progress bar over items


@dataclass(frozen=True)
class DatasetSplit:
    """One data set's test split: its shipped models keyed by (architecture, kind), layout and cases."""

    models: dict[tuple[str, str], ModelSpec]
    layout: str
    cases: list[Case]


@dataclass(frozen=True)
class RobustnessJob:
    """One pass of a model over a test split, digitally or with one programmed chip (single reads)."""

    spec: ModelSpec
    layout: str
    cases: list[Case]
    mode: Mode
    noise: float
    drift_s: float
    seed: int

    @property
    def run(self) -> RunSettings:
        return RunSettings(
            model=self.spec.name,
            mode=self.mode,
            mc_samples=1,
            noise_level=self.noise,
            drift_s=self.drift_s,
            seed=self.seed,
        )

    @property
    def key(self) -> dict:
        """The columns that identify the run in `robustness_runs.csv` (a digital run has no noise)."""
        return dict(
            model=self.spec.name,
            cases=len(self.cases),
            noise=self.noise if self.mode == Mode.ANALOG else "digital",
            drift_s=self.drift_s,
            seed=self.seed,
        )

    @property
    def priority(self) -> int:
        """Digital runs first, then nominal noise (the drop table), then programming by programming."""
        return 0 if self.mode == Mode.DIGITAL else 1 if self.noise == 1.0 else 2 + self.seed


@dataclass(frozen=True)
class UncertaintyJob:
    """One model's Monte-Carlo pass over the LGG test cases on one programming (seed 0)."""

    spec: ModelSpec
    cases: list[Case]
    mc: int
    noise: float
    drift_s: float

    @property
    def run(self) -> RunSettings:
        return RunSettings(
            model=self.spec.name,
            mode=Mode.ANALOG,
            mc_samples=self.mc,
            noise_level=self.noise,
            drift_s=self.drift_s,
            seed=0,
        )

    @property
    def file_name(self) -> str:
        return (
            f"uncertainty_{self.spec.name}_cases{len(self.cases)}_mc{self.mc}"
            f"_n{self.noise:g}_d{self.drift_s:g}.json"
        )


@dataclass(frozen=True)
class LoadedCase:
    case_id: str
    volume: Volume
    truth: np.ndarray  # integer labels in the volume's voxel order


class CaseCache:
    """Test volumes and their labels, read once (the examples figure and the pipelining claim share them)."""

    def __init__(self, cases: list[Case]) -> None:
        self.cases = [
            LoadedCase(c.case_id, load_scan(c.image), np.rint(load_scan(c.label).data).astype(np.int64))
            for c in cases
        ]


class RowCache:
    """CSV rows keyed by some columns, appended one line per finished measurement (never rewritten)."""

    def __init__(self, path: Path, key: tuple[str, ...]) -> None:
        self.path, self.key = path, key
        self.rows: list[dict] = []
        if path.exists():
            with open(path, newline="") as f:
                self.rows = list(csv.DictReader(f))
        self._done = {self._key(r) for r in self.rows}

    def _key(self, row: dict) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in self.key)

    def has(self, **k: object) -> bool:
        return self._key(k) in self._done

    def add(self, row: dict) -> None:
        row = {k: str(v) for k, v in row.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        self.rows.append(row)
        self._done.add(self._key(row))
