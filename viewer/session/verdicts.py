"""The case verdict of each complete result: computed once, off the UI thread, never for a partial result.

`engine.trust.verdict` needs distance transforms over the whole volume (about a second), so it runs in
the session's `Background`; until it answers, the verdict is "computing". A model without a fitted
calibration gets no verdict, and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from engine.model_store import ModelSpec
from engine.pipeline import VolumeResult
from engine.run_settings import RunSettings
from engine.trust import TrustCalibration, Verdict, calibration_for, verdict
from viewer.session.background import Background

# training/trust_calibration.py fits `lesion_review_above` on `engine.findings.lesions(result)`, whose
# default map is the predictive entropy: the threshold means nothing for another map.
LESION_MAP = "entropy"
NO_CALIBRATION = "no trust calibration for this model"


class VerdictState(StrEnum):
    NO_RESULT = "no result"
    PARTIAL = "partial"  # not every slice is segmented: no verdict
    COMPUTING = "computing"
    READY = "ready"
    UNCALIBRATED = "uncalibrated"  # the model has no trust calibration for this mode
    FAILED = "failed"


@dataclass(frozen=True)
class CaseVerdict:
    """Where the verdict of the result on screen stands, and the verdict once it is there."""

    state: VerdictState
    verdict: Verdict | None = None
    calibration: TrustCalibration | None = None
    note: str = ""  # PARTIAL: how far the run got; FAILED: why


def lesion_review(spec: ModelSpec, mode: str, map_name: str) -> tuple[float | None, str]:
    """The uncertainty above which a lesion is flagged under `map_name` and the rule in words; without
    one (None), the sentence that says why there are no flags."""
    calibration = calibration_for(spec, mode)
    if calibration is None:
        return None, f"No review flags: {NO_CALIBRATION}."
    if map_name != LESION_MAP or not calibration.lesion_review_above:
        return None, "Review flags are calibrated on the predictive entropy map: choose it to see them."
    threshold = calibration.lesion_review_above
    return threshold, f"mean entropy above {threshold:.3f}, the model's calibrated threshold"


class Verdicts:
    """Verdicts of the open scan's complete results; `changed(result)` when one's state changes."""

    def __init__(self, background: Background, changed: Callable[[VolumeResult], object]) -> None:
        self.background = background
        self.changed = changed
        self._known: dict[int, tuple[VolumeResult, CaseVerdict]] = {}

    def clear(self) -> None:
        """A new scan: answers still being computed for the old one will be dropped."""
        self._known.clear()

    def get(self, result: VolumeResult) -> CaseVerdict | None:
        entry = self._known.get(id(result))
        return entry[1] if entry is not None and entry[0] is result else None

    def assess(self, result: VolumeResult, spec: ModelSpec, run: RunSettings) -> None:
        """Start the verdict of a complete `result` (once; a partial result is refused)."""
        if not result.complete or self.get(result) is not None:
            return
        calibration = calibration_for(spec, run.mode)
        if calibration is None:
            self._set(result, CaseVerdict(VerdictState.UNCALIBRATED))
            return
        self._set(result, CaseVerdict(VerdictState.COMPUTING, calibration=calibration))
        self.background.submit(
            lambda: verdict(result, spec.preprocessing, calibration, run),
            lambda answer: self._finish(result, CaseVerdict(VerdictState.READY, answer, calibration)),
            lambda message: self._finish(
                result, CaseVerdict(VerdictState.FAILED, calibration=calibration, note=message)
            ),
        )

    def now(self, result: VolumeResult, spec: ModelSpec, run: RunSettings) -> Verdict | str:
        """The verdict for an export: the one computed, else computed here (slow), else why there is none."""
        if not result.complete:
            done, total = int(result.finished.sum()), int(result.finished.size)
            return f"not every slice is segmented ({done} of {total}): no verdict for a partial result"
        known = self.get(result)
        if known is not None and known.verdict is not None:
            return known.verdict
        calibration = calibration_for(spec, run.mode)
        if calibration is None:
            return NO_CALIBRATION
        return verdict(result, spec.preprocessing, calibration, run)

    def _finish(self, result: VolumeResult, answer: CaseVerdict) -> None:
        if self.get(result) is not None:  # not cleared by a new scan meanwhile
            self._set(result, answer)

    def _set(self, result: VolumeResult, answer: CaseVerdict) -> None:
        self._known[id(result)] = (result, answer)
        self.changed(result)
