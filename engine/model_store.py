"""Model folders: `resources/models/NAME/` with `model.json` and weights that load without unpickling.

A folder holds
- `model.json`: architecture and arguments, preprocessing, labels, training kind and device
  settings, metrics, data split and provenance;
- `weights.safetensors`: the digital network (for a hardware-aware model, its digital equivalent);
- `analog.safetensors`: the network's analog tiles as trained (HWA) or calibrated (digital):
  tile weights, learned input ranges and output scales. aihwkit's own state dicts carry pickled
  config objects, so we store tensors only and rebuild the tiles from `model.json`.

Reading and checking a folder needs neither torch nor MONAI nor aihwkit (they load where weights are
read or a network is built), so `aimc models` and the model gate start in a fraction of a second.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import jsonschema

from engine.analog.device import DeviceSettings
from engine.files import atomic_write, atomic_write_json
from engine.model_card import ModelCard
from engine.preprocessing import Preprocessing

if TYPE_CHECKING:
    import torch
    from torch import nn

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
MODELS_DIR = RESOURCES / "models"
WEIGHTS = "weights.safetensors"
ANALOG_WEIGHTS = "analog.safetensors"
SCHEMA = Path(__file__).resolve().parent / "model_schema.json"
DIGITAL = "digital"  # metrics key of the exact floating-point network


def metrics_key(mode: str, noise_level: float = 1.0, drift_s: float = 86400.0) -> str:
    """Where `aimc evaluate --record` keeps a measurement in model.json's metrics."""
    return DIGITAL if mode == DIGITAL else f"analog_noise{noise_level:g}_drift{drift_s:g}"


NOMINAL_CHIPS = metrics_key(
    "analog", 1.0, 86400.0
)  # analog chips at nominal noise, one day after programming


class ModelError(Exception):
    """A model that cannot be found or loaded; the message is for the user."""


@dataclass
class Label:
    value: int
    name: str
    color: tuple[int, int, int]


@dataclass
class ModelSpec:
    """The contents of model.json."""

    name: str
    architecture: str
    arguments: dict
    preprocessing: Preprocessing
    labels: list[Label]
    kind: str = "digital"  # "digital" or "hwa"
    device: DeviceSettings = field(default_factory=DeviceSettings)
    metrics: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    keep_largest: list[int] = field(
        default_factory=list
    )  # labels cut to their largest component (chosen on val)
    component_fraction: float = 1.0  # ... keeping also components of this share of the largest's size
    flip_average: bool = False  # each read averaged with its left-right mirror's (chosen on val)
    # read by overlapping windows of this (h, w) instead of whole (chosen on val; `engine.inference`)
    sliding_window: tuple[int, int] | None = None
    card: ModelCard | None = None  # what the model is for (modality, body part, training domain)
    trust: dict = field(
        default_factory=dict
    )  # per mode: the trust calibration fitted on validation (engine.trust)
    folder: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def label_names(self) -> dict[int, str]:
        return {label.value: label.name for label in self.labels}

    @property
    def has_analog(self) -> bool:
        return self.folder is not None and (self.folder / ANALOG_WEIGHTS).exists()

    def test_metrics(self, key: str = DIGITAL) -> dict:
        """What `aimc evaluate --record` stored for the test split under `key` (`DIGITAL` or
        `NOMINAL_CHIPS`; empty if never measured)."""
        return self.metrics.get("test", {}).get(key, {})

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "arguments": self.arguments,
            "preprocessing": self.preprocessing.to_dict(),
            "labels": [{"value": lb.value, "name": lb.name, "color": list(lb.color)} for lb in self.labels],
            "kind": self.kind,
            "device": self.device.to_dict(),
            "metrics": self.metrics,
            "data": self.data,
            "training": self.training,
            "postprocessing": {
                "keep_largest_component": self.keep_largest,
                "keep_components_of_fraction": self.component_fraction,
            },
            "inference": {
                "average_left_right_flip": self.flip_average,
                **({"sliding_window": list(self.sliding_window)} if self.sliding_window else {}),
            },
            **({"card": self.card.to_dict()} if self.card is not None else {}),
            **({"trust": self.trust} if self.trust else {}),
        }

    @classmethod
    def from_dict(cls, d: dict, folder: Path | None = None) -> ModelSpec:
        return cls(
            name=d["name"],
            architecture=d["architecture"],
            arguments=d["arguments"],
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            labels=[Label(int(lb["value"]), lb["name"], tuple(lb["color"])) for lb in d["labels"]],
            kind=d.get("kind", "digital"),
            device=DeviceSettings.from_dict(d.get("device", {})),
            metrics=d.get("metrics", {}),
            data=d.get("data", {}),
            training=d.get("training", {}),
            keep_largest=[int(v) for v in d.get("postprocessing", {}).get("keep_largest_component", [])],
            component_fraction=float(d.get("postprocessing", {}).get("keep_components_of_fraction", 1.0)),
            flip_average=bool(d.get("inference", {}).get("average_left_right_flip", False)),
            sliding_window=_window(d.get("inference", {}).get("sliding_window")),
            card=ModelCard.from_dict(d["card"]) if "card" in d else None,
            trust=d.get("trust", {}),
            folder=folder,
        )

    def build(self) -> nn.Module:
        """The network model.json describes; arguments the schema lets through but MONAI cannot build
        from (a width that is not a number, strides that do not match the channels) are a `ModelError`."""
        from engine.architectures import build_network

        with warnings.catch_warnings(record=True) as said:  # MONAI may warn first: the error is the line
            warnings.simplefilter("always")
            try:
                net = build_network(self.architecture, self.arguments)
            except (TypeError, ValueError, KeyError, IndexError, AssertionError, RuntimeError) as exc:
                where = self.folder / "model.json" if self.folder is not None else f"model {self.name}"
                detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise ModelError(
                    f"{where}: the arguments do not build a {self.architecture} network ({detail})"
                ) from None
        for w in said:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return net


def _window(value: list[int] | None) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def write_spec(spec: ModelSpec, folder: Path) -> None:
    atomic_write_json(spec.to_dict(), folder / "model.json")


def tensors_only(state: dict) -> dict[str, torch.Tensor]:
    """Keep the tensors of a state dict (aihwkit adds pickled config dicts), contiguous and detached."""
    import torch

    return {
        k: v.detach().contiguous().clone()
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and not k.endswith("analog_ctx")
    }


def save_model(
    spec: ModelSpec, folder: Path, digital: nn.Module, analog: nn.Module | None = None, half: bool = False
) -> None:
    """Write a model folder. `half` stores weights as fp16 to keep shipped files small."""
    from safetensors.torch import save_file

    def prep(state: dict) -> dict:
        t = tensors_only(state)
        if half:
            t = {k: (v.half() if v.is_floating_point() and v.numel() > 64 else v) for k, v in t.items()}
        return t

    atomic_write(folder / WEIGHTS, lambda p: save_file(prep(digital.state_dict()), p))
    if analog is not None:
        atomic_write(folder / ANALOG_WEIGHTS, lambda p: save_file(prep(analog.state_dict()), p))
    spec.folder = folder
    write_spec(spec, folder)


@functools.cache
def _schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def weights_hash(spec: ModelSpec) -> str:
    """sha256 over the model's weight files: what was measured on, or trained from, these weights only."""
    digest = hashlib.sha256()
    for name in (WEIGHTS, ANALOG_WEIGHTS):
        if spec.folder is not None and (spec.folder / name).is_file():
            digest.update((spec.folder / name).read_bytes())
    return digest.hexdigest()


def validate_description(d: object) -> None:
    """Raise ValueError naming the first problem of a model.json's contents (schema, then meaning).

    The schema also lists the arguments each MONAI network takes, so that an unknown one is found
    without importing MONAI (`tests/test_broken_models.py` keeps the lists within MONAI's signatures)."""
    error = jsonschema.exceptions.best_match(_schema_validator().iter_errors(d))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise ValueError(f"{where}: {error.message}")
    assert isinstance(d, dict)
    values = [label["value"] for label in d["labels"]]
    if sorted(values) != list(range(len(values))):
        raise ValueError(f"labels: values must be 0..{len(values) - 1} once each, got {values}")
    out_channels = d["arguments"].get("out_channels")
    if out_channels is not None and out_channels != len(values):
        raise ValueError(f"the network has {out_channels} outputs for {len(values)} labels")
    window = d.get("inference", {}).get("sliding_window")
    size = d["preprocessing"]["input_size"]
    if window is not None and any(w > n for w, n in zip(window, size, strict=True)):
        raise ValueError(f"inference: sliding window {window} larger than the input size {size}")


def read_spec(folder: Path) -> ModelSpec:
    path = folder / "model.json"
    if not path.exists():
        raise ModelError(f"{folder}: not a model folder (no model.json)")
    try:
        description = json.loads(path.read_text())
        validate_description(description)
        return ModelSpec.from_dict(description, folder)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError, OSError) as exc:
        raise ModelError(f"{path}: invalid model description ({exc})") from None


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{path}: weights could not be read ({exc})") from None


def load_digital(spec: ModelSpec) -> nn.Module:
    if spec.folder is None:
        raise ModelError(f"model {spec.name} has no folder to load weights from")
    net = spec.build()
    load_weights(net, load_tensors(spec.folder / WEIGHTS), spec.folder / WEIGHTS)
    return net.eval()


def load_weights(net: nn.Module, state: dict[str, torch.Tensor], path: Path, strict: bool = True) -> None:
    """`net.load_state_dict(state)`, a mismatch reported as a `ModelError` naming the file."""
    try:
        net.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = (first[1] if len(first) > 1 else first[0]).strip() if first else "mismatch"
        raise ModelError(
            f"{path}: the weights do not fit the network described in model.json ({detail[:200]})"
        ) from None


def find_model(name: str | os.PathLike, models_dir: Path = MODELS_DIR) -> ModelSpec:
    """A model by name (a folder in resources/models) or by path."""
    p = Path(name)
    if (p / "model.json").exists():
        return read_spec(p)
    q = models_dir / str(name)
    if (q / "model.json").exists():
        return read_spec(q)
    available = ", ".join(s.name for s in list_models(models_dir)) or "none"
    raise ModelError(f"no model named {name!r}; available: {available}")


def scan_models(models_dir: Path = MODELS_DIR) -> tuple[list[ModelSpec], dict[str, str]]:
    """The valid models of a folder, and the broken ones by folder name with what is wrong."""
    specs: list[ModelSpec] = []
    broken: dict[str, str] = {}
    if not models_dir.exists():
        return specs, broken
    for folder in sorted(models_dir.iterdir()):
        if (folder / "model.json").exists():
            try:
                specs.append(read_spec(folder))
            except ModelError as exc:
                broken[folder.name] = str(exc)
    return specs, broken


def list_models(models_dir: Path = MODELS_DIR) -> list[ModelSpec]:
    """The models that can be used (broken folders are left out: `scan_models` names them)."""
    return scan_models(models_dir)[0]


def default_model(models_dir: Path = MODELS_DIR) -> ModelSpec:
    """The model the app opens with: the LGG U-Net (hardware-aware if shipped)."""
    specs = list_models(models_dir)
    if not specs:
        raise ModelError(f"no models in {models_dir}")
    rank = {"lgg_unet_hwa": 0, "lgg_unet_digital": 1}
    return min(specs, key=lambda s: rank.get(s.name, 9))
