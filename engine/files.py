"""Writing files so that a reader never sees half of them: one file, or a whole set of files.

One file (`atomic_write`): into a temporary file in the target's folder, then one rename. A failed
write leaves no stray temporary behind.

A set of files (`OutputSet`: a segmentation, its maps, its summary) must be complete or untouched, in
a folder that is the user's: it may hold a reference segmentation, notes, or the scan itself, so the
folder cannot be swapped for a new one. The set is therefore committed like a journal:
1. every file is written into a staging folder inside the output folder (same filesystem), then
   hashed into a manifest (`aimc-manifest.json`: each file's sha256) written there last;
2. renaming the staging folder to `.aimc-commit` is the commit point: before it the old set is
   untouched; after it the new set wins;
3. the staged files are renamed into place, the old set's files the new one does not rewrite are
   removed, and the manifest is renamed last.
A crash during step 3 (it takes microseconds; SIGINT and SIGTERM are held off during it) leaves the
commit folder behind: the next writer of the folder finishes it (`recover`) before anything else, and
until then a reader sees files that do not match the manifest: an incomplete set, never a silent mix.
A crash before step 2 leaves only a staging folder, which the next writer removes.

The manifest is also how we recognise our own files: a file of the set's names that the manifest does
not list with its hash (a manual reference `seg.nii.gz`, a file a user edited) is never replaced
unless the caller says `overwrite`; the files in `protect` (the input scan) never are.

One writer at a time: the output folder is locked (`flock` on the folder itself, no lock file left
behind) for as long as the set is open, and a second writer is refused at once rather than made to
wait, because two runs writing one folder is a mistake to report (two patients' results in one
folder), not a queue.

Every file gets the mode the user's umask gives a new file (typically 0644), not the 0600 of a
temporary file, so other users and import services can read what we export.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType

TMP_PREFIX = ".aimc-tmp-"
STAGING_PREFIX = ".aimc-staging-"
COMMIT = ".aimc-commit"
MANIFEST = "aimc-manifest.json"
WRITER = "aimc-med"


class OutputError(OSError):
    """An output set that cannot or must not be written; the message is for the user."""


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
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=out.parent)
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


def sha256(path: Path) -> str:
    """The file's sha256, its data flushed to disk first (the manifest vouches for what is stored)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, str]:
    """The files of the set in `folder` by name with their sha256 (empty if there is no valid manifest)."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
        files = data["files"] if data.get("written_by") == WRITER else {}
        return {str(name): str(entry["sha256"]) for name, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def complete_set(folder: str | os.PathLike) -> dict[str, Path]:
    """The set in `folder` by name if it is complete (every file present with its manifest's hash), else {}.

    Batch runs skip a case whose set is complete; a folder mid-commit or hand-edited is not."""
    folder = Path(folder)
    files = read_manifest(folder)
    if not files or (folder / COMMIT).exists():
        return {}
    try:
        if all(sha256(folder / name) == digest for name, digest in files.items()):
            return {name: folder / name for name in files}
    except OSError:
        pass
    return {}


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _apply_commit(folder: Path) -> None:
    """Step 3: move a committed set into place (idempotent, so an interrupted one can be finished)."""
    commit = folder / COMMIT
    try:
        data = json.loads((commit / MANIFEST).read_text())
    except (OSError, ValueError):  # the manifest was already moved: only the empty folder is left
        shutil.rmtree(commit, ignore_errors=True)
        return
    for name in data["files"]:
        if (commit / name).exists():
            os.replace(commit / name, folder / name)
    for name in data.get("replaces", []):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(folder / name)
    os.replace(commit / MANIFEST, folder / MANIFEST)
    shutil.rmtree(commit, ignore_errors=True)
    _fsync_dir(folder)


def recover(folder: Path) -> None:
    """Finish a set committed by a run that died, and remove the temporaries of runs that died earlier.
    Only call it holding the folder's lock."""
    if (folder / COMMIT).is_dir():
        _apply_commit(folder)
    for stray in folder.iterdir():
        if stray.name.startswith(STAGING_PREFIX) and stray.is_dir() and not stray.is_symlink():
            shutil.rmtree(stray, ignore_errors=True)
        elif stray.name.startswith(TMP_PREFIX) and stray.is_file():
            stray.unlink(missing_ok=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM off while a commit moves files into place, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda s, _f: held.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for number in held:
            signal.raise_signal(number)


class OutputSet:
    """A set of files written into `folder` as a whole (see the module's docstring).

    with OutputSet(folder, protect=[scan]) as out:
        out.check([SEGMENTATION, SUMMARY])       # refuse early, before the work is done
        write_something(out.path(SEGMENTATION))  # every file into the staging folder
        out.commit()                             # all of them, or none
    """

    def __init__(
        self, folder: str | os.PathLike, *, overwrite: bool = False, protect: Iterable[str | os.PathLike] = ()
    ) -> None:
        self.folder = Path(folder)
        self.overwrite = overwrite
        self.protect = [Path(p) for p in protect if str(p)]
        self._fd: int | None = None
        self._created = False  # the folder is ours to remove again if nothing was committed into it
        self._staging: Path | None = None
        self._staged: list[str] = []

    def __enter__(self) -> OutputSet:
        folder = self.folder
        try:
            self._created = not os.path.lexists(folder)
            if not self._created and not folder.is_dir():
                raise OutputError(f"{folder}: not a folder; choose a folder for the outputs")
            folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OutputError:
            raise
        except OSError as exc:
            raise OutputError(f"{folder}: could not write into this folder ({exc.strerror or exc})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._release()
            raise OutputError(
                f"{folder}: another aimc run is writing into this folder; wait for it or choose another"
            ) from None
        try:
            recover(folder)
        except OSError as exc:
            self._release()
            raise OutputError(f"{folder}: could not write into this folder ({exc.strerror or exc})") from None
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
        if self._created and exc is not None:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only if empty: a failed first run leaves no folder behind
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def check(self, names: Iterable[str]) -> None:
        """Refuse, before anything is written, to replace a protected file or a file that is not ours, or
        to write into a folder that refuses files (read-only): the staging folder is made here."""
        ours = read_manifest(self.folder)
        foreign = []
        for name in [*names, MANIFEST]:
            target = self.folder / name
            if not os.path.lexists(target):
                continue
            if target.exists() and any(p.exists() and os.path.samefile(target, p) for p in self.protect):
                raise OutputError(f"{target}: refusing to overwrite the input scan; choose another folder")
            if target.is_dir():
                raise OutputError(
                    f"{target}: a folder is in the way of an output file; choose another folder"
                )
            if self.overwrite:
                continue
            if name == MANIFEST:
                if not _is_our_manifest(target):
                    foreign.append(name)
                continue
            if name not in ours or not target.is_file() or sha256(target) != ours[name]:
                foreign.append(name)
        if foreign:
            were = "was" if len(foreign) == 1 else "were"
            raise OutputError(
                f"{self.folder}: {', '.join(foreign)} {were} not written by aimc (or changed since); "
                "refusing to replace them: choose another folder or pass --overwrite"
            )
        self._stage()

    def _stage(self) -> Path:
        """The staging folder, made on first use; a folder that refuses it is one line for the user."""
        if self._staging is None:
            if self._fd is None:
                raise RuntimeError("an OutputSet is written inside `with`")
            try:
                self._staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.folder))
            except OSError as exc:
                raise OutputError(
                    f"{self.folder}: could not write into this folder ({exc.strerror or exc})"
                ) from None
        return self._staging

    def _left_over(self, names: set[str]) -> list[str]:
        """The old set's files, unchanged since we wrote them, that the new set does not rewrite: removed
        with the commit, so that no file of an older run stays beside the new ones."""
        return sorted(
            name
            for name, digest in read_manifest(self.folder).items()
            if name not in names and (self.folder / name).is_file() and sha256(self.folder / name) == digest
        )

    def path(self, name: str) -> Path:
        """Where to write the file `name` of the set (in the staging folder)."""
        if Path(name).name != name or name in ("", ".", "..", MANIFEST):
            raise ValueError(f"{name!r} is not a file name of an output set")
        staging = self._stage()
        if name not in self._staged:
            self._staged.append(name)
        return staging / name

    def commit(self) -> dict[str, Path]:
        """Put every file written through `path` into place as one set; return their final paths."""
        if self._staging is None:
            raise RuntimeError("nothing was written into the output set")
        self.check(self._staged)
        staging, mode = self._staging, _umask_mode()
        files = {}
        for name in self._staged:
            if not (staging / name).is_file():
                raise OutputError(f"{self.folder / name}: was not written")
            os.chmod(staging / name, mode)
            files[name] = {"sha256": sha256(staging / name), "bytes": (staging / name).stat().st_size}
        manifest = {
            "written_by": WRITER,
            "files": files,
            "replaces": self._left_over(set(files)),
        }
        atomic_write_json(manifest, staging / MANIFEST)
        _fsync_dir(staging)
        with _signals_held():
            os.rename(staging, self.folder / COMMIT)  # the commit point
            self._staging, self._created = None, False
            _apply_commit(self.folder)
        return {name: self.folder / name for name in files}


def _is_our_manifest(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("written_by") == WRITER
    except (OSError, ValueError, AttributeError):
        return False
