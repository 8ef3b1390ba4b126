"""The report's figures, drawn from the claims' numbers (PNG, headless)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from engine.analog.device import TILE_SIZE  # noqa: E402
from engine.architectures import ARCHITECTURES  # noqa: E402
from training.report.jobs import KINDS  # noqa: E402
from training.report.markdown import ARCH_TITLES, DATASET_TITLES  # noqa: E402
from training.report.pipelining import chip_curves  # noqa: E402
from training.report.robustness import DRIFTS  # noqa: E402
from training.report.tile_mapping import NetworkMapping  # noqa: E402
from training.report.uncertainty import ENTROPY_BINS, Example  # noqa: E402


def _save(fig: plt.Figure, path: Path, dpi: int = 110) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _save_panels(fig: plt.Figure, axes: Iterable[plt.Axes], path: Path, legend_size: int) -> None:
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
    _save(fig, path)


def robustness_figure(table: list[dict], dataset: str, path: Path) -> None:
    """Dice against device noise, per drift time: one curve per architecture and training kind."""
    fig, axes = plt.subplots(1, len(DRIFTS), figsize=(11, 4), sharey=True)
    for ax, dname in zip(np.atleast_1d(axes), DRIFTS, strict=True):
        for arch in ARCHITECTURES:
            for kind, style in (("digital", "--"), ("hwa", "-")):
                pts = [
                    r
                    for r in table
                    if r["dataset"] == dataset
                    and r["arch"] == arch
                    and r["kind"] == kind
                    and r["drift"] == dname
                ]
                if pts:
                    ax.errorbar(
                        [p["noise"] for p in pts],
                        [p["mean"] for p in pts],
                        [p["std"] for p in pts],
                        linestyle=style,
                        marker="o",
                        capsize=3,
                        label=f"{ARCH_TITLES[arch]} {kind}-trained",
                    )
        ax.set_title(f"{DATASET_TITLES.get(dataset, dataset)} test split, drift {dname}")
        ax.set_xlabel("device noise level (1 = nominal PCM)")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("mean per-case Dice")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    _save(fig, path)


def tile_mapping_figure(mappings: dict[str, NetworkMapping], path: Path) -> None:
    """Per analog layer, in forward order: how full its tiles are, and how often they are read per slice."""
    fig, (util, reuse) = plt.subplots(1, 2, figsize=(11, 3.8))
    for arch, m in mappings.items():
        x = np.arange(1, len(m.layers) + 1)
        util.plot(
            x,
            [100 * layer.utilisation for layer in m.layers],
            "o-",
            ms=3,
            label=f"{ARCH_TITLES[arch]} ({m.tiles} tiles)",
        )
        reuse.semilogy(x, [layer.reuse for layer in m.layers], "o-", ms=3, label=ARCH_TITLES[arch])
    util.set(
        xlabel="analog layer, in forward order",
        ylabel="tile utilisation (%)",
        ylim=(0, 100),
        title=f"How full each layer's {TILE_SIZE}x{TILE_SIZE} tiles are",
    )
    reuse.set(
        xlabel="analog layer, in forward order",
        ylabel="MVMs per slice (reuse)",
        title="How often each layer's tiles are read",
    )
    _save_panels(fig, (util, reuse), path, legend_size=8)


def uncertainty_figure(results: dict[tuple[str, str], dict], path: Path) -> None:
    """The density of per-pixel entropy, digitally trained against HWA-trained, per architecture."""
    archs = sorted({a for a, _ in results}, key=ARCHITECTURES.index)
    fig, axes = plt.subplots(1, max(1, len(archs)), figsize=(4.5 * max(1, len(archs)), 3.6), squeeze=False)
    centres = 0.5 * (ENTROPY_BINS[1:] + ENTROPY_BINS[:-1])
    for ax, arch in zip(axes[0], archs, strict=False):
        for kind in KINDS:
            if (arch, kind) in results:
                h = np.asarray(results[(arch, kind)]["histogram"])
                ax.semilogy(centres, h / h.sum(), label=f"{kind}-trained")
        ax.set_title(f"{ARCH_TITLES[arch]}: per-pixel entropy")
        ax.set_xlabel("predictive entropy (nats)")
        ax.legend()
    axes[0][0].set_ylabel("fraction of head pixels")
    _save(fig, path)


def examples_figure(example: Example, path: Path, mc: int, noise: float, drift: float) -> None:
    """One test slice: image, ground truth, and each model's prediction and entropy."""
    fig, axes = plt.subplots(
        len(example.readings), 4, figsize=(11, 2.8 * len(example.readings)), squeeze=False
    )
    for row, reading in zip(axes, example.readings, strict=True):
        for ax in row[:3]:
            ax.imshow(reading.image, cmap="gray")
        row[1].contour(example.truth, levels=[0.5], colors="lime")
        row[2].contour(reading.stats.segmentation, levels=[0.5], colors="red")
        im = row[3].imshow(reading.stats.entropy, cmap="inferno", vmin=0, vmax=np.log(2))
        fig.colorbar(im, ax=row[3], fraction=0.046)
        for ax, title in zip(
            row,
            ["FLAIR", "ground truth", f"{ARCH_TITLES[reading.arch]} {reading.kind}", "entropy"],
            strict=True,
        ):
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle(
        f"{example.case_id}, slice {example.index}: analog, noise {noise:g}, drift {drift:g} s, MC {mc}"
    )
    _save(fig, path, dpi=100)


def pipelining_figure(pipe: dict, mappings: dict[str, NetworkMapping], path: Path) -> None:
    """Modelled chip: each layer's time per slice (the slowest sets the pipelined rate), volume latency."""
    t_mvm = pipe["t_mvm_ns"] * 1e-9
    fig, (stages, volume) = plt.subplots(1, 2, figsize=(11, 3.8))
    for arch, m in mappings.items():
        c = chip_curves(m, 2 * pipe["slices"], t_mvm)
        (line,) = stages.plot(
            np.arange(1, len(c.stage_us) + 1), c.stage_us, "o-", ms=3, label=ARCH_TITLES[arch]
        )
        volume.plot(
            c.slices,
            c.sequential_ms,
            "--",
            color=line.get_color(),
            label=f"{ARCH_TITLES[arch]}, one slice at a time",
        )
        volume.plot(
            c.slices, c.pipelined_ms, "-", color=line.get_color(), label=f"{ARCH_TITLES[arch]}, pipelined"
        )
    stages.set(
        xlabel="analog layer, in forward order",
        ylabel="time per slice (µs)",
        yscale="log",
        title=f"Per-layer time on the chip (MVM {pipe['t_mvm_ns']:.0f} ns)",
    )
    volume.axvline(pipe["slices"], color="grey", lw=0.8)
    volume.set(
        xlabel="slices in the volume", ylabel="volume latency (ms)", title="Whole volume on the modelled chip"
    )
    _save_panels(fig, (stages, volume), path, legend_size=7)
