"""Batch prediction: which cases the inputs name and what each is called, the per-case runner (resume,
overwrite, a bad case among good ones), the table, and `aimc predict` over many scans, in this process.
The Dask runs are in tests/test_batch_cluster.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.batch import BatchCase, discover, is_single_scan, safe_name
from engine.batch_run import DONE, FAILED, SKIPPED, CaseJob, row_of, run_case, table_csv, write_table
from engine.run_settings import RunSettings
from engine.volume import ScanError
from tests.test_engine_volume import _write_dicom_series

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _scan(path: Path, slices: int = 3, value: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(value))
    nib.save(nib.Nifti1Image((rng.random((24, 24, slices)) * 100 * value).astype(np.float32), AFFINE), path)
    return path


def _dicom_series(folder: Path, uid: str, slices: int = 3) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    array = np.arange(slices * 8 * 8).reshape(slices, 8, 8)
    _write_dicom_series(
        folder,
        array,
        (1.0, 1.0, 2.0),
        (0.0, 0.0, 0.0),
        (1, 0, 0, 0, 1, 0, 0, 0, 1),
        series_uid=uid,
        name=uid[-3:],
    )


def _names(cases: list[BatchCase]) -> list[str]:
    return [c.name for c in cases]


def test_paths_globs_and_folders_each_scan_once_in_input_order(tmp_path):
    a, b = _scan(tmp_path / "in" / "a.nii.gz"), _scan(tmp_path / "in" / "b.nii")
    c = _scan(tmp_path / "in" / "deeper" / "c.nii.gz")
    (tmp_path / "in" / "notes.md").write_text("not a scan")
    assert _names(discover([str(b), str(a)])) == ["b", "a"]
    assert _names(discover([str(tmp_path / "in" / "*.nii*")])) == ["a", "b"]
    assert _names(discover([str(tmp_path / "in" / "**" / "*.nii.gz")])) == ["a", "c"]
    found = discover([str(tmp_path / "in"), str(a)])  # a folder, recursively; `a` named again is one case
    assert _names(found) == ["a", "b", "c"] and found[2].source == str(c)


def test_msd_dataset_and_lists_are_read_relative_to_their_folder(tmp_path):
    root = tmp_path / "msd"
    for name in ("x", "y"):
        _scan(root / "imagesTr" / f"{name}.nii.gz")
    _scan(root / "labelsTr" / "x.nii.gz")  # labels are not cases
    _scan(root / "imagesTs" / "z.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "training": [
                    {"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in "xy"
                ],
                "test": ["./imagesTs/z.nii.gz"],
            }
        )
    )
    assert _names(discover([str(root / "dataset.json")])) == ["x", "y", "z"]
    assert _names(discover([str(root)])) == ["x", "y", "z"]
    (root / "list.txt").write_text("# scans\nimagesTr/y.nii.gz\n\nimagesTs/z.nii.gz\n")
    assert _names(discover([str(root / "list.txt")])) == ["y", "z"]
    (root / "table.csv").write_text("id,image\n1,imagesTr/x.nii.gz\n2,imagesTs/z.nii.gz\n")
    assert _names(discover([str(root / "table.csv")])) == ["x", "z"]


def test_case_names_are_safe_and_unique(tmp_path):
    one = _scan(tmp_path / "site1" / "scan.nii.gz")
    two = _scan(tmp_path / "site2" / "scan.nii.gz")
    upper = _scan(tmp_path / "site2" / "x" / "SCAN.nii.gz")
    odd = _scan(tmp_path / "weird name; rm -rf.nii.gz")
    names = _names(discover([str(one), str(two), str(upper), str(odd)]))
    assert names == ["site1_scan", "site2_scan", "x_SCAN", "weird_name_rm_-rf"]
    again = _scan(tmp_path / "a" / "site1" / "scan.nii.gz")  # the same parent name twice: numbered
    assert _names(discover([str(one), str(again)])) == ["site1_scan", "site1_scan_2"]
    assert safe_name("..") == "case" and safe_name(".hidden") == "hidden"


def test_dicom_series_are_cases_whether_in_their_own_folders_or_together(tmp_path):
    _dicom_series(tmp_path / "study" / "s1", "1.2.3.101")
    _dicom_series(tmp_path / "study" / "s2", "1.2.3.102")
    _dicom_series(tmp_path / "mixed", "1.2.3.201")
    _dicom_series(tmp_path / "mixed", "1.2.3.202", slices=4)
    assert _names(discover([str(tmp_path / "study")])) == ["s1", "s2"]
    mixed = discover([str(tmp_path / "mixed")])
    assert _names(mixed) == ["mixed_series1", "mixed_series2"]
    assert [c.load().shape[2] for c in mixed] == [3, 4]  # each read from its own files
    assert mixed[0].load().source == str(tmp_path / "mixed")
    assert [c.series_uid for c in mixed] == ["1.2.3.201", "1.2.3.202"]  # which series, in the table
    assert [c.series_uid for c in discover([str(tmp_path / "study")])] == ["1.2.3.101", "1.2.3.102"]


def test_one_scan_is_not_a_batch_but_anything_that_names_several_is(tmp_path):
    scan = _scan(tmp_path / "one.nii.gz")
    _dicom_series(tmp_path / "series", "1.2.3.301")
    assert is_single_scan([str(scan)]) and is_single_scan([str(tmp_path / "series")])
    assert is_single_scan([str(tmp_path / "missing.nii.gz")])  # load_scan says what is wrong
    assert not is_single_scan([str(scan), str(scan)])
    assert not is_single_scan([str(tmp_path / "*.nii.gz")])
    assert not is_single_scan([str(tmp_path)])
    (tmp_path / "list.txt").write_text("one.nii.gz\n")
    assert not is_single_scan([str(tmp_path / "list.txt")])


def test_inputs_that_name_nothing_are_one_clear_error(tmp_path):
    with pytest.raises(ScanError, match="no such file"):
        discover([str(tmp_path / "absent.nii.gz")])
    with pytest.raises(ScanError, match="matches"):
        discover([str(tmp_path / "*.nii.gz")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanError, match="no scans"):
        discover([str(tmp_path / "empty")])
    (tmp_path / "dataset.json").write_text("[1, 2]")
    with pytest.raises(ScanError, match="MSD"):
        discover([str(tmp_path / "dataset.json")])


def test_the_output_folder_under_an_input_folder_is_not_searched(tmp_path):
    _scan(tmp_path / "a.nii.gz")
    _scan(tmp_path / "out" / "a" / "seg.nii.gz")
    assert _names(discover([str(tmp_path)], exclude=tmp_path / "out")) == ["a"]
    assert _names(discover([str(tmp_path / "**" / "*.nii.gz")], exclude=tmp_path / "out")) == ["a"]


def _job(small_model, scan: Path, out: Path, overwrite: bool = False) -> CaseJob:
    run = RunSettings(model=small_model.name, mode="analog", mc_samples=2, seed=3)
    case = discover([str(scan)])[0]
    return CaseJob(case, str(out / case.name), str(small_model.folder), run, overwrite=overwrite)


def test_a_case_is_run_then_skipped_when_complete_and_redone_with_overwrite(small_model, tmp_path):
    job = _job(small_model, _scan(tmp_path / "p1.nii.gz"), tmp_path / "out")
    seen: list[dict] = []
    first = run_case(job, seen.append)
    assert first["status"] == DONE and first["slices"] == 3, first
    assert [m["done"] for m in seen] == [1, 2, 3] and {m["case"] for m in seen} == {"p1"}
    assert set(first["volume_ml"]) == {"lesion"} and first["mean_uncertainty"] is not None
    assert first["verdict"].startswith("no trust calibration") and first["error"] == ""
    summary = Path(job.out_dir) / "summary.json"
    written = summary.stat().st_mtime_ns
    second = run_case(job)
    assert second["status"] == SKIPPED and second["volume_ml"] == first["volume_ml"]
    assert summary.stat().st_mtime_ns == written
    other_seed = CaseJob(
        job.case, job.out_dir, job.model, RunSettings(model=small_model.name, seed=4, mc_samples=2)
    )
    assert run_case(other_seed)["status"] == DONE  # other settings: not the same outputs
    assert (
        run_case(_job(small_model, Path(job.case.source), tmp_path / "out", overwrite=True))["status"] == DONE
    )


def test_a_case_is_complete_only_by_its_manifest(small_model, tmp_path):
    job = _job(small_model, _scan(tmp_path / "p1.nii.gz"), tmp_path / "out")
    run_case(job)
    (Path(job.out_dir) / "summary.json").unlink()  # a set missing a file it lists is incomplete
    assert run_case(job)["status"] == DONE
    (Path(job.out_dir) / "seg.nii.gz").unlink()
    assert run_case(job)["status"] == DONE
    (Path(job.out_dir) / "aimc-manifest.json").unlink()  # every file there, but nothing vouches for them
    row = run_case(job)  # not ours any more: left alone, unless --overwrite
    assert row["status"] == FAILED and "not written by aimc" in row["error"], row
    assert (
        run_case(_job(small_model, Path(job.case.source), tmp_path / "out", overwrite=True))["status"] == DONE
    )
    with (Path(job.out_dir) / "uncertainty.nii.gz").open("ab") as f:
        f.write(b"edited")  # a map changed since: its hash no longer matches the manifest's
    assert run_case(job)["status"] == FAILED


def test_a_failed_rerun_leaves_the_earlier_complete_case_as_it_was(small_model, tmp_path):
    scan = _scan(tmp_path / "p1.nii.gz")
    job = _job(small_model, scan, tmp_path / "out")
    assert run_case(job)["status"] == DONE
    before = {p.name: p.read_bytes() for p in Path(job.out_dir).iterdir()}
    scan.write_bytes(b"")  # the scan went bad since; other settings make the case run again
    other = CaseJob(
        job.case, job.out_dir, job.model, RunSettings(model=small_model.name, seed=4, mc_samples=2)
    )
    assert run_case(other)["status"] == FAILED
    assert {p.name: p.read_bytes() for p in Path(job.out_dir).iterdir()} == before


def test_a_bad_case_is_a_failed_row_and_leaves_no_complete_folder(small_model, tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    job = _job(small_model, bad, tmp_path / "out")
    row = run_case(job)
    assert row["status"] == FAILED and "broken.nii.gz" in row["error"] and "\n" not in row["error"]
    assert not (Path(job.out_dir) / "summary.json").exists()


def test_the_table_has_one_row_per_case_and_a_column_per_label(tmp_path):
    run = RunSettings(model="m")
    a, b = (CaseJob(BatchCase(n, f"{n}.nii.gz"), f"out/{n}", "m", run) for n in "ab")
    summary = {
        "model": "m",
        "slices": 3,
        "labels": {"tumour": {"value": 1, "volume_ml": 1.5}, "oedema": {"value": 2, "volume_ml": 2.0}},
        "mean_uncertainty_in_segmentation": 0.1,
        "verdict": {"available": True, "message": "expected Dice 0.80 (0.70-0.90)", "review": False},
        "gate": {"fits": True},
    }
    rows = [row_of(a, DONE, 1.0, summary), row_of(b, FAILED, 0.2, error="b.nii.gz: the file is empty")]
    table = list(csv.DictReader(table_csv(rows).splitlines()))
    assert [r["case"] for r in table] == ["a", "b"] and table[0]["verdict"].startswith("expected Dice 0.80")
    assert table[0]["volume_ml_tumour"] == "1.5" and table[0]["volume_ml_oedema"] == "2.0"
    assert table[0]["review"] == "False" and table[0]["fits_model"] == "True"
    assert table[1]["volume_ml_tumour"] == "" and table[1]["error"] == "b.nii.gz: the file is empty"
    csv_path, json_path = write_table(rows, tmp_path)
    assert json.loads(json_path.read_text()) == rows and csv_path.read_text() == table_csv(rows)


def test_predict_over_many_scans_writes_a_folder_per_case_and_exits_with_the_failures(small_model, tmp_path):
    from cli.main import main

    scans = tmp_path / "scans"
    for name in ("p1", "p2"):
        _scan(scans / f"{name}.nii.gz", value=len(name))
    (scans / "p3.nii.gz").write_bytes(b"")  # a bad case among good ones
    out = tmp_path / "out"
    argv = ["predict", str(scans), "--model", str(small_model.folder), "--mode", "digital", "--out", str(out)]
    assert main([*argv, "--workers", "0", "--quiet"]) == 1  # one case failed
    rows = {r["case"]: r for r in csv.DictReader((out / "cases.csv").open())}
    assert {k: r["status"] for k, r in rows.items()} == {"p1": DONE, "p2": DONE, "p3": FAILED}
    assert "empty" in rows["p3"]["error"]
    for name in ("p1", "p2"):
        assert {p.name for p in (out / name).iterdir()} == {
            "seg.nii.gz",
            "uncertainty.nii.gz",
            "probability.nii.gz",
            "summary.json",
            "aimc-manifest.json",  # each case is one atomic output set
        }
    _scan(scans / "p3.nii.gz")  # mended: the resumed batch runs only it
    assert main([*argv, "--workers", "0", "--quiet"]) == 0
    statuses = {r["case"]: r["status"] for r in json.loads((out / "cases.json").read_text())}
    assert statuses == {"p1": SKIPPED, "p2": SKIPPED, "p3": DONE}


def test_predict_batch_with_nothing_to_read_is_one_line_and_exit_2(small_model, tmp_path, capsys):
    from cli.main import main

    code = main(
        ["predict", str(tmp_path / "*.nii.gz"), "--model", str(small_model.folder), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no file or folder matches" in err


def test_bench_batch_rows_time_each_variant_on_fresh_folders(small_model, tmp_path):
    from cli.bench_batch import BATCH_SCANS, batch_scans, bench_batch

    default, source = batch_scans()  # the shared LGG scans, else the bundled sample, 10 times
    assert len(default) == BATCH_SCANS and all(p.is_file() for p in default) and str(BATCH_SCANS) in source

    scans = [_scan(tmp_path / f"s{k}.nii.gz", value=k + 1) for k in range(2)]
    lines: list[str] = []
    variants = {"serial": 0, "serial again": 0}  # the Dask variants' mechanics: tests/test_batch_cluster.py
    rows = bench_batch(small_model, ("digital", "analog"), scans, lines.append, variants, rounds=2)
    assert [(r["mode"], r["variant"]) for r in rows] == [
        (m, v) for m in ("digital", "analog") for v in variants
    ]
    for r in rows:  # nothing skipped: each variant ran every case
        assert r["scans"] == 2 and r["failed"] == 0 and r["slices"] == 6 and r["scans_per_min"] > 0, r
        assert len(r["batch_s_each_round"]) == 2 and r["start_s"] > 0  # the serial loop's fresh imports
    assert rows[2]["mc"] == 4 and len(lines) == 2 and "serial again" in lines[1]


@pytest.mark.slow  # two 20-slice LGG volumes, digital
def test_the_model_gate_chooses_or_refuses_per_case_as_for_one_scan(tmp_path, monkeypatch):
    import engine.executor
    from engine.model_store import find_model
    from tests.conftest import SAMPLES

    installed = tuple(find_model(n) for n in ("lgg_unet_digital", "hippocampus_unet_digital"))
    monkeypatch.setattr(engine.executor, "installed_models", lambda: installed)  # the fast digital ones

    sample, other = SAMPLES / "lgg_sample.nii.gz", _scan(tmp_path / "tiny.nii.gz")  # a 24x24x3 random scan
    run = RunSettings(model="chosen per case", mode="digital")
    lgg, tiny = discover([str(sample), str(other)])

    def row(case: BatchCase, model: str | None, force: bool = False) -> dict:
        return run_case(
            CaseJob(case, str(tmp_path / f"{model}-{force}" / case.name), model, run, force=force)
        )

    chosen = row(lgg, None)
    assert chosen["status"] == DONE and chosen["model"] == "lgg_unet_digital" and chosen["fits_model"] is True
    assert row(tiny, None)["error"].startswith("no installed model fits this scan")
    refused = row(lgg, "hippocampus_unet_digital")
    assert refused["status"] == FAILED and "does not fit this scan" in refused["error"]
    assert not (tmp_path / "hippocampus_unet_digital-False").exists()  # refused before any work
    forced = row(lgg, "hippocampus_unet_digital", force=True)
    assert forced["status"] == DONE and forced["fits_model"] is False


def test_the_progress_bars_count_cases_and_slices_once_each():
    from cli.batch import _Bars

    bars = _Bars(2, disable=False)
    for done in (1, 2, 3):
        bars.progress({"case": "a", "done": done, "total": 3})
    counts = []
    for done in (1, 2, 1, 2, 3, 4):  # case b's worker died after 2 slices: redone from the first
        bars.progress({"case": "b", "done": done, "total": 4})
        counts.append(bars.slices.n)
    assert counts == [4, 5, 5, 5, 6, 7]  # never backwards, each slice once
    bars.cases.update(2)
    assert (bars.slices.n, bars.slices.total, bars.cases.n) == (7, 7, 2)
    bars.close()
