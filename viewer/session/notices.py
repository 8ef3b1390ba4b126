"""What the reader is told about trusting a result: the model gate and the case verdict, as banners.

Decided here, apart from the widgets, so that every sentence (and its severity) is tested in one place.
The gate speaks about the model and the scan before anything runs; the verdict about a finished result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from engine.trust import OOD_UNRELIABLE, ood_misses
from viewer.session.gate import Gate
from viewer.session.verdicts import CaseVerdict, VerdictState

SCORE_WORDS = {
    "entropy_inside": "mean entropy inside the segmentation",
    "mutual_information_inside": "mean mutual information inside the segmentation",
    "entropy_border": "mean entropy at the segmentation's border",
    "pairwise_dice": "agreement between chips (mean pairwise Dice)",
    "uncertain_ratio": "uncertain share of the segmentation",
}
RUN_ANYWAY = "Run anyway (Ctrl+R)"
OUTSIDE = "outside the model's training domain"


class Level(StrEnum):
    """How a banner looks: hidden, neutral, good news, a case to review, a result not to rely on."""

    NONE = "none"
    INFO = "info"
    GOOD = "good"
    REVIEW = "review"
    DANGER = "danger"


@dataclass(frozen=True)
class Notice:
    level: Level
    headline: str = ""
    detail: str = ""
    action: str = ""  # the text of a button that runs the model deliberately; "" for none
    more: str = ""  # where the numbers come from: on hover only, so that the banner stays a few lines

    @property
    def text(self) -> str:
        """Everything the notice says, `more` included (the banner's tooltip)."""
        said = f"{self.headline}: {self.detail}" if self.detail else self.headline
        return f"{said}; {self.more}" if self.more else said


HIDDEN = Notice(Level.NONE)


def fit_line(gate: Gate | None, model: str) -> tuple[bool | None, str]:
    """The model panel's line on `model` and the open scan: (fits, why); (None, "") without a scan."""
    fit = gate.fit(model) if gate is not None else None
    if fit is None:
        return None, ""
    return fit.fits, ("Fits this scan: " if fit.fits else "Does not fit this scan: ") + fit.explain()


def gate_notice(gate: Gate | None, model: str | None, blocked: bool, forced: bool) -> Notice:
    """The gate's banner for `model`: refused (`blocked`, nothing run), run although it does not fit
    (`forced`), chosen in place of the previous model, or nothing to say."""
    fit = gate.fit(model) if gate is not None and model is not None else None
    if gate is None or model is None or fit is None:
        return HIDDEN
    if forced and not fit.fits:
        return Notice(
            Level.DANGER,
            f"Outside the model's training domain: {model}",
            f"run at your request although it does not fit this scan ({fit.explain()}). "
            "Do not rely on this result.",
        )
    if blocked and gate.chosen is None:
        others = len(gate.fits) - 1
        return Notice(
            Level.DANGER,
            "No installed model fits this scan",
            f"nothing was run. {model}: {fit.explain()}. None of the other {others} models fits either "
            "(their reasons are in the model list).",
            RUN_ANYWAY,
        )
    if blocked:
        return Notice(
            Level.DANGER,
            f"{model} does not fit this scan",
            f"nothing was run. {fit.explain()}; {gate.chosen} fits it.",
            RUN_ANYWAY,
        )
    previous = gate.fit(gate.previous) if gate.previous is not None else None
    if gate.switched and model == gate.chosen and previous is not None:
        return Notice(
            Level.INFO,
            f"Model switched to {model}",
            f"{gate.previous} does not fit this scan ({previous.explain()}); {model} does: {fit.explain()}",
        )
    return HIDDEN


def _range(low: float, high: float) -> str:
    return f"{low:.2f}–{high:.2f}"


def verdict_notice(case: CaseVerdict, slices: str = "") -> Notice:
    """The verdict banner: waiting for the whole volume, computing, the verdict, or why there is none.

    `slices`: how far a partial result got ("12 of 27"), said while the verdict waits.
    """
    state = case.state
    if state is VerdictState.NO_RESULT:
        return HIDDEN
    if state is VerdictState.PARTIAL:
        return Notice(Level.INFO, "Case verdict: once every slice is segmented", f"{slices} slices so far")
    if state is VerdictState.UNCALIBRATED:
        return Notice(
            Level.INFO,
            "No trust calibration for this model",
            "no expected Dice and no review flags; weigh the result by its uncertainty map",
        )
    if state is VerdictState.COMPUTING:
        return Notice(Level.INFO, "Case verdict: computing…")
    if state is VerdictState.FAILED or case.verdict is None or case.calibration is None:
        return Notice(Level.REVIEW, "Review carefully: the case verdict could not be computed", case.note)
    v, cal = case.verdict, case.calibration
    ood = (
        f"out of distribution: the scan is unlike the model's validation scans (OOD score {v.ood_score:.1f}, "
        f"limit {cal.ood_threshold:.1f})"
        if v.out_of_distribution
        else f"not flagged as out of distribution, but the OOD check cannot vouch for the scan "
        f"(OOD score {v.ood_score:.1f}, limit {cal.ood_threshold:.1f})"
        if cal.ood_unreliable
        else f"in distribution (OOD score {v.ood_score:.1f}, limit {cal.ood_threshold:.1f})"
    )
    source = (
        f"from the {SCORE_WORDS.get(v.score, v.score)} ({v.score_value:.3g}); calibrated on {cal.fitted_on}"
        + (f"; {OOD_UNRELIABLE}: {ood_misses(cal)}" if cal.ood_unreliable else "")
    )
    chips = f"; {v.settings_note}" if v.settings_note else ""  # a mismatch the reader must see, not hover for
    if math.isnan(v.expected_dice):
        level = Level.REVIEW if v.review else Level.INFO
        headline = "Review carefully: nothing segmented" if v.review else "Nothing segmented"
        return Notice(level, headline, f"no expected Dice without a segmentation; {ood}")
    expected = f"expected Dice {v.expected_dice:.2f} ({_range(v.low, v.high)})"
    if not v.review:
        return Notice(Level.GOOD, expected[0].upper() + expected[1:], ood + chips, more=source)
    reasons = [ood] if v.out_of_distribution else []
    if v.expected_dice < cal.review_below:
        reasons.insert(0, f"the expected Dice is below {cal.review_below:.2f}")
    return Notice(
        Level.REVIEW,
        "Review carefully",
        f"{'; '.join(reasons)}. {expected[0].upper()}{expected[1:]}{chips}",
        more=source,
    )


def title_mark(outside: bool) -> str:
    """What the window title adds for a result run outside its model's training domain."""
    return f" — {OUTSIDE.upper()}" if outside else ""
