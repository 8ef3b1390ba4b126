"""An output set is complete or untouched, our files are told from the user's, one writer per folder."""

from __future__ import annotations

import json
import os
import stat

import pytest

from engine.files import (
    COMMIT,
    MANIFEST,
    OutputError,
    OutputSet,
    complete_set,
    read_manifest,
    recover,
    sha256,
)


def _write(folder, files: dict[str, str], **kwargs) -> dict:
    with OutputSet(folder, **kwargs) as out:
        out.check(files)
        for name, text in files.items():
            out.path(name).write_text(text)
            out.path(name).chmod(0o600)  # as a temporary file is made
        return out.commit()


def _state(folder) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_set_is_committed_whole_with_a_manifest_and_the_users_umask(tmp_path, umask_022):
    out = tmp_path / "out"
    written = _write(out, {"seg.nii.gz": "A", "summary.json": "{}"})
    assert sorted(written) == ["seg.nii.gz", "summary.json"]
    assert set(read_manifest(out)) == {"seg.nii.gz", "summary.json"}
    assert complete_set(out) == {name: out / name for name in written}
    for name in ("seg.nii.gz", "summary.json", MANIFEST):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name  # others can read it
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    os.umask(0o077)
    _write(out, {"seg.nii.gz": "B"})
    assert stat.S_IMODE((out / "seg.nii.gz").stat().st_mode) == 0o600  # the umask decides, not we


def test_a_smaller_set_removes_the_older_sets_other_files(tmp_path):
    _write(tmp_path, {"seg.nii.gz": "A", "probability.nii.gz": "A", "summary.json": "A"})
    _write(tmp_path, {"seg.nii.gz": "B", "summary.json": "B"})
    assert _state(tmp_path).keys() == {"seg.nii.gz", "summary.json", MANIFEST}


def test_files_we_did_not_write_are_refused_and_kept(tmp_path):
    (tmp_path / "seg.nii.gz").write_text("a reader's reference segmentation")
    (tmp_path / "notes.txt").write_text("unrelated")
    with pytest.raises(OutputError, match="seg.nii.gz was not written by aimc.*--overwrite"):
        _write(tmp_path, {"seg.nii.gz": "ours", "summary.json": "ours"})
    assert _state(tmp_path) == {"notes.txt": "unrelated", "seg.nii.gz": "a reader's reference segmentation"}
    _write(tmp_path, {"seg.nii.gz": "ours"}, overwrite=True)
    assert (tmp_path / "seg.nii.gz").read_text() == "ours"


def test_our_file_changed_since_is_no_longer_ours(tmp_path):
    _write(tmp_path, {"seg.nii.gz": "A", "summary.json": "A"})
    (tmp_path / "seg.nii.gz").write_text("edited by hand")
    assert complete_set(tmp_path) == {}
    with pytest.raises(OutputError, match="changed since"):
        _write(tmp_path, {"seg.nii.gz": "B"})
    _write(tmp_path, {"summary.json": "B"})  # a set that leaves the edited file alone does not remove it
    assert (tmp_path / "seg.nii.gz").read_text() == "edited by hand"


def test_the_input_scan_is_never_replaced(tmp_path):
    scan = tmp_path / "probability.nii.gz"
    scan.write_text("the scan")
    for overwrite in (False, True):
        with pytest.raises(OutputError, match="input scan"):
            _write(tmp_path, {"probability.nii.gz": "x"}, overwrite=overwrite, protect=[scan])
    assert _state(tmp_path) == {"probability.nii.gz": "the scan"}


def test_a_failure_before_the_commit_leaves_the_old_set_untouched(tmp_path):
    _write(tmp_path, {"seg.nii.gz": "A", "summary.json": "A"})
    before = _state(tmp_path)
    with pytest.raises(OSError, match="No space left"), OutputSet(tmp_path) as out:
        out.path("seg.nii.gz").write_text("B")
        raise OSError(28, "No space left on device")
    assert _state(tmp_path) == before and complete_set(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_failed_first_run_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError), OutputSet(tmp_path / "new") as out:
        out.path("seg.nii.gz").write_text("B")
        raise RuntimeError("the model failed")
    assert not (tmp_path / "new").exists()


def test_a_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path):
    with OutputSet(tmp_path) as first:
        with pytest.raises(OutputError, match="another aimc run is writing"):
            OutputSet(tmp_path).__enter__()
        first.path("seg.nii.gz").write_text("A")
        first.commit()
    _write(tmp_path, {"seg.nii.gz": "B"})  # released: the next run may write


def test_an_interrupted_commit_is_finished_and_strays_removed_by_the_next_writer(tmp_path):
    """A run killed while moving a committed set into place: the next writer finishes it."""
    _write(tmp_path, {"seg.nii.gz": "A", "probability.nii.gz": "A", "summary.json": "A"})
    (tmp_path / "notes.txt").write_text("unrelated")
    with OutputSet(tmp_path) as out:
        for name in ("seg.nii.gz", "summary.json"):
            out.path(name).write_text("B")
        staging = out._staging
        # what commit() does up to and including the commit point, then the process "dies"
        files = {n: {"sha256": sha256(staging / n)} for n in out._staged}
        (staging / MANIFEST).write_text(
            json.dumps({"written_by": "aimc-med", "files": files, "replaces": ["probability.nii.gz"]})
        )
        os.rename(staging, tmp_path / COMMIT)
        os.replace(tmp_path / COMMIT / "seg.nii.gz", tmp_path / "seg.nii.gz")  # one file moved
        out._staging = None
    assert complete_set(tmp_path) == {}  # mixed on disk, but the manifest says it is incomplete
    (tmp_path / ".aimc-staging-dead").mkdir()
    (tmp_path / ".aimc-tmp-dead.nii.gz").write_text("half")
    with OutputSet(tmp_path):
        pass
    assert _state(tmp_path) == {
        "notes.txt": "unrelated",
        "seg.nii.gz": "B",
        "summary.json": "B",
        MANIFEST: (tmp_path / MANIFEST).read_text(),
    }
    assert complete_set(tmp_path) and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    recover(tmp_path)  # idempotent


@pytest.mark.parametrize("name", ["", "..", "a/b", MANIFEST])
def test_names_outside_the_set_are_refused(tmp_path, name):
    with OutputSet(tmp_path) as out, pytest.raises(ValueError):
        out.path(name)
