"""Writing a file atomically: into a temporary file in the target's folder, then one rename.

A reader never sees a half-written file, and a failed write leaves no stray temporary behind.
The file gets the mode the user's umask gives a new file (typically 0644), not the 0600 of a
temporary file, so other users and import services can read what we export.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMP_PREFIX = ".tmp-"  # a temporary file being written; one left behind was killed mid-write


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], suffix: str = "") -> Path:
    """Call `write(tmp)` to fill a temporary file next to `path`, then rename it onto `path`.

    `suffix` lets writers that choose a format from the name (nibabel: `.nii.gz`) see the right one.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=out.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def atomic_write_json(data: object, path: str | os.PathLike) -> Path:
    """`data` as indented JSON (one trailing newline), written atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1) + "\n"), ".json")
