"""Install a model under a shipped name, replacing the model of that name.

    .venv/bin/python scripts/install_model.py RUNS/models/RUN lgg_unet_digital
    .venv/bin/python scripts/install_model.py resources/models/lgg_unet_hwa_r2 lgg_unet_hwa

The folder is copied whole into `resources/models/NAME` (a temporary folder first, then swapped in, so
a failure leaves the old model in place), renamed in its model.json, with the run's name kept in
`training.run` and an `--init` given as a path written as the model's name.

Nothing measured on the model it replaces is kept: the report's measurements of that name that are not
keyed by the weights' hash (the noise sweep's rows, the uncertainty pass) are dropped from
`reports/measurements/`, so `aimc report` measures them again instead of showing the old weights'
numbers under the new model, and so are its trust records. A training run's folder comes without test
metrics, card or trust calibrations (`aimc evaluate --record`, `training.model_cards`,
`training.trust_calibration` make them on the installed model). A shipped model installed under another
name is a rename: what was measured on its weights (test metrics, card, trust calibrations and their
records) moves with them, and its old folder is removed so the weights ship once.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.files import atomic_write, atomic_write_json  # noqa: E402
from engine.model_store import (  # noqa: E402
    MODELS_DIR,
    ModelError,
    ModelSpec,
    list_models,
    read_spec,
    weights_hash,
    write_spec,
)
from engine.run_settings import Mode  # noqa: E402
from training.report.robustness import RUNS_FILE  # noqa: E402
from training.trust_calibration import RECORDS  # noqa: E402

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


def move_trust_records(source: str, name: str, records: Path = RECORDS) -> int:
    """Drop `name`'s trust records (other weights) and give it `source`'s; the number moved."""
    moved = 0
    for mode, split in itertools.product([m.value for m in Mode], ("val", "test")):
        (records / f"{name}_{mode}_{split}.json").unlink(missing_ok=True)
        path = records / f"{source}_{mode}_{split}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            atomic_write_json({**saved, "model": name}, records / f"{name}_{mode}_{split}.json")
            path.unlink()
            moved += 1
    return moved


def keep_hwa_starts(replaced: ModelSpec, models_dir: Path = MODELS_DIR) -> list[str]:
    """Before `replaced` leaves: every shipped HWA model trained from it keeps the hash and the digital
    test Dice of the weights it started from (`training.init_weights`, `training.init_test_dice`), so
    that its drop is still measured against its own start (`aimc models --markdown`). A model that
    records other starting weights is left alone. The names of the models updated."""
    start, dice = weights_hash(replaced), replaced.test_metrics("digital").get("mean_dice")
    updated = []
    for hwa in list_models(models_dir):
        t = hwa.training
        if hwa.kind != "hwa" or t.get("init") != replaced.name or t.get("init_weights", start) != start:
            continue
        hwa.training = {**t, "init_weights": start, **({"init_test_dice": dice} if dice is not None else {})}
        write_spec(hwa, hwa.folder)
        updated.append(hwa.name)
    return updated


def already_installed(source: Path, name: str, models_dir: Path = MODELS_DIR) -> bool:
    """Whether `name` already ships `source`'s weights: a rerun of an install stopped halfway must not
    drop the trust records and test metrics measured since on those very weights."""
    target = models_dir / name
    if source.resolve() == target.resolve() or not (target / "model.json").is_file():
        return False
    try:
        return weights_hash(read_spec(target)) == weights_hash(read_spec(source))
    except ModelError:
        return False


def install(source: Path, name: str, models_dir: Path = MODELS_DIR) -> Path:
    spec = read_spec(source)
    rename = source.resolve().parent == models_dir.resolve()
    target = models_dir / name
    staging = models_dir / f".{name}.installing"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    run = spec.name
    spec.name = name
    spec.training = {**spec.training, "run": spec.training.get("run", run) if rename else run}
    init = spec.training.get("init")
    if init is not None and "/" in str(init):  # a path, absolute or not
        spec.training["init"] = Path(str(init)).name
    if rename:
        for measured in spec.metrics.get("test", {}).values():
            measured["model"] = name
    else:
        spec.card, spec.trust = None, {}
        spec.metrics.pop("test", None)
    write_spec(spec, staging)
    old = models_dir / f".{name}.replaced"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        if not rename:
            try:
                replaced = read_spec(target)
            except ModelError as exc:  # an unreadable model is replaced all the same
                print(f"{exc}: no HWA model's start recorded")
            else:
                for started in keep_hwa_starts(replaced, models_dir):
                    print(f"{started} keeps the hash and test Dice of the {name} weights it was trained from")
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    if rename:
        shutil.rmtree(source)
    return target


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a model folder written by aimc train")
    p.add_argument("name", help="the shipped name it takes, e.g. lgg_unet_digital")
    args = p.parse_args()
    source = read_spec(args.source).name
    if already_installed(args.source, args.name):
        print(f"{args.name} already ships the weights of {args.source}: nothing installed, nothing dropped")
        return 0
    print(f"installed {install(args.source, args.name)}")
    print(f"dropped {drop_measurements(args.name)} report measurements of the replaced weights")
    print(f"moved {move_trust_records(source, args.name)} trust record files from {source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
