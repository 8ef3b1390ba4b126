"""`aimc predict` against the adversarial corpus of issue 18 (`tests/corpus.py`, generated at test time).

Every case ends with exit status 2 and exactly one line on stderr, no traceback; the input and the
output folder (an earlier complete set, a file of the user's) are left exactly as they were. The
default suite runs the cases in this process; `make fuzz` runs each in its own process, its address
space limited (an allocation past the limit fails the case instead of filling the machine) and its
resident peak measured, and checks that cases refused before the network is built never import torch.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from cli.main import main
from tests.conftest import REPO
from tests.corpus import CASES, Case, carded_model, snapshot

HEAVY = ("torch", "aihwkit", "monai")
# Peak resident memory of one refused run: Python with nibabel, SciPy and SimpleITK (torch: more).
LIGHT_MB, TORCH_MB = 400, 1500
# The address space a run refused before torch loads may take at all (it maps about 500 MB here; thread
# stacks and allocator arenas grow with the cores): an allocation past it fails at once as a MemoryError
# (a traceback, so the case fails) instead of filling the machine. The resident peak is checked as well.
LIGHT_ADDRESS_SPACE = 4 << 30


@pytest.fixture(scope="module")
def card_model(small_model, tmp_path_factory) -> Path:
    return carded_model(small_model, tmp_path_factory.mktemp("models") / "mr_model")


def _check_untouched(tmp_path: Path, before: dict[str, bytes]) -> None:
    after = snapshot(tmp_path)
    assert after.keys() == before.keys(), sorted(set(after) ^ set(before))
    assert all(after[name] == before[name] for name in before), "a file was changed"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_in_one_line_leaving_everything_as_it_was(case: Case, card_model, tmp_path, capsys):
    args = case.build(tmp_path, card_model)
    before = snapshot(tmp_path)
    try:
        code = main(args)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("aimc") and case.words in err.lower(), err
    _check_untouched(tmp_path, before)


# Runs `aimc` and, at its exit, records the heavy modules it imported and its peak memory: VmHWM is the
# process's own high-water mark (getrusage's ru_maxrss would carry over the parent's from before exec).
_RUN = (
    "import atexit, os, re, sys\n"
    "def record():\n"
    "    peak = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
    f"    heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
    "    open(os.environ['AIMC_RECORD'], 'w').write(' '.join([peak, *heavy]))\n"
    "atexit.register(record)\n"
    "from cli.main import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _limit_address_space(size: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (size, size))


def run_aimc(
    args: list[str], tmp_path: Path, address_space: int | None = None
) -> tuple[int, str, float, list[str]]:
    """`aimc` in a fresh process, its address space limited to `address_space` bytes if given: exit
    status, stderr, peak resident memory (MB) and the heavy modules it imported."""
    record = tmp_path.parent / f"{tmp_path.name}.record"
    env = {**os.environ, "PYTHONPATH": str(REPO), "AIMC_RECORD": str(record)}
    done = subprocess.run(
        [sys.executable, "-c", _RUN, *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        preexec_fn=None if address_space is None else lambda: _limit_address_space(address_space),
    )
    assert record.exists(), done.stderr.decode("utf-8", "replace")[-2000:]
    peak, *loaded = record.read_text().split()
    return done.returncode, done.stderr.decode("utf-8", "replace"), int(peak) / 1024, loaded


@pytest.mark.parametrize(
    "name", ["seed 2**62", "absurd NIfTI-1 size", "a model that does not fit the scan", "--out ''"]
)
def test_refused_before_torch_loads(name, card_model, tmp_path):
    """Checks of arguments, scans, output folders and the model gate come before torch (and its second)."""
    case = next(c for c in CASES if c.name == name)
    args = case.build(tmp_path, card_model)
    code, err, peak, loaded = run_aimc(args, tmp_path, LIGHT_ADDRESS_SPACE)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert loaded == [], loaded
    assert peak < LIGHT_MB, f"{peak:.0f} MB"


@pytest.mark.fuzz
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_refused_in_its_own_process_with_bounded_memory(case: Case, card_model, tmp_path):
    args = case.build(tmp_path, card_model)
    before = snapshot(tmp_path)
    code, err, peak, loaded = run_aimc(args, tmp_path, None if case.loads_torch else LIGHT_ADDRESS_SPACE)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert case.words in err.lower(), err
    assert peak < (TORCH_MB if case.loads_torch else LIGHT_MB), f"{peak:.0f} MB"
    assert case.loads_torch or loaded == [], loaded
    _check_untouched(tmp_path, before)


@pytest.mark.fuzz
def test_a_real_decompression_bomb_is_refused_with_bounded_memory(card_model, tmp_path):
    """1024^3 voxels of zeros, all of them there: about a megabyte on disk, a gibibyte when read."""
    from tests.corpus import bomb

    scan = bomb(tmp_path / "bomb.nii.gz", 1024, 1 << 30)
    assert scan.stat().st_size < 8 << 20
    args = ["predict", str(scan), "--out", str(tmp_path / "out")]
    code, err, peak, loaded = run_aimc(args, tmp_path, LIGHT_ADDRESS_SPACE)
    assert code == 2 and "declares" in err and len(err.strip().splitlines()) == 1, err
    assert peak < LIGHT_MB and loaded == []
    assert not (tmp_path / "out").exists()
