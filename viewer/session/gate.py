"""The compatibility gate as the reader meets it: which installed model fits the open scan, and why.

`engine.compatibility` judges a (scan, model) pair; this keeps its answers for the open scan, so that
the model list can mark every model, the model line can give the reasons, and the session can refuse
to run a model that does not fit unless the reader asks for it deliberately.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.compatibility import Fit, choose_model
from engine.model_store import ModelSpec
from engine.volume import Volume


@dataclass(frozen=True)
class Gate:
    """The gate's answer for one scan: the model it chose (None: none fits) and every model's fit."""

    chosen: str | None
    fits: dict[str, Fit]
    previous: str | None = None  # the model selected before this scan opened

    def fit(self, model: str) -> Fit | None:
        return self.fits.get(model)

    def allows(self, model: str) -> bool:
        """Whether `model` may run on this scan without the reader asking for it (unknown models may)."""
        fit = self.fits.get(model)
        return fit is None or fit.fits

    @property
    def switched(self) -> bool:
        """The gate replaced the previous model, which does not fit this scan."""
        return self.chosen is not None and self.previous is not None and self.chosen != self.previous

    def marks(self) -> dict[str, tuple[bool, str]]:
        """Per model: whether it fits, and the reasons (for the model list)."""
        return {name: (fit.fits, fit.explain()) for name, fit in self.fits.items()}


def check_scan(volume: Volume, specs: list[ModelSpec], current: str | None) -> Gate:
    """The gate for `volume`: `current` stays if it fits, else the best fitting model (slow on a large
    scan: call it off the UI thread)."""
    chosen, fits = choose_model(volume, specs, current=current)
    return Gate(chosen.name if chosen is not None else None, {f.model: f for f in fits}, current)
