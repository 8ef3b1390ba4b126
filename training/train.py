"""Train a digital model, or adapt one to analog tiles by hardware-aware (HWA) training.

Dice + cross-entropy (MONAI), validation Dice per patient each epoch, the best epoch kept, and a
checkpoint after every epoch in `runs/NAME/` so an interrupted run resumes where it stopped. A digital
model can be trained further in a second round (`init`, a fresh cosine schedule from a lower learning
rate); the earlier round's record is kept in `model.json`.

HWA training follows Rasch et al. (2023, Nat. Commun.): it starts from the digital weights, converts
them to aihwkit inference tiles and trains with weight noise in the forward pass, output noise,
DAC/ADC quantisation, learned input ranges (starting from the digital model's calibration) and
output scales, with clipping and remapping after each step (`AnalogOptimizer`). The tiles' forward
runs through `engine.analog.hwa_forward` (aihwkit's forward and gradients without its im2col).

Training runs on the process's compute device (`engine.compute_device`, `aimc train --device`); the
best epoch is rebuilt on the CPU to be saved.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from aihwkit.nn.conversion import convert_to_analog, convert_to_digital
from aihwkit.optim import AnalogOptimizer
from monai.losses import DiceCELoss, DiceFocalLoss
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from engine.analog.conversion import calibrated_analog
from engine.analog.device import DeviceSettings, rpu_config
from engine.analog.hwa_forward import use_fast_hwa
from engine.architectures import default_arguments
from engine.compute_device import resolve_device
from engine.metrics import mean_dice
from engine.model_store import (
    ANALOG_WEIGHTS,
    Label,
    ModelSpec,
    find_model,
    load_digital,
    load_tensors,
    save_model,
    tensors_only,
    weights_hash,
)
from engine.preprocessing import Preprocessing
from training.data import AUGMENTATIONS, SliceDataset, load_cases, read_dataset, split_by_patient
from training.postprocessing import choose_postprocessing

PRESETS = {
    # folder name -> (preprocessing, labels, dataset description)
    "lgg": (
        Preprocessing("percentile", 1.0, 99.0, (128, 128), "axial"),
        [Label(0, "background", (0, 0, 0)), Label(1, "FLAIR abnormality", (255, 80, 40))],
    ),
    "hippocampus": (
        Preprocessing("percentile", 1.0, 99.0, (64, 64), "axial"),
        [
            Label(0, "background", (0, 0, 0)),
            Label(1, "anterior hippocampus", (255, 200, 0)),
            Label(2, "posterior hippocampus", (0, 160, 255)),
        ],
    ),
    "nuclei": (
        Preprocessing("percentile", 1.0, 99.0, (128, 128), "axial"),
        [Label(0, "background", (0, 0, 0)), Label(1, "nucleus", (60, 220, 90))],
    ),
    "spleen": (
        Preprocessing("window", -160.0, 240.0, (128, 128), "axial"),
        [Label(0, "background", (0, 0, 0)), Label(1, "spleen", (230, 60, 140))],
    ),
}


def preset_for(data: Path) -> tuple[Preprocessing, list[Label]]:
    for key, value in PRESETS.items():
        if key in data.resolve().name.lower():
            return value
    raise ValueError(f"{data}: no preset for this data set; known: {', '.join(PRESETS)}")


LOSSES = ("dicece", "dicefocal")


def loss_function(name: str) -> torch.nn.Module:
    """Dice + cross-entropy (the default), or Dice + focal (gamma 2), which weighs the hard pixels at a
    lesion's border and the small lesions more than the easy background."""
    if name == "dicece":
        return DiceCELoss(to_onehot_y=True, softmax=True)
    if name == "dicefocal":
        return DiceFocalLoss(to_onehot_y=True, softmax=True, gamma=2.0)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, not {name!r}")


def input_preprocessing(prep: Preprocessing, size: int | None = None, context: int = 0) -> Preprocessing:
    """The data set's preset with the model's input size (e.g. the native 256) and 2.5D context."""
    if context < 0:
        raise ValueError(f"context must be 0 or more slices, not {context}")
    if context and prep.in_channels != 1:
        raise ValueError("2.5D context needs a one-channel scan")
    return dataclasses.replace(
        prep,
        input_size=(size, size) if size else prep.input_size,
        context=context,
        in_channels=2 * context + 1 if context else prep.in_channels,
    )


def plateaued(history: list[dict], patience: int | None) -> bool:
    """True when validation Dice has not improved on its best for the last `patience` epochs."""
    if not patience or len(history) <= patience:
        return False
    scores = [h["val_dice"] for h in history]
    return max(scores[-patience:]) <= max(scores[:-patience])


# Input ranges are kept at or above this during HWA training. A layer whose inputs are near zero (a
# Swin-UNETR's deepest stage once trained long: calibrated ranges down to 1e-7) gets a range that one
# Adam step of the learning rate's size pushes below zero, and dividing by it makes the loss NaN.
# 1e-3 is far below every working layer's range (0.2-40) and quantises such near-zero inputs to 0,
# as the digital model all but does.
MIN_INPUT_RANGE = 1e-3


def floor_input_ranges(model: torch.nn.Module) -> None:
    """Keep every tile's learned input range at or above `MIN_INPUT_RANGE` (in place)."""
    for _, tile in model.named_analog_tiles():
        tile.input_range.data.clamp_(min=MIN_INPUT_RANGE)


def hwa_start(base: ModelSpec, settings: DeviceSettings) -> torch.nn.Module:
    """The digital model on training tiles, input ranges taken from its calibration, fast forward on."""
    model = convert_to_analog(load_digital(base), rpu_config(settings, training=True))
    calibrated = {
        k: v for k, v in load_tensors(base.folder / ANALOG_WEIGHTS).items() if k.endswith("input_range")
    }
    missing = set(calibrated) - set(model.state_dict())
    if missing:
        raise ValueError(f"{base.name}: calibration does not fit the network ({sorted(missing)[:2]})")
    model.load_state_dict(calibrated, strict=False)
    for _, tile in model.named_analog_tiles():  # ranges are set: no re-initialisation from data
        tile.input_range_update_idx.data.fill_(tile.rpu_config.pre_post.input_range.init_from_data)
    floor_input_ranges(model)
    return use_fast_hwa(model)


def _validate(
    model: torch.nn.Module, loaded: dict, case_ids: list[str], num_classes: int, device: torch.device
) -> float:
    """Mean per-case volume Dice at the model's input size (a fast proxy used to pick the best epoch)."""
    model.eval()
    scores = []
    with torch.no_grad():
        for cid in case_ids:
            x, y = loaded[cid]
            pred = torch.cat(
                [
                    model(torch.from_numpy(x[i : i + 16]).to(device)).argmax(1).cpu()
                    for i in range(0, len(x), 16)
                ]
            )
            scores.append(mean_dice(pred.numpy(), y, num_classes))
    return float(np.mean(scores))


# What every choice of a model was made on (issue 14's protocol), stated in its model.json.
SELECTION = (
    "epoch, input, recipe and post-processing chosen on the validation patients only; "
    "the test patients were measured once, on the final model (aimc evaluate --record)"
)


# aihwkit keeps a random 4000 of every tile's input rows to set its input range, concatenating and
# shuffling all rows of each batch to draw them: every slice of 20 patients at 256x256 took over
# 10 minutes and 10 GB. A seeded sample of slices gives the same kind of draw.
CALIBRATION_SLICES = 128


def calibration_slices(loaded: dict, train_ids: list[str], seed: int) -> torch.Tensor:
    """Up to CALIBRATION_SLICES training slices (of the first 20 training patients), drawn with `seed`,
    to calibrate a digitally trained network's analog input ranges."""
    images = np.concatenate([loaded[c][0] for c in train_ids[:20] if c in loaded])
    if len(images) > CALIBRATION_SLICES:
        pick = np.random.default_rng(seed).choice(len(images), CALIBRATION_SLICES, replace=False)
        images = images[np.sort(pick)]
    return torch.from_numpy(images)


def training_loader(dataset: SliceDataset, batch_size: int, seed: int, workers: int) -> DataLoader:
    """Shuffled batches; with `workers=1` the augmentation runs in one persistent process, whose copy of
    the dataset's random state carries over from epoch to epoch: the same batches as in-process. The
    shuffle has a generator of its own: the loader draws its workers' seeds from the other one, once
    per epoch in-process but once per run with a persistent worker."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)),
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed + 1),
    )


def train(
    data: Path,
    arch: str,
    kind: str,
    out: Path,
    init: str | None = None,
    epochs: int = 30,
    batch_size: int = 16,
    lr: float | None = None,
    seed: int = 0,
    max_minutes: float = 120.0,
    runs_dir: Path = Path("runs"),
    settings: DeviceSettings | None = None,
    log=print,
    size: int | None = None,
    context: int = 0,
    augment: str = "standard",
    loss: str = "dicece",
    crop: int | None = None,
    arch_arguments: dict | None = None,
    patience: int | None = None,
    crop_foreground: float = 1 / 3,
    loader_workers: int = 0,
) -> ModelSpec:
    """`size` (square input, default the preset's), `context` (2.5D: neighbouring slices on each side as
    channels), `augment` ("standard" or "strong") and `loss` ("dicece" or "dicefocal") are the levers of a
    new digital model; a further round or an HWA model keeps its base model's input. `crop` trains on
    random crop x crop patches of the slices (centred on a lesion pixel with probability
    `crop_foreground`); validation and inference see whole slices.
    `patience` stops a run once validation Dice has been flat (no new best) for that many epochs.
    `arch_arguments` override the architecture's default widths (e.g. a U-Net++ at the U-Net's
    parameter count). `loader_workers=1` augments the next batch in a worker process (`training_loader`)."""
    if loader_workers not in (0, 1):
        raise ValueError("loader_workers is 0 or 1: more workers would each draw their own augmentations")
    device = resolve_device()
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    name = out.name
    run = runs_dir / name
    run.mkdir(parents=True, exist_ok=True)
    layout, cases = read_dataset(data)
    prep, labels = preset_for(data)
    prep = input_preprocessing(prep, size, context)
    if init is not None:
        if size or context or arch_arguments:
            raise ValueError(
                "--size, --context and --arch-args are for a new model; a further round keeps its base's"
            )
        prep = find_model(init).preprocessing
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, not {augment!r}")
    split = split_by_patient(cases, seed)
    started = time.time()
    loaded = load_cases([c for c in cases if c.case_id not in split["test"]], layout, prep, log)
    log(
        f"{len(loaded)} cases loaded in {time.time() - started:.0f}s; "
        f"split {', '.join(f'{k} {len(v)}' for k, v in split.items())}"
    )
    train_set = SliceDataset(
        loaded,
        split["train"],
        augment=True,
        seed=seed,
        strength=augment,
        crop=crop,
        foreground_fraction=crop_foreground,
    )
    val_ids = [c for c in split["val"] if c in loaded]
    loader = training_loader(train_set, batch_size, seed, loader_workers)
    settings = settings or DeviceSettings()

    earlier: dict = {}
    if kind == "digital":
        if init is None:
            arguments = {
                **default_arguments(arch, prep.in_channels, len(labels), prep.input_size[0]),
                **(arch_arguments or {}),
            }
            spec = ModelSpec(name, arch, arguments, prep, labels, "digital", settings)
            model = spec.build()
        else:  # a further round from a shipped digital model (warm restart of the schedule)
            base = find_model(init)
            if base.kind != "digital" or base.architecture != arch or base.data.get("split") != split:
                raise ValueError(
                    f"{init}: a further digital round needs a digital {arch} trained on this split"
                )
            spec = ModelSpec(name, arch, base.arguments, prep, labels, "digital", settings)
            model, earlier = load_digital(base).train(), base.training
        model = model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr or 1e-3, weight_decay=1e-5)
    elif kind == "hwa":
        if init is None:
            raise ValueError("HWA training starts from a digital model: give --init NAME")
        base = find_model(init)
        spec = ModelSpec(
            name,
            base.architecture,
            base.arguments,
            base.preprocessing,
            base.labels,
            "hwa",
            settings,
            data=dict(base.data),
        )
        model = hwa_start(base, settings).to(device)
        optimizer = AnalogOptimizer(torch.optim.Adam, model.parameters(), lr=lr or 2e-4)
    else:
        raise ValueError(f"kind must be digital or hwa, not {kind!r}")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_name, loss_fn = loss, loss_function(loss)
    # what the run builds, so its checkpoints can be evaluated while it trains
    # (training.failure_analysis --run)
    (run / "spec.json").write_text(
        json.dumps(
            {
                **spec.to_dict(),
                "data": {"dataset": str(data.name), "layout": layout, "split_seed": seed, "split": split},
            },
            indent=1,
        )
    )

    ckpt_path = run / "checkpoint.pt"
    best_path = run / "best.pt"
    start_epoch, best, history = 0, -1.0, []
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=True, map_location=device)
        model.load_state_dict(ckpt["model"], strict=False)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best, history = ckpt["epoch"], ckpt["best"], ckpt["history"]
        log(f"resuming {name} after epoch {start_epoch} (best val Dice {best:.4f})")
    wall_before = sum(h["seconds"] for h in history)

    for epoch in range(start_epoch, epochs):
        if (time.time() - started) / 60 + wall_before / 60 > max_minutes:
            log(f"time budget of {max_minutes} min reached; stopping after epoch {epoch}")
            break
        if plateaued(history, patience):
            log(f"validation Dice flat for {patience} epochs; stopping after epoch {epoch}")
            break
        t0 = time.time()
        model.train()
        losses = []
        for x, y in tqdm(loader, desc=f"{name} epoch {epoch + 1}/{epochs}", leave=False):
            optimizer.zero_grad()
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y[:, None])
            if not torch.isfinite(loss):  # stop at once rather than train epochs of NaN
                raise FloatingPointError(f"{name}: the loss is not finite in epoch {epoch + 1}")
            loss.backward()
            optimizer.step()
            if kind == "hwa":
                floor_input_ranges(model)
            losses.append(loss.item())
        scheduler.step()
        val = _validate(model, loaded, val_ids, len(labels), device)
        seconds = time.time() - t0
        history.append(
            {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_dice": val, "seconds": seconds}
        )
        log(f"{name} epoch {epoch + 1}: loss {np.mean(losses):.4f}, val Dice {val:.4f}, {seconds:.0f}s")
        if val > best:
            best = val
            torch.save(tensors_only(model.state_dict()), best_path)
        torch.save(
            {
                "model": tensors_only(model.state_dict()),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "best": best,
                "history": history,
            },
            ckpt_path,
        )
        with open(run / "log.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(history)

    # the best epoch, rebuilt on the CPU (aihwkit does not move tiles back from a GPU)
    model = hwa_start(base, settings) if kind == "hwa" else model.cpu()
    model.load_state_dict(torch.load(best_path, weights_only=True, map_location="cpu"), strict=False)
    model.eval()
    spec.metrics = {"val_dice_model_size": best}
    spec.data = {
        "dataset": str(data.name),
        "layout": layout,
        "split_seed": seed,
        "split": split,
        **{k: v for k, v in spec.data.items() if k not in ("split", "split_seed")},
    }
    spec.training = {
        "kind": kind,
        "init": init if kind == "hwa" else None,
        # which weights of `init` it started from: the model of that name may be replaced later
        **({"init_weights": weights_hash(base)} if kind == "hwa" else {}),
        "epochs_run": len(history) + earlier.get("epochs_run", 0),
        "epochs_planned": epochs,
        **({"patience": patience, "converged": plateaued(history, patience)} if patience else {}),
        "batch_size": batch_size,
        "loss": {"dicece": "DiceCE", "dicefocal": "DiceFocal"}[loss_name],
        "augmentation": augment,
        **({"patch": crop, "patch_foreground": crop_foreground} if crop else {}),
        "optimizer": type(optimizer).__name__,
        "learning_rate": optimizer.param_groups[0]["initial_lr"],
        "wall_time_s": round(sum(h["seconds"] for h in history)) + earlier.get("wall_time_s", 0),
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        + (torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"),
        "torch": torch.__version__,
        "best_val_dice": best,
        "selection": SELECTION,
        "history": history,
        **({"earlier_round": earlier} if earlier else {}),
    }
    if kind == "digital":
        digital = model
        analog_net = calibrated_analog(digital, settings, calibration_slices(loaded, split["train"], seed))
    else:
        analog_net = model
        digital = convert_to_digital(model)
    save_model(spec, out, digital, analog_net, half=True)
    choose_postprocessing(spec, data, log=log)
    (run / "model.json").write_text(json.dumps(spec.to_dict(), indent=1))
    log(f"saved {out} (best val Dice {best:.4f})")
    return spec
