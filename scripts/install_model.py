"""Install a finished training run's model under a shipped name, replacing the model of that name.

    .venv/bin/python scripts/install_model.py RUNS/models/RUN lgg_unet_digital

The folder is copied whole into `resources/models/NAME` (a temporary folder first, then swapped in, so
a failure leaves the old model in place), renamed in its model.json, with the run's name kept in
`training.run` and an `--init` given as a path written as the model's name. Nothing measured on the
model it replaces is kept: its test metrics, card and trust calibrations are made anew for the new
weights (`aimc evaluate --record`, `training.model_cards`, `training.trust_calibration`), and the
report's measurements of that name that are not keyed by the weights' hash (the noise sweep's rows, the
uncertainty pass) are dropped from `reports/measurements/`, so `aimc report` measures them again instead
of showing the old weights' numbers under the new model.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.files import atomic_write  # noqa: E402
from engine.model_store import MODELS_DIR, read_spec, write_spec  # noqa: E402
from training.report.robustness import RUNS_FILE  # noqa: E402

MEASUREMENTS = REPO / "reports" / "measurements"


def drop_measurements(name: str, measurements: Path = MEASUREMENTS) -> int:
    """Remove what the report measured on the model called `name` by name only; the number removed."""
    dropped = 0
    rows_file = measurements / RUNS_FILE
    if rows_file.exists():
        with open(rows_file, newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if r["model"] != name]
        dropped += len(rows) - len(kept)

        def write(path: str) -> None:
            with open(path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(kept)

        atomic_write(rows_file, write)
    for path in measurements.glob(f"uncertainty_{name}_cases*.json"):
        path.unlink()
        dropped += 1
    return dropped


def install(source: Path, name: str, models_dir: Path = MODELS_DIR) -> Path:
    spec = read_spec(source)
    target = models_dir / name
    staging = models_dir / f".{name}.installing"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    run = spec.name
    spec.name = name
    spec.training = {**spec.training, "run": run}
    init = spec.training.get("init")
    if init is not None and "/" in str(init):  # a path, absolute or not
        spec.training["init"] = Path(str(init)).name
    spec.card, spec.trust = None, {}
    spec.metrics.pop("test", None)
    write_spec(spec, staging)
    old = models_dir / f".{name}.replaced"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a model folder written by aimc train")
    p.add_argument("name", help="the shipped name it takes, e.g. lgg_unet_digital")
    args = p.parse_args()
    print(f"installed {install(args.source, args.name)}")
    print(f"dropped {drop_measurements(args.name)} report measurements of the replaced weights")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
