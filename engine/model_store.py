"""Model folders: `resources/models/NAME/` with `model.json` and weights that load without unpickling.

A folder holds
- `model.json`: architecture and arguments, preprocessing, labels, training kind and device
  settings, metrics, data split and provenance;
- `weights.safetensors`: the digital network (for a hardware-aware model, its digital equivalent);
- `analog.safetensors`: the network's analog tiles as trained (HWA) or calibrated (digital):
  tile weights, learned input ranges and output scales. aihwkit's own state dicts carry pickled
  config objects, so we store tensors only and rebuild the tiles from `model.json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from engine.architectures import build_network
from engine.analog.device import DeviceSettings
from engine.files import atomic_write, atomic_write_json
from engine.preprocessing import Preprocessing

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
MODELS_DIR = RESOURCES / "models"
WEIGHTS = "weights.safetensors"
ANALOG_WEIGHTS = "analog.safetensors"
DIGITAL = "digital"  # metrics key of the exact floating-point network


def metrics_key(mode: str, noise_level: float = 1.0, drift_s: float = 86400.0) -> str:
    """Where `aimc evaluate --record` keeps a measurement in model.json's metrics."""
    return DIGITAL if mode == DIGITAL else f"analog_noise{noise_level:g}_drift{drift_s:g}"


NOMINAL_CHIPS = metrics_key("analog", 1.0, 86400.0)  # analog chips at nominal noise, one day after programming


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
    keep_largest: list[int] = field(default_factory=list)  # labels cut to their largest component (chosen on val)
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
            "labels": [{"value": l.value, "name": l.name, "color": list(l.color)} for l in self.labels],
            "kind": self.kind,
            "device": self.device.to_dict(),
            "metrics": self.metrics,
            "data": self.data,
            "training": self.training,
            "postprocessing": {"keep_largest_component": self.keep_largest},
        }

    @classmethod
    def from_dict(cls, d: dict, folder: Path | None = None) -> "ModelSpec":
        return cls(
            name=d["name"],
            architecture=d["architecture"],
            arguments=d["arguments"],
            preprocessing=Preprocessing.from_dict(d["preprocessing"]),
            labels=[Label(int(l["value"]), l["name"], tuple(l["color"])) for l in d["labels"]],
            kind=d.get("kind", "digital"),
            device=DeviceSettings.from_dict(d.get("device", {})),
            metrics=d.get("metrics", {}),
            data=d.get("data", {}),
            training=d.get("training", {}),
            keep_largest=[int(v) for v in d.get("postprocessing", {}).get("keep_largest_component", [])],
            folder=folder,
        )

    def build(self) -> nn.Module:
        return build_network(self.architecture, self.arguments)


def write_spec(spec: ModelSpec, folder: Path) -> None:
    atomic_write_json(spec.to_dict(), folder / "model.json")


def tensors_only(state: dict) -> dict[str, torch.Tensor]:
    """Keep the tensors of a state dict (aihwkit adds pickled config dicts), contiguous and detached."""
    return {k: v.detach().contiguous().clone() for k, v in state.items()
            if isinstance(v, torch.Tensor) and not k.endswith("analog_ctx")}


def save_model(spec: ModelSpec, folder: Path, digital: nn.Module, analog: nn.Module | None = None,
               half: bool = False) -> None:
    """Write a model folder. `half` stores weights as fp16 to keep shipped files small."""
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


def read_spec(folder: Path) -> ModelSpec:
    path = folder / "model.json"
    if not path.exists():
        raise ModelError(f"{folder}: not a model folder (no model.json)")
    try:
        return ModelSpec.from_dict(json.loads(path.read_text()), folder)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: invalid model description ({exc})") from None


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    except Exception as exc:  # safetensors raises its own error types
        raise ModelError(f"{path}: weights could not be read ({exc})") from None


def load_digital(spec: ModelSpec) -> nn.Module:
    net = spec.build()
    net.load_state_dict(load_tensors(spec.folder / WEIGHTS))
    return net.eval()


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


def list_models(models_dir: Path = MODELS_DIR) -> list[ModelSpec]:
    if not models_dir.exists():
        return []
    specs = []
    for folder in sorted(models_dir.iterdir()):
        if (folder / "model.json").exists():
            try:
                specs.append(read_spec(folder))
            except ModelError:
                continue
    return specs


def default_model(models_dir: Path = MODELS_DIR) -> ModelSpec:
    """The model the app opens with: the LGG U-Net (hardware-aware if shipped)."""
    specs = list_models(models_dir)
    if not specs:
        raise ModelError(f"no models in {models_dir}")
    rank = {"lgg_unet_hwa": 0, "lgg_unet_digital": 1}
    return min(specs, key=lambda s: rank.get(s.name, 9))
