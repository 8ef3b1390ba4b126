"""Scans opened lately, newest first, kept in the user's settings across sessions.

The store is anything with `value(key, default)` and `setValue(key, value)` (the window passes its
`QSettings`; tests pass a dict-backed object), so the list logic needs no Qt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

MAX_RECENT = 8


class SettingsStore(Protocol):
    def value(self, key: str, default: object = None, /) -> object: ...

    def setValue(self, key: str, value: object, /) -> None: ...  # noqa: N802 (QSettings' name)


class RecentFiles:
    """The `MAX_RECENT` newest scans as absolute paths; opening one again moves it to the top."""

    KEY = "recent"

    def __init__(self, store: SettingsStore) -> None:
        self.store = store

    def paths(self) -> list[str]:
        value = self.store.value(self.KEY, [])
        if isinstance(value, str):  # QSettings returns a bare string for one-element lists
            return [value]
        return [str(v) for v in value] if isinstance(value, list) else []

    def add(self, path: str | Path) -> None:
        path = str(Path(path).resolve())
        self.store.setValue(self.KEY, ([path] + [p for p in self.paths() if p != path])[:MAX_RECENT])

    def last_folder(self) -> str:
        """Where a file dialog starts: the folder of the newest scan, else the home folder."""
        recent = self.paths()
        return str(Path(recent[0]).parent) if recent else str(Path.home())
