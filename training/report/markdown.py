"""The report's words: Markdown tables, CSV files, each claim's section and the verdict sentences."""

from __future__ import annotations

import csv
from pathlib import Path

from engine.files import atomic_write
from training.report.jobs import DatasetSplit
from training.report.pipelining import LE_GALLO_2023
from training.report.robustness import Comparison, digitally_trained_lgg, isotropic_comparison
from training.report.uncertainty import NEAR_MM, certainty_pairs

DATASET_TITLES = {"lgg": "LGG FLAIR", "hippocampus": "Hippocampus MRI", "nuclei": "Nuclei microscopy"}
ARCH_TITLES = {"unet": "U-Net", "unetpp": "U-Net++", "swinunetr": "Swin-UNETR"}

Columns = list[tuple[str, str, str]]  # (key, heading, number format)


def write_csv(rows: list[dict], path: Path) -> None:
    """The rows as CSV at `path`, its folder made if new (a report may be written anywhere)."""
    if rows:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def replace_section(path: Path, lines: list[str]) -> None:
    """Write a section (`lines`, its heading first) into the Markdown file at `path`, in place of the
    section with the same heading up to the next heading of its level, or at the end if it has none."""
    heading = lines[0]
    level = heading.split(" ", 1)[0] + " "
    old = path.read_text().splitlines() if path.exists() else []
    if heading in old:
        start = old.index(heading)
        end = next((i for i in range(start + 1, len(old)) if old[i].startswith(level)), len(old))
    else:
        old += [""] if old and old[-1] else []
        start = end = len(old)
    new = old[:start] + lines + old[end:]
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(new).rstrip("\n") + "\n"), ".md")


def md_table(rows: list[dict], cols: Columns) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join(
        "| "
        + " | ".join(
            format(r[c[0]], c[2]) if isinstance(r[c[0]], (int, float)) else str(r[c[0]]) for c in cols
        )
        + " |\n"
        for r in rows
    )


def header(out: Path, sets: dict[str, DatasetSplit], missing: list[str]) -> list[str]:
    return [
        "# The paper's claims, measured on real data\n",
        f"Regenerate with `aimc report --out {out}`: the measurements behind every table are in "
        f"`{out}/measurements/` (one row per run); "
        "a run resumes from them and only measures what is missing.",
        "Test splits (never seen in training or model selection): "
        + ", ".join(
            f"{DATASET_TITLES[d]} {len(s.cases)} {'images' if s.layout == 'nuclei' else 'patients'}"
            for d, s in sets.items()
        )
        + "; Dice per case (volume Dice per patient), then the mean.",
        f"Models measured: {', '.join(spec.name for s in sets.values() for spec in s.models.values())}."
        + (f" Not shipped yet, so not measured: {', '.join(missing)}." if missing else ""),
        "",
    ]


DROP_COLUMNS: Columns = [
    ("model", "model", ""),
    ("programmings", "n", "d"),
    ("digital", "digital", ".3f"),
    ("hour", "analog 1 h", ".3f"),
    ("hour_std", "±", ".3f"),
    ("drop_hour", "drop 1 h", ".3f"),
    ("day", "analog 1 day", ".3f"),
    ("day_std", "±", ".3f"),
    ("drop_day", "drop 1 day", ".3f"),
    ("ensemble_day", "MC 4, 1 day", ".3f"),
    ("ensemble_drop_day", "drop MC 4", ".3f"),
    ("paper_drop", "paper's drop", ""),
]


def robustness_section(
    drops: list[dict], datasets: list[str], programmings: int, done: int, planned: int
) -> list[str]:
    return [
        "## 1. Noise robustness (paper Fig. 1)\n",
        *(
            [
                f"**Partial:** {done} of the sweep's {planned} runs are measured so far; a model's row "
                "appears once it has runs at nominal noise after both drift times, and `n` says over how "
                "many programmings.\n"
            ]
            if done < planned
            else []
        ),
        *[f"![robustness {d}](robustness_{d}.png)\n" for d in datasets],
        f"Dice at nominal noise (1.0) after 1 hour and 1 day of drift, mean ± std over {programmings} chip "
        "programmings (one read each; at noise 0 the chip is ideal and measured once), "
        "against the same model run digitally (an HWA model's digital run reads its tiles exactly). "
        '"MC 4": the mean of 4 chips\' probabilities after 1 day, over 3 programmings, '
        "as `aimc evaluate --record` measured it for the model table. The paper's drops are for digitally "
        "trained models on brain MRI.\n",
        md_table(drops, DROP_COLUMNS),
        robustness_verdict(drops),
        "",
    ]


def _numbers(c: Comparison) -> str:
    return f"Swin-UNETR loses {c.isotropic:.3f} Dice against " + ", ".join(
        f"{ARCH_TITLES[a]} {d:.3f}" for a, d in c.others.items()
    )


def _reading(c: Comparison) -> str:
    if len(c.beats) == len(c.others):
        return "the isotropic model is the most robust here too, as in the paper"
    if c.beats:
        return f"the isotropic model loses less than {', '.join(ARCH_TITLES[a] for a in c.beats)} only"
    return "unlike the paper, the isotropic model loses more than every pyramidal one"


def robustness_verdict(drops: list[dict]) -> str:
    """Sentences on the paper's claim that the isotropic transformer loses least, from our numbers:
    single reads after 1 hour (the sweep), then whether 4-chip ensembles after 1 day agree."""
    rows = digitally_trained_lgg(drops)
    single = isotropic_comparison(rows, "drop_hour")
    if single is None:
        return (
            "The isotropic-versus-pyramidal comparison needs the digitally trained Swin-UNETR and a U-Net "
            "measured at nominal noise after both drift times; not all are measured yet."
        )
    text = (
        f"Digitally trained, at nominal noise after 1 hour, single reads: {_numbers(single)}: "
        f"{_reading(single)}."
    )
    ensemble = isotropic_comparison(rows, "ensemble_drop_day")
    if ensemble is not None:
        text += (
            f" With 4-chip ensembles after 1 day (`aimc evaluate`, MC 4): {_numbers(ensemble)}: "
            f"{_reading(ensemble)}; "
            + (
                "the two protocols agree."
                if set(ensemble.beats) == set(single.beats)
                else "the protocols disagree, so at this sample size our data do not settle the claim."
            )
        )
    return text


MAPPING_COLUMNS: Columns = [
    ("arch", "architecture", ""),
    ("input", "input", ""),
    ("parameters", "parameters", "d"),
    ("analog_weights", "analog weights", "d"),
    ("tiles", "tiles 512x512", "d"),
    ("utilisation_pct", "utilisation %", ".2f"),
    ("mean_reuse", "mean reuse", ".1f"),
    ("paper_utilisation_pct", "paper util. %", ".2f"),
    ("paper_mean_reuse", "paper reuse", ".1f"),
    ("paper_parameters", "paper params", ".3g"),
    ("digital", "stays digital", ""),
]


def tile_mapping_section(mapping: list[dict]) -> list[str]:
    return [
        "## 2. Tile mapping (paper Table 1)\n",
        "![tile mapping](tile_mapping.png)\n",
        md_table(mapping, MAPPING_COLUMNS),
        "Our networks are narrower than the paper's (trained on two CPU cores: "
        + ", ".join(
            f"{ARCH_TITLES[r['arch']]} {r['parameters'] / 1e6:.2f} M parameters on {r['input']} slices"
            for r in mapping
        )
        + "). Reuse counts a layer's matrix-vector products per slice, "
        "one per output pixel or token, so it falls with the input size. Utilisation is how much of "
        "its 512x512 tiles a layer's (input channels x kernel, output channels) weight matrix fills: "
        "a layer narrower than a tile leaves the rest empty, and a layer one row or column over a tile "
        "boundary takes a nearly empty extra tile, so "
        "it moves with the widths chosen, up or down, rather than with the parameter count.\n",
    ]


PAPER_SCALE_COLUMNS: Columns = [
    ("arch", "architecture", ""),
    ("configuration", "MONAI configuration", ""),
    ("input", "input", ""),
    ("parameters", "parameters", ",d"),
    ("paper_parameters", "paper", ",.0f"),
    ("tiles", "tiles", "d"),
    ("utilisation_pct", "utilisation %", ".2f"),
    ("utilisation_256_tiles_pct", "on 256x256 tiles %", ".2f"),
    ("paper_utilisation_pct", "paper %", ".2f"),
    ("mean_reuse", "mean reuse", ".1f"),
    ("paper_mean_reuse", "paper", ".1f"),
]


def paper_scale_section(rows: list[dict]) -> list[str]:
    """Table 1 with each architecture at the paper's parameter count: what is left of the difference
    is the mapping's, not the widths'."""
    return [
        "### Table 1 at the paper's scale\n",
        md_table(rows, PAPER_SCALE_COLUMNS),
        "Each architecture built at the paper's parameter count (the nearest MONAI configuration: "
        "U-Net and U-Net++ widths scaled from MONAI's defaults until the count matches; Swin-UNETR's "
        "feature size must be a multiple of 12, and 72 is the nearest in 2D, while the paper's 62.19 M "
        "is exactly MONAI's 3D Swin-UNETR at feature size 48) at 256x256, mapped as our chips map it. "
        "No training is needed: the mapping depends on the layer shapes only. At the paper's size, "
        "utilisation is "
        + ", ".join(
            f"{ARCH_TITLES[r['arch']]} {r['utilisation_pct']:.1f} % against the paper's "
            f"{r['paper_utilisation_pct']:.1f} %"
            for r in rows
        )
        + ". Utilisation = weights / (tiles x tile size) cannot fall to the paper's 7-13 % for "
        "networks this wide unless many more tiles are counted than the weight matrices need (e.g. a "
        "tile per kernel position, or smaller tiles: the 256x256 column shows the direction); the paper "
        "does not say how it counted, so the difference stays unexplained. Mean reuse counts output "
        "pixels per layer and depends on how many layers work at full resolution; it differs with the "
        "MONAI U-Net's residual units and the U-Net++'s dense full-resolution nodes.\n",
    ]


UNCERTAINTY_COLUMNS: Columns = [
    ("model", "model", ""),
    ("mean_entropy", "mean entropy", ".4f"),
    ("auroc", "error AUROC (head)", ".3f"),
    ("auroc_near", "error AUROC (near lesion)", ".3f"),
    ("ece", "ECE", ".4f"),
    ("pearson", "Pearson r", ".2f"),
    ("spearman", "Spearman ρ", ".2f"),
]


def uncertainty_section(
    urows: list[dict], results: dict[tuple[str, str], dict], unmeasured: list[str], mc: int
) -> list[str]:
    return [
        "## 3. Uncertainty (paper Fig. 2 and 3)\n",
        *([f"**Partial:** not measured yet: {', '.join(unmeasured)}.\n"] if unmeasured else []),
        "![entropy densities](uncertainty.png)\n",
        "![examples](examples.png)\n",
        f"Analog, noise 1.0, drift 1 day, MC {mc}; pixels inside the head. "
        "AUROC: per-pixel entropy as a detector of wrong pixels, over the head "
        "(inflated by the many trivially right background pixels) and near the "
        f"lesion (within {NEAR_MM:g} mm of the true or predicted lesion, where the errors are); "
        "ECE: expected calibration error of the max class probability; correlations: "
        "a case's mean entropy against its Dice (negative = uncertain cases are the bad ones).\n",
        md_table(urows, UNCERTAINTY_COLUMNS),
        uncertainty_verdict(results)
        + " This mean is over the whole head, where the background pixels outnumber the rest; section 5 "
        "decides the claim in the lesion band, with an interval.",
        "",
    ]


def uncertainty_verdict(results: dict[tuple[str, str], dict]) -> str:
    """One sentence per architecture on the paper's claim that hardware-aware models are more certain."""
    pairs = certainty_pairs(results)
    if not pairs:
        return (
            "The certainty comparison needs a digitally trained and an HWA model "
            "of one architecture measured."
        )
    more = [a for a, d, h in pairs if h < d]
    return (
        "Mean per-pixel entropy on chips, digitally trained against HWA-trained: "
        + ", ".join(f"{ARCH_TITLES[a]} {d:.4f} against {h:.4f}" for a, d, h in pairs)
        + ". "
        + (
            f"The HWA-trained model is the more certain for {', '.join(ARCH_TITLES[a] for a in more)}"
            if more
            else "No HWA-trained model is the more certain"
        )
        + (
            ", as the paper reports."
            if len(more) == len(pairs)
            else f"; not for {', '.join(ARCH_TITLES[a] for a, _, _ in pairs if a not in more)}, "
            "unlike the paper."
        )
    )


CHIP_COLUMNS: Columns = [
    ("arch", "architecture", ""),
    ("slice_latency_ms", "one slice (ms)", ".3f"),
    ("sequential_ms", "volume, sequential (ms)", ".2f"),
    ("pipelined_ms", "volume, pipelined (ms)", ".2f"),
    ("speedup", "speed-up", ".2f"),
    ("slices_per_s_pipelined", "slices/s pipelined", ".0f"),
]


def pipelining_section(pipe: dict, case_id: str) -> list[str]:
    return [
        "## 4. Pipelining across slices\n",
        "![pipelining](pipelining.png)\n",
        f"Measured on this machine ({pipe['slices']} slices of {case_id}, {pipe['model']}, analog, "
        f"MC {pipe['mc']}): one slice at a time {pipe['sequential_slices_per_s']:.2f} slices/s, "
        "the pipeline (overlapping stages, one inference worker per core) "
        f"{pipe['pipelined_slices_per_s']:.2f} slices/s "
        f"({pipe['sequential_s'] / pipe['pipelined_s']:.2f}x).\n",
        "Modelled AIMC chip (each layer on its own tiles; "
        f"MVM {pipe['t_mvm_ns']:.0f} ns from Le Gallo et al. 2023, "
        f"{LE_GALLO_2023['tops_one_phase']} TOPS over {LE_GALLO_2023['cores']} cores):\n",
        md_table(pipe["chip"], CHIP_COLUMNS),
        "",
    ]
