"""The learning-curve early abort's pure parts (golfrun/trainer/curve_abort.py), its campaign keys,
and the local backend stopping a real subprocess that trails its reference
(tests/fixtures/trainers/fake_curve_trainer.py prints the record's train-loss lines step by step)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from golfrun.backends.base import Job, JobState, wait
from golfrun.backends.local import LocalBackend
from golfrun.campaign import load_campaign
from golfrun.errors import CampaignError
from golfrun.trainer.curve_abort import ABORT_FILE, ABORT_SCHEMA, CurveAbort, CurveWatch, decide, reference_at, train_losses

GOLDEN = Path(__file__).resolve().parents[1] / "trainer_results" / "golden"
CURVE_TRAINER = Path(__file__).resolve().parents[1] / "fixtures" / "trainers" / "fake_curve_trainer.py"
REFERENCE = ((1, 6.0), (4, 5.0), (8, 4.0), (12, 3.5))


def rule(steps: tuple[int, ...] = (4, 8), margin: float = 0.2) -> CurveAbort:
    return CurveAbort(steps, margin, REFERENCE, "test reference")


def line(step: int, loss: float, of: int = 16) -> str:
    return f"{step}/{of} train_loss: {loss:.4f} train_time: 0.0m tok/s: 1000"


def test_reference_at_a_logged_step_between_two_and_outside() -> None:
    assert reference_at(REFERENCE, 8) == 4.0
    assert reference_at(REFERENCE, 6) == pytest.approx(4.5)  # linear between steps 4 and 8
    assert reference_at(REFERENCE, 13) is None  # past the reference's last point: never guessed
    assert reference_at(REFERENCE, 0) is None


def test_trailing_means_above_the_reference_by_more_than_the_margin() -> None:
    assert decide(rule(), 8, 8, 4.21).trailing
    assert not decide(rule(), 8, 8, 4.2).trailing  # exactly at reference + margin: still within
    assert not decide(rule(), 8, 8, 3.0).trailing  # ahead of the reference
    diverged = decide(rule(), 8, 8, float("nan"))
    assert diverged.trailing and diverged.observed_loss is None  # a NaN loss is trailing, written as null
    beyond = decide(rule(), 8, 20, 9.0)
    assert not beyond.trailing and beyond.reference_loss is None  # no reference that far: not decided
    assert "not checked" in beyond.describe()


def test_watch_checks_at_the_first_logged_step_past_each_check_step() -> None:
    watch = CurveWatch(rule(steps=(3, 8)))
    assert watch.feed(line(1, 9.0)) is None and watch.checks == []  # before the first check step
    assert watch.feed("warmup_step: 2/2") is None
    assert watch.feed(line(4, 5.1)) is None  # check 3 is seen at step 4: 5.1 <= 5.0 + 0.2
    [first] = watch.checks
    assert (first.check_step, first.step, first.reference_loss, first.trailing) == (3, 4, 5.0, False)
    hit = watch.feed(line(10, 4.0))  # check 8 at step 10: reference 3.75 (between 8 and 12) + 0.2 < 4.0
    assert hit is not None and hit.trailing and watch.abort == hit
    assert (hit.check_step, hit.step, hit.iterations, hit.observed_loss) == (8, 10, 16, 4.0)
    assert hit.reference_loss == pytest.approx(3.75)
    assert watch.feed(line(12, 99.0)) is None and len(watch.checks) == 2  # decided: later lines change nothing


def test_watch_reads_the_naive_baseline_s_lines_and_a_console_prefix() -> None:
    watch = CurveWatch(rule(steps=(4,)))
    watch.feed("step:4/20000 train_loss:5.9000 train_time:44ms step_avg:44.16ms")
    assert watch.abort is not None and watch.abort.observed_loss == 5.9
    prefixed = CurveWatch(rule(steps=(4,)))
    prefixed.feed("1776142578.331 " + line(4, 5.1))
    assert prefixed.checks and not prefixed.checks[0].trailing


def test_train_losses_of_real_captured_logs() -> None:
    record = train_losses((GOLDEN / "record_seed0_console.txt").read_text().splitlines())
    assert record[:2] == [(1, 9.0089), (2, 12.2847)] and len(record) == 14
    assert [s for s, _ in record] == sorted(s for s, _ in record)
    baseline = train_losses((GOLDEN / "baseline.txt").read_text().splitlines())
    assert baseline[:3] == [(1, 6.937), (2, 16.8524), (200, 2.8694)]


@pytest.mark.parametrize("setting, words", [
    ("ablation.abort_at_steps=[8, 4]", "ablation.abort_at_steps"),
    ("ablation.abort_at_steps=[0]", "ablation.abort_at_steps"),
    ("ablation.abort_at_steps=[4, 4]", "ablation.abort_at_steps"),
    ("ablation.abort_margin_nats=0", "abort_margin_nats"),
    ("ablation.abort_margin_nats=-0.1", "abort_margin_nats"),
])
def test_bad_abort_settings_name_the_key(setting: str, words: str) -> None:
    with pytest.raises(CampaignError, match=words):
        load_campaign("tiny", [setting])


def test_abort_is_off_by_default_and_its_keys_load() -> None:
    assert list(load_campaign("tiny").ablation.abort_at_steps) == []
    c = load_campaign("tiny", ["ablation.abort_at_steps=[1000, 2000]", "ablation.abort_margin_nats=0.05"])
    assert list(c.ablation.abort_at_steps) == [1000, 2000] and c.ablation.abort_margin_nats == 0.05


# ------------------------------------------------------------------------ the backend stops the run


def curve_job(tmp_path: Path, name: str, delta: float, steps: int, pause: float, abort: CurveAbort) -> Job:
    env = {"FAKE_LOSS_DELTA": str(delta), "FAKE_STEPS": str(steps), "FAKE_STEP_SLEEP": str(pause)}
    return Job(name=name, script=str(CURVE_TRAINER), env=env, workdir=str(tmp_path / name), abort=abort)


def fake_reference(steps: int) -> tuple[tuple[int, float], ...]:
    return tuple((s, 6.0 - 0.1 * s) for s in range(1, steps + 1))  # the fake trainer's own curve, delta 0


def test_the_local_backend_stops_a_trailing_run_at_the_check_step(tmp_path: Path) -> None:
    def broken_display(_job: Job, _line: str) -> None:
        raise RuntimeError("a display bug")  # must stop neither the log nor the watch

    backend = LocalBackend(on_line=broken_display, grace_s=2.0)
    abort = CurveAbort((5,), 0.5, fake_reference(200), "the fake's curve")
    handle = backend.submit(curve_job(tmp_path, "slow", 1.0, 200, 0.05, abort))  # 10 s if never stopped
    status = wait(backend, handle, deadline_s=60, poll_interval_s=0.05)
    assert status.state is JobState.ABORTED and "step 5" in status.reason
    note = json.loads((tmp_path / "slow" / ABORT_FILE).read_text())
    assert note["schema"] == ABORT_SCHEMA and note["trailing"] is True
    assert (note["check_step"], note["step"], note["iterations"]) == (5, 5, 200)
    assert math.isclose(note["observed_loss"], 6.0 - 0.5 + 1.0) and math.isclose(note["reference_loss"], 5.5)
    assert note["margin_nats"] == 0.5 and note["reference_source"] == "the fake's curve"
    log = (tmp_path / "slow" / "job.log").read_text()
    assert "5/200 train_loss" in log and "200/200 train_loss" not in log  # stopped long before its end
    assert "val_bpb" not in log


def test_a_run_within_the_margin_runs_to_its_end(tmp_path: Path) -> None:
    backend = LocalBackend(grace_s=2.0)
    abort = CurveAbort((2, 4), 0.5, fake_reference(6), "the fake's curve")
    handle = backend.submit(curve_job(tmp_path, "close", 0.4, 6, 0.0, abort))
    status = wait(backend, handle, deadline_s=60, poll_interval_s=0.05)
    assert status.state is JobState.SUCCEEDED
    assert not (tmp_path / "close" / ABORT_FILE).exists()
    assert "val_bpb:2.0" in (tmp_path / "close" / "job.log").read_text()


# ------------------------------------------------------ the stage, with the instant fake trainer


def test_every_trained_variant_aborted_is_a_kill_and_an_array_task_exits_0(tmp_path: Path, campaign: Path) -> None:
    """tests/fixtures/pipeline_trainer.py logs train loss 8, 7, 6 at steps 1-3 (plus FAKE_LOSS_DELTA),
    then waits while FAKE_BLOCK_FILE exists: a variant 1 nat behind gate-a is stopped at step 2."""
    from click.testing import CliRunner

    from golfrun.cli import main

    block = tmp_path / "block"
    block.write_text("")  # the variants wait here until aborted (at most 2 minutes)
    env = f'FAKE_LOSS_DELTA = "1.0", FAKE_BLOCK_FILE = "{block}"'
    sets = ["ablation.mode=train", "ablation.abort_at_steps=[2]", "ablation.abort_margin_nats=0.5",
            f"ablation.variants=[{{name = \"w1\", env = {{{env}}}}}, {{name = \"w2\", env = {{{env}}}}}]"]

    def golfrun(*args: str) -> object:
        return CliRunner().invoke(main, [*args, "--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs"),
                                         *[a for s in sets for a in ("--set", s)]])

    for stage in ("verify-pod", "download-data", "gate-a"):
        assert golfrun(stage).exit_code == 0  # type: ignore[attr-defined]
    task = golfrun("ablation", "--job-index", "0")  # a Slurm array task: an abort is no error
    assert task.exit_code == 0, task.output  # type: ignore[attr-defined]
    result = golfrun("ablation")
    assert result.exit_code == 10, result.output  # type: ignore[attr-defined]
    assert "job w1: cached abort" in result.output  # type: ignore[attr-defined]
    s = json.loads((tmp_path / "runs" / "t" / "03-ablation" / "summary.json").read_text())
    assert s["verdict"] == "KILL" and s["reasons"][0] == "every variant was aborted: none finished to be compared"
    assert [(a["name"], a["step"], a["observed_loss"], a["reference_loss"]) for a in s["decision"]["aborted"]] == \
        [("w1", 2, 8.0, 7.0), ("w2", 2, 8.0, 7.0)]
    assert "promoted" not in s["decision"] and [j["state"] for j in s["jobs"]] == ["ABORTED", "ABORTED"]
