"""`aimc predict` on the bundled sample writes the arrays recorded before the architecture redesign.

Labels must match exactly; the maps to their recorded step (1e-3) and their sums to float rounding.
Regenerate with `tests/golden/make_golden.py` only for a deliberate change of behaviour.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
from make_golden import HERE, RUNS, STEPS, predict_arrays  # noqa: E402

from cli.main import main  # noqa: E402


@pytest.mark.parametrize("run", list(RUNS))
def test_predict_matches_golden(run: str) -> None:
    golden = np.load(HERE / f"predict_{run}.npz")
    arrays = predict_arrays(main, RUNS[run])
    np.testing.assert_array_equal(arrays["seg"], golden["seg"])
    for name in ("uncertainty", "probability"):
        got = arrays[name].astype(np.float64)
        assert np.abs(got - golden[name] / STEPS).max() <= 0.5 / STEPS + 1e-6, name
        assert got.sum() == pytest.approx(float(golden[f"{name}_sum"]), rel=1e-6), name
