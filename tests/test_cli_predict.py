"""`aimc predict`'s model gate (issue 13), its output set and `aimc`'s cold start without torch."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from cli.main import main
from engine.files import complete_set
from tests.conftest import REPO
from tests.corpus import carded_model, earlier_set, snapshot, tiny_scan


@pytest.fixture(scope="module")
def card_model(small_model, tmp_path_factory):
    return carded_model(small_model, tmp_path_factory.mktemp("models") / "mr_model")


def _predict(scan, model, out, *extra):
    return main(["predict", str(scan), "--model", str(model), "--mode", "digital", "--out", str(out), *extra])


def test_a_model_that_does_not_fit_is_refused_unless_forced(card_model, tmp_path, capsys):
    """A CT-like volume (negative HU) against a model whose card says MR: exit 2 naming the mismatch;
    with --force it runs and the result says it is outside the training domain."""
    ct = tiny_scan(tmp_path / "ct.nii.gz", (64, 64, 12), -1000, 1000)
    assert _predict(ct, card_model, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "negative" in err and "--force" in err, err
    assert not (tmp_path / "out").exists()

    assert _predict(ct, card_model, tmp_path / "out", "--force") == 0
    captured = capsys.readouterr()
    assert "OUTSIDE its training domain" in captured.err
    assert "OUTSIDE THE MODEL'S TRAINING DOMAIN" in captured.out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["gate"]["outside_training_domain"] and not summary["gate"]["fits"]
    assert any("negative" in reason for reason in summary["gate"]["reasons"])


def test_a_run_replaces_its_own_set_whole_and_keeps_the_users_files(card_model, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        earlier_set(out)
        mine = (out / "reference_by_dr_x.nii.gz").read_bytes()
        scan = tiny_scan(tmp_path / "scan.nii.gz")
        before = snapshot(tmp_path)
        assert _predict(scan, card_model, out) == 0
    finally:
        os.umask(old)
    assert snapshot(tmp_path)["scan.nii.gz"] == before["scan.nii.gz"]  # the input untouched
    assert (out / "reference_by_dr_x.nii.gz").read_bytes() == mine
    files = complete_set(out)
    assert sorted(files) == ["probability.nii.gz", "seg.nii.gz", "summary.json", "uncertainty.nii.gz"]
    for path in files.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path  # readable by others
    summary = json.loads(files["summary.json"].read_text())
    assert summary["gate"]["fits"] and summary["verdict"] == {
        "available": False,
        "reason": "no trust calibration for this model",
    }
    assert isinstance(summary["lesions"], list)
    printed = capsys.readouterr()
    assert "verdict: no trust calibration" in printed.out and "model small_unet (as asked)" in printed.err


def test_without_a_model_the_gate_chooses_as_the_viewer_does(lgg_case):
    from cli.predict import choose, gate_line
    from engine.volume import load_scan

    spec, fit = choose(load_scan(lgg_case[0]), None, force=False)
    assert spec.name.startswith("lgg_unet") and fit.fits
    assert gate_line(fit, asked=False).startswith(f"aimc: model {spec.name} (chosen by the model gate): ")


@pytest.mark.parametrize(
    "args",
    [["--help"], ["models"], ["models", "--detail", "lgg_unet_hwa"]],
    ids=["help", "models", "detail"],
)
def test_listing_commands_import_no_torch_aihwkit_or_monai(args):
    code = (
        "import sys\nfrom cli.main import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', *[m for m in ('torch', 'aihwkit', 'monai') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        encoding="utf-8",  # model cards print dashes and ranges; CI's locale may be ASCII
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY", done.stdout[-300:]


def test_models_lists_cards_and_broken_folders(small_model, tmp_path, capsys, monkeypatch):
    import shutil

    import engine.model_store as store

    carded_model(small_model, tmp_path / "good")
    shutil.copytree(small_model.folder, tmp_path / "broken")
    (tmp_path / "broken" / "model.json").write_text("{not json")
    monkeypatch.setattr(store, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(store.scan_models, "__defaults__", (tmp_path,))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "MR FLAIR BRAIN (3D); trained on 4 scans" in out
    assert "broken" in out and "BROKEN: " in out and "invalid model description" in out


def test_detail_shows_the_card_and_labels_and_layers_on_request(capsys):
    assert main(["models", "--detail", "lgg_unet_hwa"]) == 0
    out = capsys.readouterr().out
    assert "labels: 0 background, 1 FLAIR abnormality" in out and "card: brain MRI" in out
    assert "analog tiles" not in out.split("layers on analog tiles")[0]
    assert main(["models", "--detail", "lgg_unet_hwa", "--layers"]) == 0
    assert "BatchNorm2d" in capsys.readouterr().out
