"""Trust in the reading session, without Qt: the model gate on real scans, the case verdict (never for a
partial result), the lesion table and its jump, and what File > Export writes about them.

Inference is real (the installed LGG U-Net, digital: fast) and runs synchronously in a test runner;
the verdict's background runs at once, or when the test says so.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from engine.export import summary
from engine.findings import lesions
from engine.inference import Segmenter
from engine.model_store import ModelSpec, find_model, list_models
from engine.pipeline import VolumeResult, run_slices
from engine.run_settings import RunSettings
from engine.trust import TrustCalibration, Verdict, calibration_for, verdict
from engine.volume import Volume, load_scan
from tests.conftest import SHARED_DATA
from tests.test_viewer_session import DictStore, FakeRunner
from viewer.session.background import Immediate, Latest
from viewer.session.notices import OUTSIDE, RUN_ANYWAY, SCORE_WORDS, Level, title_mark, verdict_notice
from viewer.session.runs import RunOutcome
from viewer.session.session import ReadingSession
from viewer.session.verdicts import CaseVerdict, VerdictState

SAMPLE = Path(__file__).resolve().parent.parent / "resources" / "samples" / "lgg_sample.nii.gz"
CT = SHARED_DATA / "ct_example" / "example_ct_sm.nii.gz"
HIPPOCAMPUS = SHARED_DATA / "hippocampus" / "imagesTr" / "hippocampus_004.nii.gz"


def _scan(path: Path) -> Volume:
    if not path.exists():
        pytest.skip(f"real data not found at {path}")
    return load_scan(path)


@pytest.fixture(scope="module")
def specs() -> list[ModelSpec]:
    installed = list_models()
    if "lgg_unet_hwa" not in {s.name for s in installed}:
        pytest.skip("the LGG models are not installed")
    return installed


class SyncRunner(FakeRunner):
    """Runs the real pipeline on the calling thread, as far as `limit` slices, then reports like the app's
    runner: each slice to the session, the model's post-processing, the end of the run."""

    def __init__(self) -> None:
        super().__init__()
        self.session: ReadingSession | None = None
        self.limit: int | None = None

    def start(self, spec, run, volume, result, order) -> None:
        super().start(spec, run, volume, result, order)
        segmenter = Segmenter(spec, run)
        for item in run_slices(segmenter, volume, result.axis, indices=order[: self.limit]):
            result.add(item)
            self.session.slice_done(result, item.index, True)
        result.finalise()
        self.computing = None
        self.session.run_ended(result)


class Manual:
    """A background that runs its work only when the test calls `run_all`."""

    def __init__(self) -> None:
        self.queued: list = []

    def submit(self, work, done, failed) -> None:
        self.queued.append((work, done, failed))

    def run_all(self) -> None:
        queued, self.queued = self.queued, []
        for work, done, failed in queued:
            Immediate().submit(work, done, failed)


def _session(specs, background=None, runner=None) -> tuple[ReadingSession, FakeRunner, dict[str, list]]:
    runner = runner if runner is not None else FakeRunner()
    session = ReadingSession(DictStore(), runner, specs, background)
    if isinstance(runner, SyncRunner):
        runner.session = session
    session.choose_model(next(s for s in specs if s.name == "lgg_unet_hwa"))  # the app's default
    seen: dict[str, list] = {}
    for name, emitter in vars(session.events).items():
        emitter.connect(lambda *args, name=name: seen.setdefault(name, []).append(args))
    return session, runner, seen


def _digital(session: ReadingSession) -> RunSettings:
    return RunSettings(model=session.spec.name, mode="digital")


# -- the gate ------------------------------------------------------------------------------------
def test_each_scan_gets_a_model_that_fits_it_and_the_model_follows_the_scan(specs) -> None:
    session, runner, seen = _session(specs)
    session.open(_scan(SAMPLE), SAMPLE)
    assert session.gate.chosen == "lgg_unet_hwa" and session.spec.name == "lgg_unet_hwa"
    assert session.fit_line("lgg_unet_hwa") == (
        True,
        "Fits this scan: " + session.gate.fit("lgg_unet_hwa").explain(),
    )
    assert session.fit_line("hippocampus_unet_hwa")[0] is False
    assert session.gate.marks()["nuclei_unet_hwa"] == (
        False,
        "the scan is a 3D volume; the model reads 2D scans",
    )
    assert session.request_run(session.spec, _digital(session)) is RunOutcome.STARTED
    assert session.gate_notice().level is Level.NONE  # nothing to warn about

    session.open(_scan(HIPPOCAMPUS), HIPPOCAMPUS)
    assert session.spec.name == "hippocampus_unet_hwa" and seen["model_changed"][-1] == (session.spec,)
    notice = session.gate_notice()
    assert notice.level is Level.INFO and notice.headline == "Model switched to hippocampus_unet_hwa"
    assert "lgg_unet_hwa does not fit this scan (slices of 36x52 voxels" in notice.detail
    assert session.request_run(session.spec, _digital(session)) is RunOutcome.STARTED
    assert runner.started[-1][0].model == "hippocampus_unet_hwa"

    session.open(_scan(SAMPLE), SAMPLE)  # and back
    assert session.spec.name == "lgg_unet_hwa" and session.gate.previous == "hippocampus_unet_hwa"
    assert session.gate_notice().headline == "Model switched to lgg_unet_hwa"


def test_a_scan_no_model_fits_runs_nothing_until_the_reader_asks_and_then_carries_the_mark(specs) -> None:
    session, runner, seen = _session(specs)
    session.open(_scan(CT), CT)
    assert session.gate.chosen is None and session.spec.name == "lgg_unet_hwa"  # kept, but refused
    run = _digital(session)
    assert session.request_run(session.spec, run) is RunOutcome.BLOCKED
    assert runner.started == [] and session.result is None and seen["result_shown"][-1] == (None,)
    banner = session.gate_notice()
    assert banner.level is Level.DANGER and banner.headline == "No installed model fits this scan"
    assert "negative (CT-like)" in banner.detail and banner.detail.startswith(
        "nothing was run. lgg_unet_hwa: "
    )
    assert banner.action == RUN_ANYWAY and not session.outside_domain
    assert session.case_verdict().state is VerdictState.NO_RESULT

    assert session.request_run(session.spec, run, deliberate=True) is RunOutcome.STARTED
    assert session.outside_domain and title_mark(session.outside_domain) == f" — {OUTSIDE.upper()}"
    marked = session.gate_notice()
    assert (
        marked.level is Level.DANGER
        and marked.headline == "Outside the model's training domain: lgg_unet_hwa"
    )
    assert "negative (CT-like)" in marked.detail and marked.action == ""
    runner.cancel()
    more = RunSettings(model="lgg_unet_hwa", mode="analog", mc_samples=2)  # the same model, other settings
    assert session.request_run(session.spec, more) is RunOutcome.STARTED and session.outside_domain
    hippocampus = next(s for s in specs if s.name == "hippocampus_unet_hwa")
    refused = session.request_run(hippocampus, RunSettings(model=hippocampus.name, mode="digital"))
    assert (
        refused is RunOutcome.BLOCKED
        and session.gate_notice().headline == "No installed model fits this scan"
    )

    session.open(_scan(SAMPLE), SAMPLE)  # a new scan forgets what the reader allowed
    assert not session.accepted and not session.outside_domain


def test_a_model_chosen_by_hand_that_does_not_fit_is_refused_and_names_the_one_that_does(specs) -> None:
    session, runner, _ = _session(specs)
    session.open(_scan(SAMPLE), SAMPLE)
    hippocampus = next(s for s in specs if s.name == "hippocampus_unet_hwa")
    assert (
        session.request_run(hippocampus, RunSettings(model=hippocampus.name, mode="digital"))
        is RunOutcome.BLOCKED
    )
    notice = session.gate_notice()
    assert notice.headline == "hippocampus_unet_hwa does not fit this scan"
    assert "lgg_unet_hwa fits it" in notice.detail and notice.action == RUN_ANYWAY
    assert runner.cancelled >= 1 and runner.started == []


# -- the verdict, the lesions, the export ---------------------------------------------------------
@pytest.fixture(scope="module")
def sample_run(specs):
    """The sample read digitally through the session: stopped after 5 slices, then resumed to the end,
    with the verdict's background held until the test releases it."""
    background = Manual()
    session, runner, seen = _session(specs, background, SyncRunner())
    session.open(_scan(SAMPLE), SAMPLE)
    runner.limit = 5
    assert session.request_run(session.spec, _digital(session)) is RunOutcome.STARTED
    partial = {
        "verdict": session.case_verdict(),
        "notice": session.verdict_notice(),
        "queued": len(background.queued),
    }
    session.refresh_findings("entropy")
    background.run_all()
    partial["findings"] = seen["findings_ready"][-1][0]
    runner.limit = None
    session.request_run(session.spec, _digital(session), deliberate=True)  # Ctrl+R: resume
    return session, background, seen, partial


def test_no_verdict_for_a_partial_result_then_the_verdict_once_complete(sample_run) -> None:
    session, background, seen, partial = sample_run
    assert partial["verdict"].state is VerdictState.PARTIAL and partial["queued"] == 0
    assert partial["notice"].headline == "Case verdict: once every slice is segmented"
    assert partial["notice"].detail == "5 of 27 slices so far"
    assert session.result.complete
    if background.queued:  # computed off the UI thread: "computing" until it answers
        assert session.case_verdict().state is VerdictState.COMPUTING
        assert session.verdict_notice().headline == "Case verdict: computing…"
        background.run_all()
    case = session.case_verdict()
    assert case.state is VerdictState.READY
    expected = verdict(session.result, session.spec.preprocessing, calibration_for(session.spec, "digital"))
    assert case.verdict == expected
    notice = session.verdict_notice()
    range_text = f"{expected.expected_dice:.2f} ({expected.low:.2f}–{expected.high:.2f})"
    if expected.review:
        assert notice.level is Level.REVIEW and notice.headline == "Review carefully"
        assert f"Expected Dice {range_text}" in notice.detail
    else:
        assert notice.level is Level.GOOD and notice.headline == f"Expected Dice {range_text}"
    assert ("out of distribution" if expected.out_of_distribution else "in distribution") in notice.detail
    assert f"from the {SCORE_WORDS[expected.score]} ({expected.score_value:.3g})" in notice.more
    assert len(seen["trust_changed"]) >= 3


def test_lesions_appear_for_the_complete_result_ranked_and_a_click_centres_the_views(sample_run) -> None:
    session, background, seen, partial = sample_run
    assert partial["findings"].lesions is None
    assert partial["findings"].lesion_note == "Lesions are listed once all 27 slices are segmented."
    assert {s for s, _ in partial["findings"].ranking} <= set(np.flatnonzero(session.result.finished))
    session.refresh_findings("entropy")
    background.run_all()
    found = seen["findings_ready"][-1][0]
    threshold = calibration_for(session.spec, "digital").lesion_review_above
    assert found.lesions == lesions(session.result, "entropy", review_above=threshold) and found.lesions
    flagged = sum(lesion.review for lesion in found.lesions)
    rule = f"mean entropy above {threshold:.3f}, the model's calibrated threshold"
    assert found.lesion_note == (
        f"{flagged} flagged for review: {rule}." if flagged else f"None flagged ({rule})."
    )
    uncertainties = [lesion.mean_uncertainty for lesion in found.lesions]
    assert uncertainties == sorted(uncertainties, reverse=True)
    top = found.lesions[0]
    cells = found.lesion_cells(top)
    assert cells[0] == "FLAIR abnormality" and cells[3] == f"{top.first_slice + 1}–{top.last_slice + 1}"
    assert session.result.segmentation[top.centre] > 0
    session.centre_on(top.centre)
    assert session.crosshair == top.centre and seen["centred"] == [()]
    session.refresh_findings("std")  # flags are calibrated on the entropy: none under another map
    background.run_all()
    other = seen["findings_ready"][-1][0]
    assert not any(lesion.review for lesion in other.lesions) and "predictive entropy" in other.lesion_note


def test_export_records_the_verdict_the_gate_and_the_lesions(sample_run, tmp_path) -> None:
    session, background, _, _ = sample_run
    background.run_all()
    session.export(tmp_path, "entropy", uncertainty=False, probability=False)
    written = json.loads((tmp_path / "summary.json").read_text())
    case = session.case_verdict().verdict
    assert written["verdict"]["available"] and written["verdict"]["review"] == case.review
    assert written["verdict"]["expected_dice"] == pytest.approx(case.expected_dice, abs=1e-4)
    assert written["verdict"]["out_of_distribution"] == case.out_of_distribution
    assert written["gate"] == {
        "model": "lgg_unet_hwa",
        "fits": True,
        "outside_training_domain": False,
        "by_metadata": False,
        "reasons": list(session.gate.fit("lgg_unet_hwa").reasons),
    }
    threshold = calibration_for(session.spec, "digital").lesion_review_above
    top = lesions(session.result, "entropy", review_above=threshold)[0]
    assert written["lesions"][0] == {
        "label": "FLAIR abnormality",
        "volume_ml": round(top.volume_ml, 4),
        "largest_diameter_mm": round(top.diameter_mm, 2),
        "first_slice": top.first_slice + 1,
        "last_slice": top.last_slice + 1,
        "centre_voxel": list(top.centre),
        "mean_entropy": round(top.mean_uncertainty, 6),
        "review": top.review,
    }


def test_a_model_without_calibration_says_so_and_exports_why(specs, tmp_path) -> None:
    spec = dataclasses.replace(find_model("lgg_unet_digital"), trust={})  # every shipped model is calibrated
    session, runner, _ = _session(specs)
    volume = _scan(SAMPLE)
    session.open(volume, SAMPLE)
    session.request_run(spec, RunSettings(model=spec.name, mode="digital"))
    session.result.finished[:] = True  # complete, nothing segmented
    runner.computing = None  # the run ended
    session.run_ended(session.result)
    assert session.case_verdict().state is VerdictState.UNCALIBRATED
    assert session.verdict_notice().headline == "No trust calibration for this model"
    session.export(tmp_path, "entropy", uncertainty=False, probability=False)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["verdict"] == {"available": False, "reason": "no trust calibration for this model"}
    assert written["lesions"] == []


def test_a_forced_run_outside_the_domain_exports_the_gates_reasons_and_no_nan(specs, tmp_path) -> None:
    session, runner, _ = _session(specs)
    session.open(_scan(CT), CT)
    session.request_run(session.spec, _digital(session), deliberate=True)
    session.result.finished[:] = True  # complete: nothing segmented, so no expected Dice
    runner.computing = None  # the run ended
    session.run_ended(session.result)
    notice = session.verdict_notice()
    assert notice.headline in ("Review carefully: nothing segmented", "Nothing segmented")
    session.export(tmp_path, "entropy", uncertainty=False, probability=False)
    written = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: NaN would not parse back
    assert written["gate"]["outside_training_domain"] and any(
        "negative" in r for r in written["gate"]["reasons"]
    )
    assert written["verdict"]["expected_dice"] is None and math.isnan(
        session.case_verdict().verdict.expected_dice
    )


def test_the_clis_summary_is_unchanged_without_the_trust_arguments(specs) -> None:
    spec = find_model("lgg_unet_hwa")
    result = VolumeResult(Volume(np.zeros((4, 4, 3), np.float32), np.eye(4)), "axial", 2)
    plain = summary(result, spec, RunSettings(model=spec.name, mode="digital"))
    assert not {"verdict", "gate", "lesions"} & set(plain)


def test_latest_runs_one_piece_of_work_at_a_time_and_only_the_newest_waiting_one() -> None:
    manual = Manual()
    latest, answers = Latest(manual), []
    for k in range(4):
        latest.submit(lambda k=k: k, answers.append, answers.append)
    assert len(manual.queued) == 1  # the first runs; 1 and 2 were replaced by 3 while they waited
    manual.run_all()
    manual.run_all()
    assert answers == [0, 3] and manual.queued == []


def test_verdict_banner_words_and_colour_follow_the_verdict() -> None:
    cal = TrustCalibration(
        "pairwise_dice", (0.5, 1.0), (0.5, 0.9), -0.1, 0.05, 0.7, 0.3, 3.0, (0.0, 1.0), "val: 9"
    )

    def notice(expected: float, ood: float):
        review = ood > cal.ood_threshold or expected < cal.review_below
        v = Verdict(
            review, expected, expected - 0.1, expected + 0.05, ood > 3.0, ood, "pairwise_dice", 0.8, ""
        )
        return verdict_notice(CaseVerdict(VerdictState.READY, v, cal))

    good = notice(0.85, 1.0)
    assert good.level is Level.GOOD and good.headline == "Expected Dice 0.85 (0.75–0.90)"
    assert good.detail == "in distribution (OOD score 1.0, limit 3.0)"  # the banner: a line or two
    assert "agreement between chips" in good.more and good.text.endswith(f"; {good.more}")  # on hover
    low = notice(0.55, 1.0)
    assert low.level is Level.REVIEW and low.headline == "Review carefully"
    assert low.detail.startswith("the expected Dice is below 0.70. Expected Dice 0.55 (0.45–0.60)")
    ood = notice(0.85, 5.0)
    assert ood.level is Level.REVIEW and ood.detail.startswith("out of distribution")
    unreliable = verdict_notice(
        CaseVerdict(
            VerdictState.READY,
            Verdict(False, 0.85, 0.75, 0.9, False, 1.0, "pairwise_dice", 0.8, ""),
            dataclasses.replace(cal, foreign_checked=4, foreign_flagged=0),
        )
    )
    assert unreliable.level is Level.GOOD and "in distribution" not in unreliable.detail
    assert unreliable.detail.startswith("not flagged as out of distribution, but the OOD check cannot vouch")
    assert "it flagged 0 of 4 scans of another data set" in unreliable.more
    mismatch = "calibrated at MC 8 (this run 16): the expected Dice may be off"
    other_chips = verdict_notice(
        CaseVerdict(
            VerdictState.READY,
            Verdict(False, 0.85, 0.75, 0.9, False, 1.0, "pairwise_dice", 0.8, "", mismatch),
            cal,
        )
    )
    assert other_chips.detail.endswith(mismatch) and mismatch not in other_chips.more  # on the banner itself
    empty = notice(float("nan"), 1.0)
    assert empty.level is Level.INFO and empty.headline == "Nothing segmented"
    assert verdict_notice(CaseVerdict(VerdictState.FAILED, note="boom")).level is Level.REVIEW


def test_lesions_and_verdict_wait_for_the_end_of_the_run_not_only_the_last_slice(specs) -> None:
    """Between the last slice and the end of its run the labels are not post-processed yet."""
    session, runner, seen = _session(specs)
    session.open(_scan(SAMPLE), SAMPLE)
    session.request_run(session.spec, _digital(session))
    result = session.result
    result.finished[:] = True
    result.segmentation[100:110, 100:110, 10:12] = 1  # a lesion the post-processing could still remove
    assert runner.is_computing(result) and not session.settled(result)
    session.refresh_findings("entropy")
    assert seen["findings_ready"][-1][0].lesions is None
    assert seen["findings_ready"][-1][0].lesion_note == "Lesions are listed once the run has finished."
    session.slice_done(result, 26, True)
    assert session.verdicts.get(result) is None  # not started on raw labels
    runner.computing = None  # the run ends
    session.run_ended(result)
    assert session.case_verdict().state is VerdictState.READY
    session.refresh_findings("entropy")
    assert len(seen["findings_ready"][-1][0].lesions) == 1
