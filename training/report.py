"""`aimc report`: measure the paper's four claims on real data with the shipped models.

Writes `OUT/README.md` with tables and PNG figures, and a CSV of every number. The slow
measurements (one row per noise-sweep run, one JSON per Monte-Carlo uncertainty pass) are appended to
`OUT/measurements/` as they finish and are kept with the report: an interrupted run, or a later session,
resumes where it stopped, and every table can be recomputed from them. `workers` runs that many
measurements at once, one process and one thread each. Models that are not shipped yet are reported as
missing, never invented.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.ndimage import distance_transform_edt  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402
from tqdm import tqdm  # noqa: E402

from engine.architectures import ARCHITECTURES  # noqa: E402
from engine.chip_timing import LE_GALLO_2023, mvm_time_s, volume_timing  # noqa: E402
from engine.inference import Segmenter  # noqa: E402
from engine.run_settings import RunSettings  # noqa: E402
from engine.metrics import calibration_bins, dice_per_label, ece_from_bins, error_detection_auroc  # noqa: E402
from engine.model_store import MODELS_DIR, NOMINAL_CHIPS, ModelError, ModelSpec, find_model  # noqa: E402
from engine.pipeline import segment_slice, segment_volume  # noqa: E402
from engine.preprocessing import get_slice, normalise_volume  # noqa: E402
from engine.tile_mapping import NetworkMapping, map_network  # noqa: E402
from engine.volume import Volume, load_scan  # noqa: E402
from training.data import Case  # noqa: E402
from training.evaluate import cases_of_split, evaluate_run  # noqa: E402

NOISE_LEVELS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
DRIFTS = {"1 hour": 3600.0, "1 day": 86400.0}
KINDS = ("digital", "hwa")
DATASETS = ("lgg", "hippocampus", "nuclei")  # LGG first: uncertainty and pipelining are measured on it
DATASET_TITLES = {"lgg": "LGG FLAIR", "hippocampus": "Hippocampus MRI", "nuclei": "Nuclei microscopy"}
ARCH_TITLES = {"unet": "U-Net", "unetpp": "U-Net++", "swinunetr": "Swin-UNETR"}
PAPER_DROP = {"unet": 0.15, "unetpp": 0.22, "swinunetr": 0.04}  # Dice drop at nominal noise, brain
PAPER_TABLE1 = {"unet": (7.42, 6574.7, 7.76e6), "unetpp": (12.53, 8721.0, 19.6e6), "swinunetr": (43.2, 11540.6, 62.19e6)}
ENTROPY_BINS = np.linspace(0.0, np.log(2.0), 61)
NEAR_MM = 10.0  # the "near the lesion" region of the error-detection AUROC


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


class CaseCache:
    """Test volumes and their labels, read once (the examples figure and the pipelining claim share them)."""

    def __init__(self, cases: list[Case]) -> None:
        self.cases = [(c.case_id, load_scan(c.image), np.rint(load_scan(c.label).data).astype(np.int64)) for c in cases]


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

    def has(self, **k) -> bool:
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


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run_parallel(fn: Callable, jobs: list[tuple], workers: int) -> Iterator[tuple[tuple, object]]:
    """(job, fn(*job)) as each finishes; in this process when `workers` is 1, else in that many processes."""
    if workers <= 1:
        for job in jobs:
            yield job, fn(*job)
        return
    ctx = multiprocessing.get_context("spawn")  # no forked OpenMP state
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread) as pool:
        futures = {pool.submit(fn, *job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


# 1. Noise robustness --------------------------------------------------------------------------

def robustness_jobs(sets: dict[str, tuple[dict, str, list[Case]]], programmings: int) -> list[tuple]:
    """Every run of the sweep: each model digitally once, then on chips per drift, noise and programming.

    At noise 0 a chip is the ideal device (no programming, drift-variability or read noise), so its
    programmings agree to the last bit: it is measured once. Digital runs come first, then nominal
    noise (1.0), so that a partial sweep already gives the drop table; the rest goes programming by
    programming, so that a partial sweep has every model's whole curve, over fewer programmings.
    """
    jobs = []
    for models, layout, cases in sets.values():
        jobs += [(spec, layout, cases, "digital", 0.0, 3600.0, 0) for spec in models.values()]
        jobs += [(spec, layout, cases, "analog", n, d, s) for spec in models.values() for d in DRIFTS.values()
                 for n in NOISE_LEVELS for s in range(programmings if n > 0 else 1)]
    return sorted(jobs, key=lambda j: 0 if j[3] == "digital" else 1 if j[4] == 1.0 else 2 + j[6])


def _robustness_run(spec: ModelSpec, layout: str, cases: list[Case], mode: str, noise: float, drift: float,
                    seed: int) -> float:
    return evaluate_run(spec, cases, layout, RunSettings(model=spec.name, mode=mode, mc_samples=1, noise_level=noise, drift_s=drift, seed=seed), progress=False)["mean_dice"]


def _robustness_key(spec: ModelSpec, cases: list[Case], mode: str, noise: float, drift: float, seed: int) -> dict:
    return dict(model=spec.name, cases=len(cases), noise=noise if mode == "analog" else "digital", drift_s=drift, seed=seed)


def robustness(sets: dict[str, tuple[dict, str, list[Case]]], out: Path, programmings: int, bar: Callable,
               workers: int = 1, measure: bool = True, nominal_only: bool = False) -> tuple[list[dict], int, int]:
    """Mean test Dice of every model of every data set, digital and on chips over the noise sweep.

    Returns the measured rows, and how many of the sweep's runs are measured out of how many.
    `nominal_only` measures just the digital runs and those at noise 1.0 (the drop table)."""
    cache = RowCache(out / "measurements" / "robustness_runs.csv", ("model", "cases", "noise", "drift_s", "seed"))
    jobs = robustness_jobs(sets, programmings)
    wanted = [j for j in jobs if not (nominal_only and j[3] == "analog" and j[4] != 1.0)]
    todo = [j for j in wanted if not cache.has(**_robustness_key(j[0], *j[2:]))]
    if measure:
        desc = "noise robustness, nominal noise" if nominal_only else "noise robustness"
        for job, dice in bar(run_parallel(_robustness_run, todo, workers), desc, len(wanted), len(wanted) - len(todo)):
            cache.add({**_robustness_key(job[0], *job[2:]), "mean_dice": dice})
    done = sum(cache.has(**_robustness_key(j[0], *j[2:])) for j in jobs)
    return cache.rows, done, len(jobs)


def robustness_table(rows: list[dict], sets: dict[str, tuple[dict, str, list[Case]]]) -> tuple[list[dict], dict]:
    """Mean and std over programmings per (model, drift, noise); each model's digital Dice."""
    table, digital = [], {}
    for dataset, (models, _, cases) in sets.items():
        mine = [r for r in rows if int(r["cases"]) == len(cases)]
        for r in mine:
            if r["noise"] == "digital":
                digital[r["model"]] = float(r["mean_dice"])
        for (arch, kind), spec in models.items():
            for dname, d in DRIFTS.items():
                for n in NOISE_LEVELS:
                    vals = [float(r["mean_dice"]) for r in mine if r["model"] == spec.name and r["noise"] != "digital"
                            and float(r["noise"]) == n and float(r["drift_s"]) == d]
                    if vals:
                        table.append({"dataset": dataset, "arch": arch, "kind": kind, "model": spec.name, "drift": dname,
                                      "noise": n, "mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)})
    return table, digital


def ensemble_columns(spec: ModelSpec, digital: float) -> dict:
    """The model's recorded 4-chip ensemble Dice at nominal noise after 1 day, and its drop ("-" if none)."""
    recorded = spec.test_metrics(NOMINAL_CHIPS)
    if not recorded:
        return {"ensemble_day": "-", "ensemble_drop_day": "-"}
    return {"ensemble_day": recorded["mean_dice"], "ensemble_drop_day": digital - recorded["mean_dice"]}


def robustness_figure(table: list[dict], dataset: str, path: Path) -> None:
    fig, axes = plt.subplots(1, len(DRIFTS), figsize=(11, 4), sharey=True)
    for ax, dname in zip(np.atleast_1d(axes), DRIFTS):
        for arch in ARCHITECTURES:
            for kind, style in (("digital", "--"), ("hwa", "-")):
                pts = [r for r in table if r["dataset"] == dataset and r["arch"] == arch and r["kind"] == kind
                       and r["drift"] == dname]
                if pts:
                    ax.errorbar([p["noise"] for p in pts], [p["mean"] for p in pts], [p["std"] for p in pts],
                                linestyle=style, marker="o", capsize=3, label=f"{ARCH_TITLES[arch]} {kind}-trained")
        ax.set_title(f"{DATASET_TITLES.get(dataset, dataset)} test split, drift {dname}")
        ax.set_xlabel("device noise level (1 = nominal PCM)")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("mean per-case Dice")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# 2. Tile mapping ------------------------------------------------------------------------------

def tile_mapping(models: dict) -> tuple[list[dict], dict[str, NetworkMapping]]:
    rows, mappings = [], {}
    for (arch, _), spec in models.items():
        if arch in mappings:
            continue
        m = mappings[arch] = map_network(spec.build(), (spec.preprocessing.in_channels, *spec.preprocessing.input_size))
        paper = PAPER_TABLE1[arch]
        rows.append({"arch": arch, "input": "x".join(map(str, spec.preprocessing.input_size)),
                     "parameters": m.parameters, "analog_weights": m.analog_weights, "tiles": m.tiles,
                     "utilisation_pct": 100 * m.utilisation, "mean_reuse": m.mean_reuse, "analog_layers": len(m.layers),
                     "digital": ", ".join(m.digital_kinds), "paper_utilisation_pct": paper[0],
                     "paper_mean_reuse": paper[1], "paper_parameters": paper[2]})
    return rows, mappings


def _save_panels(fig: plt.Figure, axes: Iterable[plt.Axes], path: Path, legend_size: int) -> None:
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tile_mapping_figure(mappings: dict[str, NetworkMapping], path: Path) -> None:
    """Per analog layer, in forward order: how full its tiles are, and how often they are read per slice."""
    fig, (util, reuse) = plt.subplots(1, 2, figsize=(11, 3.8))
    for arch, m in mappings.items():
        x = np.arange(1, len(m.layers) + 1)
        util.plot(x, [100 * l.utilisation for l in m.layers], "o-", ms=3, label=f"{ARCH_TITLES[arch]} ({m.tiles} tiles)")
        reuse.semilogy(x, [l.reuse for l in m.layers], "o-", ms=3, label=ARCH_TITLES[arch])
    util.set(xlabel="analog layer, in forward order", ylabel="tile utilisation (%)", ylim=(0, 100),
             title="How full each layer's 512x512 tiles are")
    reuse.set(xlabel="analog layer, in forward order", ylabel="MVMs per slice (reuse)",
              title="How often each layer's tiles are read")
    _save_panels(fig, (util, reuse), path, legend_size=8)


# 3. Uncertainty -------------------------------------------------------------------------------

def _uncertainty_of(spec: ModelSpec, cases: list[Case], mc: int, noise: float, drift: float) -> dict:
    """One model's Monte-Carlo pass over the LGG test cases: entropy density, error AUROC, ECE, correlations."""
    segmenter = Segmenter(spec, RunSettings(model=spec.name, mode="analog", mc_samples=mc, noise_level=noise, drift_s=drift, seed=0))
    hist = np.zeros(len(ENTROPY_BINS) - 1)
    bins = np.zeros((3, 15))
    scores = {region: ([], []) for region in ("head", "near")}  # (entropy of wrong, of right) pixels
    case_rows = []
    rng = np.random.default_rng(0)
    for cid, vol, truth in CaseCache(cases).cases:
        res = segment_volume(segmenter, vol)
        head = vol.data > 0
        # Near the lesion: within NEAR_MM of the true or the predicted lesion, where errors can happen.
        near = head & (distance_transform_edt((truth == 0) & (res.segmentation == 0), vol.spacing) <= NEAR_MM)
        wrong = res.segmentation != truth
        hist += np.histogram(res.maps["entropy"][head], ENTROPY_BINS)[0]
        bins += calibration_bins(res.probabilities.max(-1)[head], ~wrong[head])
        for region, mask in (("head", head), ("near", near)):
            ent, bad = res.maps["entropy"][mask], wrong[mask]
            scores[region][0].append(ent[bad])
            scores[region][1].append(ent[~bad][rng.random((~bad).sum()) < 0.05])  # uniform subsample keeps AUROC
        dice = dice_per_label(res.segmentation, truth, spec.num_classes)
        case_rows.append({"case": cid, "dice": float(np.mean(list(dice.values()))),
                          "mean_entropy": float(res.maps["entropy"][head].mean())})
    auroc = {}
    for region, (w, r) in scores.items():
        w, r = np.concatenate(w), np.concatenate(r)
        auroc[region] = error_detection_auroc(np.concatenate([w, r]),
                                              np.concatenate([np.ones(len(w), bool), np.zeros(len(r), bool)]))
    d = [c["dice"] for c in case_rows]
    u = [c["mean_entropy"] for c in case_rows]
    return {
        "model": spec.name, "histogram": hist.tolist(), "auroc": auroc["head"], "auroc_near": auroc["near"],
        "ece": ece_from_bins(bins),
        "mean_entropy": float(np.average(0.5 * (ENTROPY_BINS[1:] + ENTROPY_BINS[:-1]), weights=hist)),
        "pearson_uncertainty_dice": float(pearsonr(u, d)[0]) if len(d) > 2 else float("nan"),
        "spearman_uncertainty_dice": float(spearmanr(u, d)[0]) if len(d) > 2 else float("nan"),
        "cases": case_rows,
    }


def uncertainty(models: dict, cases: list[Case], out: Path, mc: int, noise: float, drift: float, bar: Callable,
                workers: int = 1, measure: bool = True) -> dict:
    """Per model, the uncertainty measurements (read from `OUT/measurements/` when already made)."""
    folder = out / "measurements"
    folder.mkdir(parents=True, exist_ok=True)
    path = {key: folder / f"uncertainty_{spec.name}_cases{len(cases)}_mc{mc}_n{noise:g}_d{drift:g}.json"
            for key, spec in models.items()}
    todo = [(key, spec) for key, spec in models.items() if not path[key].exists()]
    jobs = [(spec, cases, mc, noise, drift) for _, spec in todo] if measure else []
    for job, result in bar(run_parallel(_uncertainty_of, jobs, workers), "uncertainty", len(models), len(models) - len(todo)):
        key = next(k for k, spec in todo if spec.name == job[0].name)
        path[key].write_text(json.dumps(result))
    return {key: json.loads(p.read_text()) for key, p in path.items() if p.exists()}


def uncertainty_verdict(results: dict) -> str:
    """One sentence per architecture on the paper's claim that hardware-aware models are more certain."""
    pairs = [(arch, results[(arch, "digital")]["mean_entropy"], results[(arch, "hwa")]["mean_entropy"])
             for arch in ARCHITECTURES if (arch, "digital") in results and (arch, "hwa") in results]
    if not pairs:
        return "The certainty comparison needs a digitally trained and an HWA model of one architecture measured."
    more = [a for a, d, h in pairs if h < d]
    return ("Mean per-pixel entropy on chips, digitally trained against HWA-trained: "
            + ", ".join(f"{ARCH_TITLES[a]} {d:.4f} against {h:.4f}" for a, d, h in pairs) + ". "
            + (f"The HWA-trained model is the more certain for {', '.join(ARCH_TITLES[a] for a in more)}"
               if more else "No HWA-trained model is the more certain")
            + (", as the paper reports." if len(more) == len(pairs) else
               f"; not for {', '.join(ARCH_TITLES[a] for a, _, _ in pairs if a not in more)}, unlike the paper."))


def uncertainty_figure(results: dict, path: Path) -> None:
    archs = sorted({a for a, _ in results}, key=ARCHITECTURES.index)
    fig, axes = plt.subplots(1, max(1, len(archs)), figsize=(4.5 * max(1, len(archs)), 3.6), squeeze=False)
    centres = 0.5 * (ENTROPY_BINS[1:] + ENTROPY_BINS[:-1])
    for ax, arch in zip(axes[0], archs):
        for kind in KINDS:
            if (arch, kind) in results:
                h = np.asarray(results[(arch, kind)]["histogram"])
                ax.semilogy(centres, h / h.sum(), label=f"{kind}-trained")
        ax.set_title(f"{ARCH_TITLES[arch]}: per-pixel entropy")
        ax.set_xlabel("predictive entropy (nats)")
        ax.legend()
    axes[0][0].set_ylabel("fraction of head pixels")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def examples_figure(models: dict, cases: CaseCache, path: Path, mc: int, noise: float, drift: float) -> None:
    """One test slice: image, ground truth, and each model's prediction and entropy."""
    cid, vol, truth = max(cases.cases, key=lambda c: c[2].sum())
    k = int(np.argmax(truth.sum(axis=(0, 1))))
    items = list(models.items())
    fig, axes = plt.subplots(len(items), 4, figsize=(11, 2.8 * len(items)), squeeze=False)
    for row, ((arch, kind), spec) in zip(axes, items):
        seg = Segmenter(spec, RunSettings(model=spec.name, mode="analog", mc_samples=mc, noise_level=noise, drift_s=drift, seed=0))
        data = normalise_volume(vol.data, spec.preprocessing)
        image = get_slice(data, "axial", k)
        st = segment_slice(seg, image, k)
        row[0].imshow(image, cmap="gray")
        row[1].imshow(image, cmap="gray")
        row[1].contour(get_slice(truth, "axial", k), levels=[0.5], colors="lime")
        row[2].imshow(image, cmap="gray")
        row[2].contour(st.segmentation, levels=[0.5], colors="red")
        im = row[3].imshow(st.entropy, cmap="inferno", vmin=0, vmax=np.log(2))
        fig.colorbar(im, ax=row[3], fraction=0.046)
        for ax, title in zip(row, ["FLAIR", "ground truth", f"{ARCH_TITLES[arch]} {kind}", "entropy"]):
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{cid}, slice {k}: analog, noise {noise:g}, drift {drift:g} s, MC {mc}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# 4. Pipelining --------------------------------------------------------------------------------

def pipelining(spec: ModelSpec, volume: Volume, mc: int, mappings: dict[str, NetworkMapping]) -> dict:
    """Measured: the pipeline (`segment_volume`) against one slice at a time; modelled: an AIMC chip."""
    segmenter = Segmenter(spec, RunSettings(model=spec.name, mode="analog", mc_samples=mc, noise_level=1.0, drift_s=3600.0, seed=0))
    segmenter.program_all()
    prep = spec.preprocessing
    n = volume.shape[2]
    t0 = time.perf_counter()
    data = normalise_volume(volume.data, prep)
    for k in range(n):
        image = get_slice(data, "axial", k)
        segment_slice(segmenter, image, k)
    sequential = time.perf_counter() - t0
    t0 = time.perf_counter()
    segment_volume(segmenter, volume)
    pipelined = time.perf_counter() - t0
    chip = []
    for arch, m in mappings.items():
        t = volume_timing(m, n)
        chip.append({"arch": arch, "slices": n, "slice_latency_ms": 1e3 * t.slice_latency_s,
                     "sequential_ms": 1e3 * t.sequential_latency_s, "pipelined_ms": 1e3 * t.pipelined_latency_s,
                     "speedup": t.speedup, "slices_per_s_pipelined": t.pipelined_throughput})
    return {"model": spec.name, "slices": n, "mc": mc, "sequential_s": sequential, "pipelined_s": pipelined,
            "sequential_slices_per_s": n / sequential, "pipelined_slices_per_s": n / pipelined, "chip": chip,
            "t_mvm_ns": 1e9 * mvm_time_s()}


def pipelining_figure(pipe: dict, mappings: dict[str, NetworkMapping], path: Path) -> None:
    """Modelled chip: each layer's time per slice (the slowest sets the pipelined rate), and volume latency."""
    t_mvm = pipe["t_mvm_ns"] * 1e-9
    fig, (stages, volume) = plt.subplots(1, 2, figsize=(11, 3.8))
    slices = np.arange(1, 2 * pipe["slices"] + 1)
    for arch, m in mappings.items():
        stage_us = [1e6 * l.reuse * t_mvm for l in m.layers]
        line, = stages.plot(np.arange(1, len(stage_us) + 1), stage_us, "o-", ms=3, label=ARCH_TITLES[arch])
        t = [volume_timing(m, int(n), t_mvm) for n in slices]
        volume.plot(slices, [1e3 * v.sequential_latency_s for v in t], "--", color=line.get_color(),
                    label=f"{ARCH_TITLES[arch]}, one slice at a time")
        volume.plot(slices, [1e3 * v.pipelined_latency_s for v in t], "-", color=line.get_color(),
                    label=f"{ARCH_TITLES[arch]}, pipelined")
    stages.set(xlabel="analog layer, in forward order", ylabel="time per slice (µs)", yscale="log",
               title=f"Per-layer time on the chip (MVM {pipe['t_mvm_ns']:.0f} ns)")
    volume.axvline(pipe["slices"], color="grey", lw=0.8)
    volume.set(xlabel="slices in the volume", ylabel="volume latency (ms)",
               title="Whole volume on the modelled chip")
    _save_panels(fig, (stages, volume), path, legend_size=7)


def robustness_verdict(drops: list[dict]) -> str:
    """Sentences on the paper's claim that the isotropic transformer loses least, from our numbers:
    single reads after 1 hour (the sweep), then whether 4-chip ensembles after 1 day agree."""
    rows = {r["arch"]: r for r in drops if r["dataset"] == "lgg" and r["kind"] == "digital"}
    if "swinunetr" not in rows or len(rows) < 2:
        return ("The isotropic-versus-pyramidal comparison needs the digitally trained Swin-UNETR and a U-Net "
                "measured at nominal noise after both drift times; not all are measured yet.")

    def beaten(key: str) -> tuple[list[str], int, str] | None:
        """The pyramidal models that lose more than Swin-UNETR under this protocol, how many were
        measured under it, and the numbers."""
        drop = {a: r[key] for a, r in rows.items() if isinstance(r.get(key), float)}
        if "swinunetr" not in drop or len(drop) < 2:
            return None
        others = {a: d for a, d in drop.items() if a != "swinunetr"}
        return ([a for a, d in others.items() if drop["swinunetr"] < d], len(others),
                f"Swin-UNETR loses {drop['swinunetr']:.3f} Dice against "
                + ", ".join(f"{ARCH_TITLES[a]} {d:.3f}" for a, d in others.items()))

    def reading(beats: list[str], total: int) -> str:
        if len(beats) == total:
            return "the isotropic model is the most robust here too, as in the paper"
        if beats:
            return f"the isotropic model loses less than {', '.join(ARCH_TITLES[a] for a in beats)} only"
        return "unlike the paper, the isotropic model loses more than every pyramidal one"

    single = beaten("drop_hour")
    text = f"Digitally trained, at nominal noise after 1 hour, single reads: {single[2]}: {reading(*single[:2])}."
    ensemble = beaten("ensemble_drop_day")
    if ensemble is not None:
        text += (f" With 4-chip ensembles after 1 day (`aimc evaluate`, MC 4): {ensemble[2]}: "
                 f"{reading(*ensemble[:2])}; "
                 + ("the two protocols agree." if set(ensemble[0]) == set(single[0]) else
                    "the protocols disagree, so at this sample size our data do not settle the claim."))
    return text


# The report -----------------------------------------------------------------------------------

def _csv(rows: list[dict], path: Path) -> None:
    if rows:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def _md_table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "".join("| " + " | ".join(format(r[c[0]], c[2]) if isinstance(r[c[0]], (int, float)) else str(r[c[0]])
                                            for c in cols) + " |\n" for r in rows)


def write_report(out: Path, data_root: Path, programmings: int = 5, mc: int = 16, limit: int | None = None,
                 progress: bool = True, workers: int = 1, measure: bool = True) -> Path:
    """The whole report; `data_root` holds the data sets (lgg/, hippocampus/, nuclei/) as in ../shared/data.

    With `measure` False, nothing slow is measured: the report is written from the measurements made
    so far, and says how complete they are."""
    out.mkdir(parents=True, exist_ok=True)
    sets: dict[str, tuple[dict, str, list[Case]]] = {}
    for dataset in DATASETS:
        models = models_of(dataset)
        if models and (data_root / dataset).is_dir():
            layout, cases = cases_of_split(next(iter(models.values())), data_root / dataset, "test")
            sets[dataset] = (models, layout, cases[:limit])
    if "lgg" not in sets:
        raise ModelError(f"the report needs LGG models in {MODELS_DIR} and the LGG data in {data_root / 'lgg'}")
    models = sets["lgg"][0]

    def bar(items: Iterable, desc: str, total: int | None = None, initial: int = 0) -> Iterable:
        return tqdm(items, desc=desc, total=total, initial=initial, disable=not progress)

    cases = CaseCache(sets["lgg"][2])
    missing = [f"lgg_{a}_{k}" for a in ARCHITECTURES for k in KINDS if (a, k) not in models]
    text = ["# The paper's claims, measured on real data\n",
            f"Regenerate with `aimc report --out {out}`: the measurements behind every table are in "
            f"`{out}/measurements/` (one row per run); a run resumes from them and only measures what is missing.",
            "Test splits (never seen in training or model selection): "
            + ", ".join(f"{DATASET_TITLES[d]} {len(c)} {'images' if lay == 'nuclei' else 'patients'}" for d, (_, lay, c) in sets.items())
            + "; Dice per case (volume Dice per patient), then the mean.",
            f"Models measured: {', '.join(s.name for m, _, _ in sets.values() for s in m.values())}."
            + (f" Not shipped yet, so not measured: {', '.join(missing)}." if missing else ""),
            ""]

    # Measured in order of what a partial report needs most: the drop table, the uncertainty claims, the sweep.
    robustness(sets, out, programmings, bar, workers, measure, nominal_only=True)
    unc = uncertainty(models, sets["lgg"][2], out, mc, 1.0, 86400.0, bar, workers, measure)
    rows, done, planned = robustness(sets, out, programmings, bar, workers, measure)
    table, digital = robustness_table(rows, sets)
    _csv(table, out / "robustness.csv")
    drops = []
    for dataset, (dmodels, _, _) in sets.items():
        robustness_figure(table, dataset, out / f"robustness_{dataset}.png")
        for (arch, kind), spec in dmodels.items():
            at = {r["drift"]: r for r in table if r["model"] == spec.name and r["noise"] == 1.0}
            if spec.name in digital and len(at) == len(DRIFTS):
                drops.append({"dataset": dataset, "model": spec.name, "arch": arch, "kind": kind,
                              "programmings": min(r["n"] for r in at.values()), "digital": digital[spec.name],
                              "hour": at["1 hour"]["mean"], "hour_std": at["1 hour"]["std"],
                              "drop_hour": digital[spec.name] - at["1 hour"]["mean"],
                              "day": at["1 day"]["mean"], "day_std": at["1 day"]["std"],
                              "drop_day": digital[spec.name] - at["1 day"]["mean"],
                              "paper_drop": PAPER_DROP[arch] if kind == "digital" and dataset == "lgg" else "-",
                              **ensemble_columns(spec, digital[spec.name])})
    _csv(drops, out / "robustness_drops.csv")
    text += ["## 1. Noise robustness (paper Fig. 1)\n",
             *([f"**Partial:** {done} of the sweep's {planned} runs are measured so far; a model's row appears "
                "once it has runs at nominal noise after both drift times, and `n` says over how many programmings.\n"]
               if done < planned else []),
             *[f"![robustness {d}](robustness_{d}.png)\n" for d in sets],
             f"Dice at nominal noise (1.0) after 1 hour and 1 day of drift, mean ± std over {programmings} chip "
             "programmings (one read each; at noise 0 the chip is ideal and measured once), against the same model run digitally (an HWA model's digital run "
             "reads its tiles exactly). \"MC 4\": the mean of 4 chips' probabilities after 1 day, over 3 programmings, "
             "as `aimc evaluate --record` measured it for the model table. The paper's drops are for digitally trained models on brain MRI.\n",
             _md_table(drops, [("model", "model", ""), ("programmings", "n", "d"), ("digital", "digital", ".3f"), ("hour", "analog 1 h", ".3f"),
                               ("hour_std", "±", ".3f"), ("drop_hour", "drop 1 h", ".3f"), ("day", "analog 1 day", ".3f"),
                               ("day_std", "±", ".3f"), ("drop_day", "drop 1 day", ".3f"), ("ensemble_day", "MC 4, 1 day", ".3f"),
                               ("ensemble_drop_day", "drop MC 4", ".3f"), ("paper_drop", "paper's drop", "")]),
             robustness_verdict(drops), ""]

    mapping, mappings = tile_mapping(models)
    _csv(mapping, out / "tile_mapping.csv")
    tile_mapping_figure(mappings, out / "tile_mapping.png")
    text += ["## 2. Tile mapping (paper Table 1)\n",
             "![tile mapping](tile_mapping.png)\n",
             _md_table(mapping, [("arch", "architecture", ""), ("input", "input", ""), ("parameters", "parameters", "d"),
                                 ("analog_weights", "analog weights", "d"), ("tiles", "tiles 512x512", "d"),
                                 ("utilisation_pct", "utilisation %", ".2f"), ("mean_reuse", "mean reuse", ".1f"),
                                 ("paper_utilisation_pct", "paper util. %", ".2f"), ("paper_mean_reuse", "paper reuse", ".1f"),
                                 ("paper_parameters", "paper params", ".3g"), ("digital", "stays digital", "")]),
             "Our networks are narrower than the paper's (trained on two CPU cores: "
             + ", ".join(f"{ARCH_TITLES[r['arch']]} {r['parameters'] / 1e6:.2f} M parameters" for r in mapping)
             + ") and take 128x128 slices. Reuse counts a layer's matrix-vector products per slice, one per output "
             "pixel or token, so it falls with the input size. Utilisation is how much of its 512x512 tiles a layer's "
             "(input channels x kernel, output channels) weight matrix fills: a layer narrower than a tile leaves the "
             "rest empty, and a layer one row or column over a tile boundary takes a nearly empty extra tile, so "
             "it moves with the widths chosen, up or down, rather than with the parameter count.\n"]

    uncertainty_figure(unc, out / "uncertainty.png")
    examples_figure(models, cases, out / "examples.png", mc, 1.0, 86400.0)
    urows = [{"model": v["model"], "mean_entropy": v["mean_entropy"], "auroc": v["auroc"], "auroc_near": v["auroc_near"],
              "ece": v["ece"],
              "pearson": v["pearson_uncertainty_dice"], "spearman": v["spearman_uncertainty_dice"]} for v in unc.values()]
    _csv(urows, out / "uncertainty.csv")
    unmeasured = [spec.name for key, spec in models.items() if key not in unc]
    text += ["## 3. Uncertainty (paper Fig. 2 and 3)\n",
             *([f"**Partial:** not measured yet: {', '.join(unmeasured)}.\n"] if unmeasured else []),
             "![entropy densities](uncertainty.png)\n",
             "![examples](examples.png)\n",
             f"Analog, noise 1.0, drift 1 day, MC {mc}; pixels inside the head. AUROC: per-pixel entropy as a detector "
             "of wrong pixels, over the head (inflated by the many trivially right background pixels) and near the "
             f"lesion (within {NEAR_MM:g} mm of the true or predicted lesion, where the errors are); ECE: expected calibration error of the max class probability; correlations: "
             "a case's mean entropy against its Dice (negative = uncertain cases are the bad ones).\n",
             _md_table(urows, [("model", "model", ""), ("mean_entropy", "mean entropy", ".4f"), ("auroc", "error AUROC (head)", ".3f"),
                               ("auroc_near", "error AUROC (near lesion)", ".3f"), ("ece", "ECE", ".4f"), ("pearson", "Pearson r", ".2f"), ("spearman", "Spearman ρ", ".2f")]),
             uncertainty_verdict(unc), ""]

    spec = models.get(("unet", "hwa")) or models.get(("unet", "digital")) or next(iter(models.values()))
    pipe = pipelining(spec, cases.cases[0][1], 8, mappings)
    _csv(pipe["chip"], out / "pipelining_chip.csv")
    (out / "pipelining.json").write_text(json.dumps(pipe, indent=1))
    pipelining_figure(pipe, mappings, out / "pipelining.png")
    text += ["## 4. Pipelining across slices\n",
             "![pipelining](pipelining.png)\n",
             f"Measured on this machine ({pipe['slices']} slices of {cases.cases[0][0]}, {spec.name}, analog, MC {pipe['mc']}): "
             f"one slice at a time {pipe['sequential_slices_per_s']:.2f} slices/s, the pipeline (overlapping stages, "
             f"one inference worker per core) "
             f"{pipe['pipelined_slices_per_s']:.2f} slices/s ({pipe['sequential_s'] / pipe['pipelined_s']:.2f}x).\n",
             f"Modelled AIMC chip (each layer on its own tiles; MVM {pipe['t_mvm_ns']:.0f} ns from Le Gallo et al. 2023, "
             f"{LE_GALLO_2023['tops_one_phase']} TOPS over {LE_GALLO_2023['cores']} cores):\n",
             _md_table(pipe["chip"], [("arch", "architecture", ""), ("slice_latency_ms", "one slice (ms)", ".3f"),
                                      ("sequential_ms", "volume, sequential (ms)", ".2f"), ("pipelined_ms", "volume, pipelined (ms)", ".2f"),
                                      ("speedup", "speed-up", ".2f"), ("slices_per_s_pipelined", "slices/s pipelined", ".0f")]), ""]
    path = out / "README.md"
    path.write_text("\n".join(text))
    return path
