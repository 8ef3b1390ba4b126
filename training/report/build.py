"""`aimc report`: the four claims measured, then written as `OUT/README.md`, PNG figures and CSV files.

Measured in the order a partial report needs most: the drop table, the uncertainty claims, the sweep,
then the drift protocol that settles the claims with intervals.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from engine.architectures import ARCHITECTURES
from engine.executor import Executor
from engine.model_store import MODELS_DIR, ModelError, ModelSpec, find_model
from training.evaluate import cases_of_split
from training.report import figures, markdown
from training.report.claims import claims_report
from training.report.jobs import KINDS, CaseCache, DatasetSplit
from training.report.pipelining import pipelining
from training.report.robustness import drop_rows, robustness, robustness_table
from training.report.tile_mapping import paper_scale_mapping, tile_mapping
from training.report.trust import trust_report
from training.report.uncertainty import example, summary_rows, uncertainty

DATASETS = ("lgg", "hippocampus", "nuclei")  # LGG first: uncertainty and pipelining are measured on it
NOMINAL_NOISE, ONE_DAY_S = 1.0, 86400.0  # the chips of the uncertainty claims


def models_of(dataset: str) -> dict[tuple[str, str], ModelSpec]:
    """Shipped models of one data set (`DATASET_ARCH_KIND`), by (architecture, training kind)."""
    found = {}
    for arch in ARCHITECTURES:
        for kind in KINDS:
            try:
                found[(arch, kind)] = find_model(f"{dataset}_{arch}_{kind}", MODELS_DIR)
            except ModelError:
                continue
    return found


def splits_of(data_root: Path, limit: int | None) -> dict[str, DatasetSplit]:
    """Each data set with shipped models and data under `data_root`; LGG is required."""
    sets = {}
    for dataset in DATASETS:
        models = models_of(dataset)
        if models and (data_root / dataset).is_dir():
            layout, cases = cases_of_split(next(iter(models.values())), data_root / dataset, "test")
            sets[dataset] = DatasetSplit(models, layout, cases[:limit])
    if "lgg" not in sets:
        raise ModelError(
            f"the report needs LGG models in {MODELS_DIR} and the LGG data in {data_root / 'lgg'}"
        )
    return sets


def write_report(
    out: Path,
    data_root: Path,
    programmings: int = 5,
    mc: int = 16,
    limit: int | None = None,
    progress: bool = True,
    executor: Executor | None = None,
    measure: bool = True,
    claim_programmings: int = 10,
) -> Path:
    """The whole report; `data_root` holds the data sets (lgg/, hippocampus/, nuclei/) as in ../shared/data.

    With `measure` False, nothing slow is measured: the report is written from the measurements made
    so far, and says how complete they are. The measurements run on `executor` (default: this process)."""
    out.mkdir(parents=True, exist_ok=True)
    sets = splits_of(data_root, limit)
    models = sets["lgg"].models

    def bar(items: Iterable, desc: str, total: int | None = None, initial: int = 0) -> Iterable:
        return tqdm(items, desc=desc, total=total, initial=initial, disable=not progress)

    cases = CaseCache(sets["lgg"].cases)
    missing = [f"lgg_{a}_{k}" for a in ARCHITECTURES for k in KINDS if (a, k) not in models]
    text = markdown.header(out, sets, missing)

    robustness(sets, out, programmings, bar, executor, measure, nominal_only=True)
    unc = uncertainty(models, sets["lgg"].cases, out, mc, NOMINAL_NOISE, ONE_DAY_S, bar, executor, measure)
    rows, done, planned = robustness(sets, out, programmings, bar, executor, measure)
    table, digital = robustness_table(rows, sets)
    markdown.write_csv(table, out / "robustness.csv")
    for dataset in sets:
        figures.robustness_figure(table, dataset, out / f"robustness_{dataset}.png")
    drops = drop_rows(table, digital, sets)
    markdown.write_csv(drops, out / "robustness_drops.csv")
    text += markdown.robustness_section(drops, list(sets), programmings, done, planned)

    mapping, mappings = tile_mapping(models)
    markdown.write_csv(mapping, out / "tile_mapping.csv")
    figures.tile_mapping_figure(mappings, out / "tile_mapping.png")
    text += markdown.tile_mapping_section(mapping)
    paper_scale = paper_scale_mapping()
    markdown.write_csv(paper_scale, out / "tile_mapping_paper_scale.csv")
    text += markdown.paper_scale_section(paper_scale)

    figures.uncertainty_figure(unc, out / "uncertainty.png")
    figures.examples_figure(
        example(models, cases, mc, NOMINAL_NOISE, ONE_DAY_S),
        out / "examples.png",
        mc,
        NOMINAL_NOISE,
        ONE_DAY_S,
    )
    urows = summary_rows(unc)
    markdown.write_csv(urows, out / "uncertainty.csv")
    unmeasured = [spec.name for key, spec in models.items() if key not in unc]
    text += markdown.uncertainty_section(urows, unc, unmeasured, mc)
    text += trust_report(data_root, out, measure)

    spec = models.get(("unet", "hwa")) or models.get(("unet", "digital")) or next(iter(models.values()))
    first = cases.cases[0]
    kept_path = out / "pipelining.json"
    kept = None if measure or not kept_path.is_file() else json.loads(kept_path.read_text())
    pipe = pipelining(spec, first.volume, 8, mappings, kept)
    markdown.write_csv(pipe["chip"], out / "pipelining_chip.csv")
    (out / "pipelining.json").write_text(json.dumps(pipe, indent=1))
    figures.pipelining_figure(pipe, mappings, out / "pipelining.png")
    text += markdown.pipelining_section(pipe, first.case_id)
    text += claims_report(models, sets["lgg"], out, claim_programmings, bar, executor, measure)
    path = out / "README.md"
    path.write_text("\n".join(text))
    return path
