"""The executor in this process (the same contract as on Dask: results, progress, a unit's failure)
and the per-process caches of models and chips. The Dask cluster runs are in tests/test_batch_cluster.py."""

from __future__ import annotations

import pytest

from engine.executor import Executor, local_chips, local_model


def _square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


def _counted(x: int, progress) -> int:
    for k in range(x):
        progress({"unit": x, "done": k + 1})
    return x


def test_units_run_in_this_process_in_order_with_their_progress():
    with Executor(0) as executor:
        assert executor.in_process and executor.size == 1 and executor.pids() == {}
        assert list(executor.map(_square, [3, 1, 2])) == [(3, 9), (1, 1), (2, 4)]
        seen: list[dict] = []
        assert [r for _, r in executor.map(_counted, [2, 1], seen.append)] == [2, 1]
        assert seen == [{"unit": 2, "done": 1}, {"unit": 2, "done": 2}, {"unit": 1, "done": 1}]


def test_a_failing_unit_ends_the_map_unless_its_exception_is_asked_for():
    executor = Executor(0)
    with pytest.raises(ValueError, match="negative"):
        list(executor.map(_square, [1, -1, 2]))
    results = dict(executor.map(_square, [1, -1, 2], return_exceptions=True))
    assert results[1] == 1 and results[2] == 4 and isinstance(results[-1], ValueError)


def test_bad_executor_settings_are_one_clear_error():
    with pytest.raises(ValueError, match="workers"):
        Executor(-1)
    with pytest.raises(ValueError, match="no Dask scheduler reachable at tcp://127.0.0.1:9"):
        Executor(scheduler="tcp://127.0.0.1:9", timeout_s=1).start()


def test_models_and_chips_are_kept_per_process(small_model):
    from engine.run_settings import RunSettings

    assert local_model(str(small_model.folder)) is local_model(str(small_model.folder))
    run = RunSettings(model=small_model.name, mode="analog", mc_samples=2, seed=11)
    first = local_chips().segmenter(small_model, run)
    first.program_all()
    again = local_chips().segmenter(small_model, run)
    assert local_chips() is local_chips() and again.chip_set is first.chip_set and len(again.chips) == 2


def test_evaluation_units_give_each_run_its_cases_in_order_and_skip_unreadable_ones(
    small_model, tmp_path, capsys
):
    import nibabel as nib
    import numpy as np

    from engine.run_settings import RunSettings
    from training.data import Case
    from training.evaluate import evaluate_runs

    cases = []
    for k in range(2):
        image, label = tmp_path / f"i{k}.nii.gz", tmp_path / f"l{k}.nii.gz"
        data = np.random.default_rng(k).random((20, 20, 2)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), image)
        nib.save(nib.Nifti1Image((data > 0.5).astype(np.uint8), np.eye(4)), label)
        cases.append(Case(f"c{k}", image, label, f"p{k}"))
    cases.insert(1, Case("broken", tmp_path / "absent.nii.gz", tmp_path / "absent.nii.gz", "p9"))
    runs = [RunSettings(model=small_model.name, mode="analog", mc_samples=1, seed=s) for s in (0, 1)]
    first, second = evaluate_runs(small_model, cases, "msd", runs, progress=False, executor=Executor(0))
    assert [r["case"] for r in first["cases"]] == ["c0", "c1"] == [r["case"] for r in second["cases"]]
    assert capsys.readouterr().out.count("skipping broken") == 2
    assert first["mean_dice"] == np.mean([r["mean_dice"] for r in first["cases"]])
    assert first["cases"] != second["cases"]  # two programmings, two sets of chips


def test_recording_keeps_what_another_run_recorded_meanwhile(small_model, tmp_path, monkeypatch):
    """Two `aimc evaluate --record` runs of one model (digital and on chips, side by side) both land."""
    import shutil

    import training.evaluate as evaluation
    from engine.model_store import read_spec, write_spec

    folder = tmp_path / small_model.name
    shutil.copytree(small_model.folder, folder)
    monkeypatch.setattr(evaluation, "cases_of_split", lambda spec, data, split: ("msd", []))

    def runs_while_another_records(spec, cases, layout, settings, progress, executor):
        other = read_spec(folder)
        other.metrics.setdefault("test", {})["analog_noise1_drift86400"] = {"mean_dice": 0.7}
        write_spec(other, folder)
        return [{"mean_dice": 0.8, "mean_entropy": 0.01, "cases": []}]

    monkeypatch.setattr(evaluation, "evaluate_runs", runs_while_another_records)
    evaluation.evaluate(str(folder), tmp_path, "test", "digital", record=True, progress=False)
    stored = read_spec(folder).metrics["test"]
    assert stored["digital"]["mean_dice"] == 0.8 and stored["analog_noise1_drift86400"]["mean_dice"] == 0.7
