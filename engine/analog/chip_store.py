"""Programmed chips kept on disk between runs, so reopening a scan with the same settings reprograms nothing.

A chip (its programmed, drifted conductances as the fast layers read them, with their scales and input
ranges) is stored as one safetensors file: plain tensors, never unpickled, and a JSON header (the
file's metadata) holding the full key and a SHA-256 of the tensor bytes. The key is everything a chip
depends on: the model's stored tiles (a hash of `analog.safetensors`), the device settings with the
noise level and drift time, the run's seed, the chip's index, and the versions of the code that
programmed it. The file's name is a hash of the key; on reading, the header's key and the checksum
must match and the tensors must fit the network, or the entry is ignored and the chip programmed
again (and stored over it): an entry is never trusted.

Writers are safe side by side: each writes a temporary file of its own in the folder and renames it
into place in one step, so a reader sees a whole file or none; two writers of one chip write the same
bytes. The folder is bounded (`AIMC_CHIP_CACHE_MB`, default `DEFAULT_MAX_MB`; 0 turns the store off):
after each write the least recently used files (by modification time, touched on every hit) go first.

Location: `AIMC_CHIP_CACHE_DIR`, else `$XDG_CACHE_HOME/aimc-med/chips`, else `~/.cache/aimc-med/chips`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.files import TMP_PREFIX, atomic_write

DIR_ENV = "AIMC_CHIP_CACHE_DIR"
SIZE_ENV = "AIMC_CHIP_CACHE_MB"
DEFAULT_MAX_MB = 2048  # about 300 programmed LGG U-Net chips
FORMAT = 1  # bump when what a chip file holds changes
_HEADER = "aimc_chip"
_SUFFIX = ".safetensors"
_STALE_TMP_S = 3600.0  # a temporary file this old was left by a writer that died


def default_folder() -> Path:
    """Where chips are kept unless `AIMC_CHIP_CACHE_DIR` says otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aimc-med" / "chips"


@lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a file (a model's stored tiles), remembered while its size and time stay the same."""
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class ChipStore:
    """A size-bounded folder of programmed chips, one safetensors file per (key, chip index)."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes

    def path(self, key: dict[str, Any]) -> Path:
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:40]
        return self.folder / f"{name}{_SUFFIX}"

    def load(self, key: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """The tensors stored under `key`, or None when absent, unreadable or not this key's."""
        path = self.path(key)
        try:
            with safe_open(str(path), framework="pt") as f:
                header = json.loads((f.metadata() or {}).get(_HEADER, "null"))
                if not isinstance(header, dict) or header.get("key") != key:
                    return None
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (OSError, SafetensorError, ValueError, RuntimeError):
            return None  # absent, truncated or corrupt: programmed again and stored over
        if header.get("sha256") != _tensors_digest(tensors):
            return None
        try:
            os.utime(path)  # recently used: evicted last
        except OSError:
            pass
        return tensors

    def save(self, key: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Store a chip (a write that fails, e.g. a full disk, only costs the next run its programming)."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        if size > self.max_bytes:
            return
        header = json.dumps({"key": key, "sha256": _tensors_digest(tensors)}, sort_keys=True)
        try:
            atomic_write(
                self.path(key), lambda tmp: save_file(tensors, tmp, metadata={_HEADER: header}), _SUFFIX
            )
            self.evict()
        except OSError:
            return

    def entries(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{_SUFFIX}")) if self.folder.is_dir() else []

    def size_bytes(self) -> int:
        return sum(_size(p) for p in self.entries())

    def evict(self) -> None:
        """Drop the least recently used chips until the folder fits `max_bytes`, and stale temporaries."""
        now = time.time()
        for tmp in self.folder.glob(f"{TMP_PREFIX}*"):
            if now - _mtime(tmp) > _STALE_TMP_S:
                tmp.unlink(missing_ok=True)
        files = sorted(self.entries(), key=_mtime)
        total = sum(_size(p) for p in files)
        for p in files:
            if total <= self.max_bytes:
                break
            total -= _size(p)
            p.unlink(missing_ok=True)  # another process may have evicted it already


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def default_store() -> ChipStore | None:
    """The user's chip store as the environment sets it now; None when `AIMC_CHIP_CACHE_MB` is 0."""
    text = os.environ.get(SIZE_ENV, "").strip()
    try:
        max_mb = float(text) if text else DEFAULT_MAX_MB
    except ValueError:
        raise ValueError(f"{SIZE_ENV} must be a number of megabytes, not {text!r}") from None
    if max_mb <= 0:
        return None
    folder = os.environ.get(DIR_ENV)
    return ChipStore(Path(folder) if folder else default_folder(), int(max_mb * 2**20))
