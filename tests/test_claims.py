"""The claims' paired bootstrap on constructed data with known answers, and the drift sweep on a real scan."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from training.data import Case
from training.report import claims
from training.report.bootstrap import CONTRADICTS, INCONCLUSIVE, SUPPORTS, Interval, Term, paired_difference
from training.report.jobs import CLAIMS_RUNS_FILE, DatasetSplit


def _drops(rng: np.random.Generator, digital: np.ndarray, drop: float, spread: float) -> Term:
    programmings = digital[None, :] - drop + rng.normal(0, spread, size=(10, len(digital)))
    return Term(1.0, programmings, digital)


def test_a_clearly_smaller_drop_supports_the_claim_and_its_mirror_contradicts_it():
    rng = np.random.default_rng(1)
    digital = rng.uniform(0.7, 0.9, size=20)
    small, large = _drops(rng, digital, 0.04, 0.01), _drops(rng, digital, 0.18, 0.01)
    found = paired_difference([small, dataclasses.replace(large, sign=-1.0)], resamples=2000)
    assert found.estimate == pytest.approx(-0.14, abs=0.01) and found.low < found.estimate < found.high < 0
    assert (found.patients, found.programmings) == (20, 10) and found.verdict() == SUPPORTS
    mirrored = paired_difference([large, dataclasses.replace(small, sign=-1.0)], resamples=2000)
    assert mirrored.verdict() == CONTRADICTS


def test_two_models_that_differ_only_by_chance_are_inconclusive():
    rng = np.random.default_rng(2)
    digital = rng.uniform(0.7, 0.9, size=12)
    a, b = _drops(rng, digital, 0.1, 0.05), _drops(rng, digital, 0.1, 0.05)
    found = paired_difference([a, dataclasses.replace(b, sign=-1.0)], resamples=2000)
    assert found.low < 0 < found.high and found.verdict() == INCONCLUSIVE


def test_pairing_removes_the_spread_between_patients():
    """Patients differ a lot, the two models by a constant: the paired interval is narrow."""
    patients = np.linspace(0.3, 0.9, 15)
    first = Term(1.0, np.tile(patients, (5, 1)))
    second = Term(-1.0, np.tile(patients + 0.01, (5, 1)))
    found = paired_difference([first, second], resamples=1000)
    assert found.estimate == pytest.approx(-0.01) and found.high - found.low < 1e-9


def test_a_claim_over_different_patients_is_refused():
    with pytest.raises(ValueError, match="share their patients"):
        paired_difference([Term(1.0, np.zeros((3, 4))), Term(-1.0, np.zeros((3, 5)))])


def test_a_verdict_for_a_claim_that_the_difference_is_positive():
    assert Interval(0.1, 0.05, 0.2, 10, 10).verdict(claim_is_negative=False) == SUPPORTS


def _sweep_models(small_model) -> dict:
    return {
        ("unet", "digital"): dataclasses.replace(small_model, name="lgg_unet_digital"),
        ("unet", "hwa"): dataclasses.replace(small_model, name="lgg_unet_hwa"),
        ("swinunetr", "digital"): dataclasses.replace(small_model, name="lgg_swinunetr_digital"),
    }


def test_the_claims_the_shipped_models_can_test():
    names = ["lgg_unet_digital", "lgg_unet_hwa", "lgg_swinunetr_digital"]
    specs = {k: type("S", (), {"name": n})() for k, n in zip(_KEYS, names, strict=True)}
    texts = [c.text for c in claims.lgg_claims(specs)]
    assert texts[0].startswith("Swin-UNETR loses less Dice on chips than the U-Net")
    assert any("HWA training shrinks the U-Net's drop" in t for t in texts)
    assert any("HWA U-Net is more certain" in t for t in texts)
    assert not any("U-Net++" in t for t in texts)  # no U-Net++ among these models


_KEYS = [("unet", "digital"), ("unet", "hwa"), ("swinunetr", "digital")]


def test_part_of_the_protocol_is_measured_with_every_digital_pass(small_model):
    models = _sweep_models(small_model)
    split = DatasetSplit({}, "msd", [Case("lgg_sample", "image", "label", "p0")])
    jobs = claims.claim_jobs(models, split, programmings=3, reads=["single"], drifts=["1 day"])
    assert [j.reads for j in jobs[:3]] == ["digital"] * 3
    assert {(j.reads, j.drift_s) for j in jobs[3:]} == {("single", 86400.0)}
    assert len(jobs) == 3 * (1 + 3)
    assert len(claims.claim_jobs(models, split, programmings=3)) == 3 * (1 + 3 * 2 * 4)


def _few_slices(case: tuple, folder) -> tuple:
    """The sample's three middle slices (through the lesion): the sweep runs 18 passes over them."""
    import nibabel as nib

    out = []
    for path in case:
        img = nib.load(path)
        middle = img.shape[2] // 2
        out.append(folder / path.name)
        nib.save(img.slicer[:, :, middle - 1 : middle + 2], out[-1])
    return tuple(out)


@pytest.mark.slow
def test_the_sweep_on_a_real_scan_resumes_and_settles_each_claim(
    small_model, lgg_case, tmp_path, monkeypatch
):
    monkeypatch.setattr(claims, "DRIFTS", {"1 day": 86400.0})
    monkeypatch.setattr(claims, "READS", {"single": 1})
    image, label = _few_slices(lgg_case, tmp_path)
    split = DatasetSplit(
        {}, "msd", [Case("lgg_sample", image, label, "p0"), Case("lgg_copy", image, label, "p1")]
    )
    models = _sweep_models(small_model)

    def bar(items, desc, total=None, initial=0):
        return items

    jobs = claims.claim_jobs(models, split, programmings=2)
    assert len(jobs) == 3 * (1 + 2) and [j.reads for j in jobs[:3]] == ["digital"] * 3
    text = claims.claims_report(models, split, tmp_path, 2, bar)
    rows = (tmp_path / "measurements" / CLAIMS_RUNS_FILE).read_text().splitlines()
    assert len(rows) == 1 + 3 * 3 * 2  # header, then (digital + 2 programmings) x 3 models x 2 patients
    assert "| Swin-UNETR loses less Dice on chips than the U-Net" in "\n".join(text)
    assert "2 x 2" in "\n".join(text) and "Not measured yet" not in "\n".join(text)

    again = claims.measure_claims(models, split, tmp_path, 2, bar, measure=True)
    assert len(again.rows) == 18  # nothing measured twice

    # one command rewrites the report's section from the runs kept, measuring nothing
    import training.report.build as build

    monkeypatch.setattr(build, "models_of", lambda dataset: models)
    monkeypatch.setattr(build, "splits_of", lambda data, limit: {"lgg": split})
    (tmp_path / "README.md").write_text("# Report\n\n## 5. The claims, settled with intervals\n\nSTALE\n")
    claims.main(
        ["--data", str(tmp_path), "--out", str(tmp_path), "--programmings", "2", "--from-measurements"]
    )
    report = (tmp_path / "README.md").read_text()
    assert report.startswith("# Report\n") and "STALE" not in report and "\n".join(text).rstrip() in report
    assert len((tmp_path / "measurements" / CLAIMS_RUNS_FILE).read_text().splitlines()) == 1 + 18

    only = tmp_path / "only_hwa"  # one kind measured (a digital model's HWA version still training)
    claims.main(["--data", str(tmp_path), "--out", str(only), "--programmings", "1", "--kind", "hwa"])
    measured = {
        r.split(",")[0] for r in (only / "measurements" / CLAIMS_RUNS_FILE).read_text().splitlines()[1:]
    }
    assert measured == {"lgg_unet_hwa"}

    stale = [{**r, "weights": "0" * 16} if r["model"] == "lgg_unet_hwa" else r for r in again.rows]
    found, missing = claims.claims_rows(models, claims.Measured(stale, models, split))  # HWA weights replaced
    assert missing and all("HWA" in m for m in missing)
    assert {r["claim"] for r in found} == {claims.lgg_claims(models)[0].text}


def test_a_section_is_rewritten_in_place_and_the_rest_of_the_report_kept(tmp_path):
    from training.report.markdown import replace_section

    path = tmp_path / "README.md"
    section = ["## 5. The claims", "", "new table", "### a part of it", "more"]
    replace_section(path, section)  # no report yet: the section alone
    assert path.read_text() == "\n".join(section) + "\n"
    path.write_text(
        "# R\n\n## 4. Pipes\n\nkept\n\n## 5. The claims\n\nold\n### old part\n\n## 6. After\n\nalso kept\n"
    )
    replace_section(path, section + [""])
    assert path.read_text() == (
        "# R\n\n## 4. Pipes\n\nkept\n\n" + "\n".join(section) + "\n\n## 6. After\n\nalso kept\n"
    )
    replace_section(path, ["## 7. Appended", "", "text"])
    assert path.read_text().endswith("also kept\n\n## 7. Appended\n\ntext\n")


def test_the_claims_section_names_the_most_programmings_kept_not_the_fewer_asked_for_now():
    from training.report.claims import kept_programmings

    rows = [
        {"reads": "digital", "seed": "0"},
        {"reads": "single", "seed": "9"},
        {"reads": "MC 4", "seed": "2"},
    ]
    assert kept_programmings(rows) == 10
    assert kept_programmings(rows[:1]) == 0 and kept_programmings([]) == 0


def test_the_claims_section_says_which_models_average_with_the_mirror():
    row = {key: "" for key, _, _ in claims.COLUMNS}
    text = "\n".join(claims.claims_section([row], [], 10, mirrored=["lgg_unet_hwa"]))
    assert "`lgg_unet_hwa` average every slice with its mirror" in text
    assert "mirror" not in "\n".join(claims.claims_section([row], [], 10))


def test_a_mirrored_model_is_also_read_without_its_mirror_and_its_claims_settled_so(small_model):
    models = {
        ("unet", "digital"): dataclasses.replace(small_model, name="lgg_unet_digital"),
        ("unet", "hwa"): dataclasses.replace(small_model, name="lgg_unet_hwa", flip_average=True),
    }
    both = claims.with_plain_reads(models)
    plain = both[("unet", "hwa" + claims.NO_MIRROR)]
    assert (
        plain.name == "lgg_unet_hwa:no-mirror"
        and not plain.flip_average
        and plain.folder == small_model.folder
    )
    assert len(both) == 3 and claims.with_plain_reads(both) == both  # the digital one reads no mirror
    found = {c.text: c for c in claims.lgg_claims(both)}
    plain_claims = [c for t, c in found.items() if "both read without the mirror" in t]
    assert {c.column for c in plain_claims} == {"dice", "entropy_band"}
    assert all(c.terms == ((1.0, "lgg_unet_hwa:no-mirror"), (-1.0, "lgg_unet_digital")) for c in plain_claims)
    assert not any("without the mirror" in c.text for c in claims.lgg_claims(models))


def test_a_pass_reads_with_or_without_the_mirror_as_asked(small_model, lgg_case, tmp_path):
    from engine.run_settings import Mode, RunSettings
    from training.evaluate import evaluate_run

    image, label = _few_slices(lgg_case, tmp_path)
    cases, run = [Case("lgg_sample", image, label, "p0")], RunSettings(model="small_unet", mode=Mode.DIGITAL)

    def entropy(mirror):
        found = evaluate_run(small_model, cases, "msd", run, progress=False, mirror=mirror)
        return found["cases"][0]["mean_entropy"]

    assert not small_model.flip_average and entropy(None) == entropy(False)
    assert entropy(True) != pytest.approx(entropy(False), rel=1e-3)
