"""Paired bootstrap intervals for the paper's claims, and the verdict read off them.

A claim compares models measured on the same test patients, each on several chip programmings. Its
interval resamples both sources of chance at once (a two-level bootstrap): the patients, with one draw
shared by every model in the comparison (they are the same patients: the difference is paired), and
each model's programmings, drawn on their own (a programming of one model has no counterpart in
another). The verdict follows the 95 % percentile interval, never the point estimate alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95
SUPPORTS, CONTRADICTS, INCONCLUSIVE = "supports", "contradicts", "inconclusive at this sample size"


@dataclass(frozen=True)
class Term:
    """One model's part in a difference: `sign` times its statistic.

    `analog` holds one value per (programming, patient); with `digital` (one per patient) the
    statistic is the drop digital - analog, otherwise the analog value itself (an uncertainty)."""

    sign: float
    analog: np.ndarray  # (programmings, patients)
    digital: np.ndarray | None = None  # (patients,)

    def per_patient(self, programmings: np.ndarray) -> np.ndarray:
        """(draws, patients): the patients' values averaged over each draw of programmings."""
        on_chips = self.analog[programmings].mean(axis=1)
        return (self.digital - on_chips) if self.digital is not None else on_chips


@dataclass(frozen=True)
class Interval:
    """A difference's estimate and its bootstrap interval, with the sample it rests on."""

    estimate: float
    low: float
    high: float
    patients: int
    programmings: int  # the fewest of any model in the comparison

    def verdict(self, claim_is_negative: bool = True) -> str:
        """What the interval says of a claim that the difference is below zero (or above, if not)."""
        if self.high < 0:
            return SUPPORTS if claim_is_negative else CONTRADICTS
        if self.low > 0:
            return CONTRADICTS if claim_is_negative else SUPPORTS
        return INCONCLUSIVE


def paired_difference(terms: list[Term], resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The sum of the terms' statistics, with its two-level paired bootstrap interval at `LEVEL`."""
    patients = {t.analog.shape[1] for t in terms}
    if len(patients) != 1:
        raise ValueError(f"the models of one comparison must share their patients, got counts {patients}")
    (n,) = patients
    rng = np.random.default_rng(seed)
    who = rng.integers(0, n, size=(resamples, n))
    total = np.zeros(resamples)
    estimate = 0.0
    for term in terms:
        s = term.analog.shape[0]
        draws = term.per_patient(rng.integers(0, s, size=(resamples, s)))
        total += term.sign * np.take_along_axis(draws, who, axis=1).mean(axis=1)
        estimate += term.sign * float(term.per_patient(np.arange(s)[None, :])[0].mean())
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(total, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high), n, min(t.analog.shape[0] for t in terms))
