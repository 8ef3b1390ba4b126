"""The report's bookkeeping (measurements appended and resumed, the sweep's runs), its
verdicts, its figures and the chip timing model of the pipelining claim."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from training.report.jobs import (
    CLAIMS_RUN_KEY,
    CLAIMS_RUNS_FILE,
    DatasetSplit,
    RobustnessJob,
    RowCache,
    UncertaintyJob,
)
from training.report.robustness import NOISE_LEVELS, robustness_jobs, robustness_table

KEY = ("model", "noise", "seed")


def test_measurements_are_appended_and_a_new_run_resumes_from_them(tmp_path):
    path = tmp_path / "measurements" / "runs.csv"
    first = RowCache(path, KEY)
    first.add({"model": "m", "noise": 1.0, "seed": 0, "mean_dice": 0.5})
    first.add({"model": "m", "noise": 1.0, "seed": 1, "mean_dice": 0.6})
    assert path.read_text().count("model,noise,seed") == 1  # one header, rows appended below it
    again = RowCache(path, KEY)
    assert again.has(model="m", noise=1.0, seed=1)
    assert not again.has(model="m", noise=2.0, seed=1)
    assert [r["mean_dice"] for r in again.rows] == ["0.5", "0.6"]


def test_a_table_is_written_into_a_folder_that_does_not_exist_yet(tmp_path):
    """A report sent to a new folder (`training.report.trust --out RUNS/RUN/trust`) makes it."""
    from training.report.markdown import write_csv

    path = tmp_path / "run" / "trust" / "trust.csv"
    write_csv([{"model": "m", "dice": 0.5}], path)
    assert path.read_text().splitlines() == ["model,dice", "m,0.5"]


def test_the_sweep_measures_each_noisy_level_per_programming_and_the_ideal_chip_once():
    spec = SimpleNamespace(name="m")
    jobs = robustness_jobs(
        {"lgg": DatasetSplit({("unet", "digital"): spec}, "msd", ["case"])}, programmings=5
    )
    digital = [j for j in jobs if j.mode == "digital"]
    ideal = [j for j in jobs if j.mode == "analog" and j.noise == 0.0]
    noisy = [j for j in jobs if j.mode == "analog" and j.noise > 0.0]
    assert len(digital) == 1
    assert len(ideal) == 2  # one per drift time
    assert len(noisy) == 2 * (len(NOISE_LEVELS) - 1) * 5
    assert {j.seed for j in noisy} == set(range(5))
    assert [j.mode for j in jobs[:1]] == ["digital"] and all(
        j.noise == 1.0 for j in jobs[1:11]
    )  # the drop table first
    rest = [j.seed for j in jobs[11:]]
    assert rest == sorted(rest) and rest[: 2 * (len(NOISE_LEVELS) - 1)].count(0) == 2 * (
        len(NOISE_LEVELS) - 1
    )  # curves first


def test_the_table_averages_programmings_and_keeps_their_spread():
    spec = SimpleNamespace(name="m")
    sets = {"lgg": DatasetSplit({("unet", "digital"): spec}, "msd", ["a", "b"])}
    rows = [
        {"model": "m", "cases": "2", "noise": "digital", "drift_s": "3600.0", "seed": "0", "mean_dice": "0.8"}
    ]
    rows += [
        {
            "model": "m",
            "cases": "2",
            "noise": "1.0",
            "drift_s": "86400.0",
            "seed": str(s),
            "mean_dice": str(d),
        }
        for s, d in enumerate((0.6, 0.7))
    ]
    rows += [
        {"model": "m", "cases": "9", "noise": "1.0", "drift_s": "86400.0", "seed": "0", "mean_dice": "0.1"}
    ]  # other split size
    table, digital = robustness_table(rows, sets)
    assert digital == {"m": 0.8}
    (row,) = [r for r in table if r["noise"] == 1.0 and r["drift"] == "1 day"]
    assert row["mean"] == pytest.approx(0.65) and row["std"] == pytest.approx(0.05) and row["n"] == 2


def test_the_verdict_compares_the_digitally_trained_isotropic_model_with_the_pyramidal_ones():
    from training.report.markdown import robustness_verdict

    def row(arch, kind, drop):
        return {
            "dataset": "lgg",
            "model": f"lgg_{arch}_{kind}",
            "arch": arch,
            "kind": kind,
            "drop_hour": drop,
        }

    hwa_noise = [row("swinunetr", "hwa", 0.5)]  # HWA models are not the paper's comparison
    assert "most robust here too" in robustness_verdict(
        [row("swinunetr", "digital", 0.04), row("unet", "digital", 0.1)] + hwa_noise
    )
    assert "unlike the paper" in robustness_verdict(
        [row("swinunetr", "digital", 0.2), row("unet", "digital", 0.1)]
    )
    assert "less than U-Net only" in robustness_verdict(
        [row("swinunetr", "digital", 0.05), row("unet", "digital", 0.1), row("unetpp", "digital", 0.0)]
    )
    assert "needs" in robustness_verdict([row("unet", "digital", 0.1)])
    swin, unet = row("swinunetr", "digital", 0.04), row("unet", "digital", 0.1)
    swin["ensemble_drop_day"], unet["ensemble_drop_day"] = 0.12, 0.07
    assert "protocols disagree" in robustness_verdict([swin, unet])
    swin["ensemble_drop_day"] = 0.05
    assert "protocols agree" in robustness_verdict([swin, unet])
    unet["ensemble_drop_day"] = "-"  # no recorded ensemble: only the sweep speaks
    assert "protocol" not in robustness_verdict([swin, unet])


def test_a_nominal_first_pass_measures_the_drop_table_and_the_next_pass_the_rest(tmp_path, monkeypatch):
    import training.report.robustness as report

    measured = []
    monkeypatch.setattr(report, "_robustness_run", lambda job: measured.append((job.mode, job.noise)) or 0.5)
    sets = {"lgg": DatasetSplit({("unet", "digital"): SimpleNamespace(name="m")}, "msd", ["case"])}
    bar = lambda items, *_: items  # noqa: E731
    _, done, planned = report.robustness(sets, tmp_path, 2, bar, nominal_only=True)
    assert set(measured) == {("digital", 0.0), ("analog", 1.0)} and done == 1 + 2 * 2 < planned
    measured.clear()
    _, done, planned = report.robustness(sets, tmp_path, 2, bar)
    assert ("analog", 1.0) not in measured and done == planned  # resumed: nominal runs are not measured again


def test_runs_the_claims_sweep_made_on_the_same_weights_are_not_measured_again(tmp_path, monkeypatch):
    import training.report.robustness as report

    monkeypatch.setattr(report, "weights_hash", lambda spec: "abc" * 8)
    sweep = RowCache(tmp_path / "measurements" / CLAIMS_RUNS_FILE, CLAIMS_RUN_KEY)

    def kept(reads, drift, seed, case, dice, weights="abcabcabcabcabca"):
        sweep.add(
            dict(model="m", weights=weights, reads=reads, drift_s=drift, seed=seed, case=case, dice=dice)
        )

    for case, dice in (("p1", 0.8), ("p2", 0.6)):
        kept("digital", 0.0, 0, case, dice)
        kept("single", 86400.0, 0, case, dice - 0.1)
        kept("MC 4", 86400.0, 1, case, dice)  # an ensemble, not a single read
        kept("single", 3600.0, 1, case, dice, weights="replaced weight")
    kept("single", 3600.0, 0, "p1", 0.9)  # one patient of two: not a whole pass
    measured = []
    monkeypatch.setattr(
        report, "_robustness_run", lambda job: measured.append((job.mode, job.drift_s, job.seed)) or 0.5
    )
    cases = [SimpleNamespace(case_id="p1"), SimpleNamespace(case_id="p2")]
    sets = {"lgg": DatasetSplit({("unet", "digital"): SimpleNamespace(name="m")}, "msd", cases)}
    rows, _, _ = report.robustness(sets, tmp_path, 2, lambda items, *_: items, nominal_only=True)
    assert sorted(measured) == [("analog", 3600.0, 0), ("analog", 3600.0, 1), ("analog", 86400.0, 1)]
    dice = {(r["noise"], r["drift_s"], r["seed"]): float(r["mean_dice"]) for r in rows}
    assert dice[("digital", "3600.0", "0")] == pytest.approx(0.7)
    assert dice[("1.0", "86400.0", "0")] == pytest.approx(0.6)


def test_tile_mapping_and_pipelining_figures_are_drawn_from_a_mapping(tmp_path):
    from training.report.figures import pipelining_figure, tile_mapping_figure
    from training.report.tile_mapping import LayerMapping, NetworkMapping

    layers = [LayerMapping("a", "Conv2d", 9, 16, 1, 4096), LayerMapping("b", "Conv2d", 576, 600, 4, 256)]
    mappings = {"unet": NetworkMapping(layers, 0, 0, [])}
    tile_mapping_figure(mappings, tmp_path / "tiles.png")
    pipelining_figure({"slices": 20, "t_mvm_ns": 133.0}, mappings, tmp_path / "pipe.png")
    for name in ("tiles.png", "pipe.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_certainty_verdict_compares_mean_entropy_per_architecture():
    from training.report.markdown import uncertainty_verdict

    def res(u):
        return {"mean_entropy": u}

    both = {
        ("unet", "digital"): res(0.02),
        ("unet", "hwa"): res(0.01),
        ("swinunetr", "digital"): res(0.03),
        ("swinunetr", "hwa"): res(0.02),
        ("unetpp", "digital"): res(0.5),
    }
    assert uncertainty_verdict(both).endswith("as the paper reports.")  # U-Net++ has no HWA pair: left out
    both[("unet", "hwa")] = res(0.05)
    assert "not for U-Net, unlike the paper" in uncertainty_verdict(both)
    assert "needs" in uncertainty_verdict({("unet", "digital"): res(0.02)})


def test_chip_timing_by_hand():
    from training.report.pipelining import mvm_time_s, volume_timing
    from training.report.tile_mapping import LayerMapping, NetworkMapping

    assert mvm_time_s() == pytest.approx(133e-9, rel=0.01)  # Le Gallo et al. 2023, one-phase mode
    layers = [LayerMapping("a", "Conv2d", 9, 16, 1, 100), LayerMapping("b", "Conv2d", 144, 16, 1, 400)]
    m = NetworkMapping(layers, 0, 0, [])
    t = volume_timing(m, slices=10, t_mvm=1e-6)
    assert t.slice_latency_s == pytest.approx(500e-6)
    assert t.sequential_latency_s == pytest.approx(5000e-6)
    assert t.pipelined_latency_s == pytest.approx(500e-6 + 9 * 400e-6)
    assert t.speedup == pytest.approx(5000 / 4100)


def test_the_chip_curves_are_the_timing_model_per_volume_size():
    from training.report.pipelining import chip_curves, volume_timing
    from training.report.tile_mapping import LayerMapping, NetworkMapping

    m = NetworkMapping(
        [LayerMapping("a", "Conv2d", 9, 16, 1, 100), LayerMapping("b", "Conv2d", 144, 16, 1, 400)], 0, 0, []
    )
    c = chip_curves(m, 3, 1e-6)
    assert c.stage_us == pytest.approx([100.0, 400.0])
    assert list(c.slices) == [1, 2, 3]
    assert c.pipelined_ms[2] == pytest.approx(1e3 * volume_timing(m, 3, 1e-6).pipelined_latency_s)
    assert c.sequential_ms == pytest.approx([0.5, 1.0, 1.5])


def test_a_run_is_keyed_by_its_measurement_and_ordered_for_a_partial_report():
    spec = SimpleNamespace(name="m")
    digital = RobustnessJob(spec, "msd", ["a", "b"], "digital", 0.0, 3600.0, 0)
    assert digital.key == {"model": "m", "cases": 2, "noise": "digital", "drift_s": 3600.0, "seed": 0}
    assert digital.run.mode == "digital" and digital.run.mc_samples == 1
    nominal = RobustnessJob(spec, "msd", ["a", "b"], "analog", 1.0, 86400.0, 3)
    assert nominal.key["noise"] == 1.0 and nominal.run.seed == 3 and nominal.run.drift_s == 86400.0
    later = [RobustnessJob(spec, "msd", ["a"], "analog", 2.0, 3600.0, s) for s in (1, 0)]
    assert digital.priority < nominal.priority < later[1].priority < later[0].priority


def test_an_uncertainty_pass_keeps_its_file_name():
    job = UncertaintyJob(SimpleNamespace(name="lgg_unet_hwa"), ["c"] * 18, 16, 1.0, 86400.0)
    assert (
        job.file_name == "uncertainty_lgg_unet_hwa_cases18_mc16_n1_d86400.json"
    )  # as in reports/measurements
    assert job.run.mc_samples == 16 and job.run.seed == 0 and job.run.noise_level == 1.0


def test_the_tile_mapping_text_gives_each_network_its_own_input_size():
    from training.report.markdown import MAPPING_COLUMNS, tile_mapping_section

    rows = [
        {"arch": "unet", "input": "256x256", "parameters": 1_630_000},
        {"arch": "swinunetr", "input": "128x128", "parameters": 1_710_000},
    ]
    text = "\n".join(tile_mapping_section([{**{c[0]: 0 for c in MAPPING_COLUMNS}, **r} for r in rows]))
    assert "U-Net 1.63 M parameters on 256x256 slices" in text
    assert "Swin-UNETR 1.71 M parameters on 128x128 slices" in text


def test_a_report_rewritten_from_measurements_keeps_the_pipeline_timing_of_the_same_weights(monkeypatch):
    """Re-timing on a machine busy with training would replace a quiet-machine measurement."""
    from engine.model_store import MODELS_DIR, find_model, weights_hash
    from training.report import pipelining as module

    spec = find_model("lgg_unet_hwa", MODELS_DIR)
    volume = SimpleNamespace(shape=(4, 4, 20))
    timed = []
    monkeypatch.setattr(module, "time_pipeline", lambda *a: timed.append(a) or (9.0, 3.0))
    kept = {"model": spec.name, "weights": weights_hash(spec), "slices": 20, "mc": 8}
    kept |= {"sequential_s": 4.0, "pipelined_s": 2.0}
    assert module.pipelining(spec, volume, 8, {}, kept)["pipelined_slices_per_s"] == pytest.approx(10.0)
    assert not timed
    for changed in ({"weights": "other"}, {"mc": 4}, {"slices": 10}):
        result = module.pipelining(spec, volume, 8, {}, kept | changed)
        assert result["sequential_s"] == 9.0 and result["weights"] == weights_hash(spec)
    assert len(timed) == 3
