"""Learning curves of the installed models: validation Dice per epoch, from each model.json's history.

A model folder keeps its curve in `training.history` (every round's, the earlier ones under
`training.earlier_round`); this draws them side by side and says, per model, whether validation Dice
had flattened when training stopped: the best epoch, and the spread of the last `TAIL` epochs. The
validation Dice here is the training's per-epoch proxy (slices at the model's input size, before
post-processing), the number the best epoch was chosen on; the engine's volume Dice is in the models table.

    python -m training.report.learning_curves [--out reports] [--model NAME ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from engine.model_store import ModelSpec, find_model, list_models  # noqa: E402
from training.report.markdown import md_table  # noqa: E402

TAIL = 5  # epochs at the end over which "flat" is judged
FIGURE = "learning_curves.png"


def history(training: dict) -> list[dict]:
    """Every epoch of every round, oldest round first, numbered on from one round to the next."""
    earlier = history(training["earlier_round"]) if "earlier_round" in training else []
    own = [{**h, "epoch": len(earlier) + i + 1} for i, h in enumerate(training.get("history", []))]
    return earlier + own


def summary(spec: ModelSpec) -> dict:
    epochs = history(spec.training)
    dice = np.array([h["val_dice"] for h in epochs], dtype=float)
    if not len(dice):
        raise ValueError(f"{spec.name}: model.json holds no training history")
    tail = dice[-TAIL:]
    return {
        "model": spec.name,
        "epochs": len(dice),
        "best_epoch": int(np.argmax(dice)) + 1,
        "best": float(dice.max()),
        "tail_mean": float(tail.mean()),
        "tail_range": float(tail.max() - tail.min()),
        "best_in_tail": bool(np.argmax(dice) >= len(dice) - TAIL),
    }


COLUMNS = [
    ("model", "model", ""),
    ("epochs", "epochs", "d"),
    ("best_epoch", "best epoch", "d"),
    ("best", "best val Dice (proxy)", ".3f"),
    ("tail_mean", f"mean of the last {TAIL}", ".3f"),
    ("tail_range", f"range of the last {TAIL}", ".3f"),
    ("best_in_tail", f"best within the last {TAIL}", ""),
]


def draw(specs: list[ModelSpec], path: Path) -> None:
    datasets = sorted({s.name.split("_")[0] for s in specs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for spec in (s for s in specs if s.name.split("_")[0] == dataset):
            epochs = history(spec.training)
            x = [h["epoch"] for h in epochs]
            y = [h["val_dice"] for h in epochs]
            style = "-" if spec.kind == "hwa" else "--"
            (line,) = ax.plot(x, y, style, label=spec.name, linewidth=1.2)
            best = int(np.argmax(y))
            ax.plot(x[best], y[best], "o", color=line.get_color())
        ax.set_title(dataset)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation Dice (per-epoch proxy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("reports"))
    p.add_argument("--model", nargs="*", help="models to draw (default: every installed model)")
    args = p.parse_args(argv)
    specs = [find_model(m) for m in args.model] if args.model else list_models()
    specs = [s for s in specs if history(s.training)]
    args.out.mkdir(parents=True, exist_ok=True)
    draw(specs, args.out / FIGURE)
    print(md_table([summary(s) for s in specs], COLUMNS))
    print(f"figure: {args.out / FIGURE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
