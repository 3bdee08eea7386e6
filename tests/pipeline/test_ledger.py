"""The GPU-time ledger and the campaign's compile cache, through the CLI with the instant fake
trainer (tests/fixtures/pipeline_trainer.py; FAKE_DEVICE makes it report a GPU, FAKE_TIMINGS its
`timings_s`, and it fills TORCHINDUCTOR_CACHE_DIR as Inductor does)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from golfrun.cli import main
from tests.fixtures.pipeline_campaign import launches, start_golfrun, write_campaign
from tests.fixtures.waiting import wait_for

GPU_ENV = {"FAKE_DEVICE": "NVIDIA H200", "FAKE_TIMINGS": "1"}
JOB_STAGES = ("02-gate-a", "03-ablation", "04-gate-b")


def golfrun(tmp: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--campaign", str(tmp / "campaign.toml"), "--runs-dir", str(tmp / "runs")])


def summary(tmp: Path, folder: str) -> dict:
    return json.loads((tmp / "runs" / "t" / folder / "summary.json").read_text())


def all_jobs(tmp: Path) -> list[dict]:
    return [job for folder in JOB_STAGES for job in summary(tmp, folder)["jobs"]]


@pytest.fixture
def gpu_campaign(tmp_path: Path, shared_data: Path) -> Path:
    path = write_campaign(tmp_path, shared_data, trainer_env=GPU_ENV)
    # usd_per_gpu_hour is a root key: before the first table. verify-pod probes torch: the cache's key.
    text = path.read_text().replace('required_packages = ["json"]', 'required_packages = ["torch"]')
    path.write_text("usd_per_gpu_hour = 3.0\n" + text)
    return path


def test_ledger_sums_jobs_into_stages_and_the_campaign(tmp_path: Path, gpu_campaign: Path) -> None:
    result = golfrun(tmp_path, "run-all")
    assert result.exit_code == 0, result.output
    assert "GPU-minutes" in result.output and "USD" in result.output  # printed at the end of run-all
    for job in all_jobs(tmp_path):
        if job["backend"] == "-":  # gate-b reusing an upstream run holds nothing
            continue
        g = job["gpu_seconds"]
        assert job["gpus"] == 1
        parts = g["startup"] + g["train"] + g["serialize"] + g["eval"] + g["other"]
        named = g["startup"] + g["train"] + g["serialize"] + g["eval"]
        # wall × 1 GPU; the fake reports phases without spending them, and then its figures win
        assert g["total"] == pytest.approx(max(job["duration_s"], named), abs=0.002)
        assert parts == pytest.approx(g["total"], abs=0.01)
        assert g["train"] == pytest.approx(0.1) and g["serialize"] == pytest.approx(0.02)
        assert g["startup"] in (pytest.approx(0.25), pytest.approx(0.06))  # start-up + compile, cold or warm
    stage_totals = {}
    for folder in JOB_STAGES:
        s = summary(tmp_path, folder)
        assert s["schema"] == "golfrun.summary/2"
        assert s["gpu_seconds_total"] == pytest.approx(sum(j["gpu_seconds"].get("total", 0.0) for j in s["jobs"]), abs=1e-6)
        assert s["gpu_seconds_total"] > 0
        assert s["usd"] == pytest.approx(s["gpu_seconds_total"] / 3600 * 3.0, abs=1e-4)
        stage_totals[folder] = s["gpu_seconds_total"]

    status = golfrun(tmp_path, "status", "--json")
    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    rows = {r["stage"]: r for r in data["stages"]}
    assert rows["gate-a"]["gpu_seconds"] == pytest.approx(stage_totals["02-gate-a"])
    assert data["ledger"]["gpu_seconds_total"] == pytest.approx(sum(stage_totals.values()), abs=1e-3)
    assert data["ledger"]["usd_per_gpu_hour"] == 3.0
    assert data["ledger"]["usd"] == pytest.approx(data["ledger"]["gpu_seconds_total"] / 3600 * 3.0, abs=1e-4)
    table = golfrun(tmp_path, "status")
    assert "GPU-minutes" in table.output and "minutes" in table.output


def test_cached_jobs_count_zero_new_gpu_seconds_and_keep_their_figures(tmp_path: Path, gpu_campaign: Path) -> None:
    assert golfrun(tmp_path, "run-all").exit_code == 0
    first = {j["name"]: j for j in summary(tmp_path, "04-gate-b")["jobs"]}
    # A new tolerance reruns the gate-b stage, but none of its jobs (their keys are unchanged).
    again = golfrun(tmp_path, "run-all", "--set", "gate_b.mean_tolerance_bpb=0.02")
    assert again.exit_code == 0, again.output
    s = summary(tmp_path, "04-gate-b")
    assert s["gpu_seconds_total"] == 0.0 and s["usd"] == 0.0
    for job in s["jobs"]:
        assert job["cached"] is True
        assert job["gpu_seconds"].get("total", 0.0) == 0.0
        if first[job["name"]]["backend"] != "-":
            assert job["gpu_seconds_original"] == first[job["name"]]["gpu_seconds"]
            assert job["compile"] == first[job["name"]]["compile"]
    status = json.loads(golfrun(tmp_path, "status", "--json").output)
    assert {r["stage"]: r for r in status["stages"]}["gate-b"]["gpu_seconds"] == 0.0


def test_every_job_shares_one_compile_cache_cold_then_warm(tmp_path: Path, gpu_campaign: Path) -> None:
    assert golfrun(tmp_path, "run-all").exit_code == 0
    folders = sorted((tmp_path / "runs" / "t").glob("0[234]-*/jobs/*/job.json"))
    dirs = {json.loads(p.read_text())["full_env"]["TORCHINDUCTOR_CACHE_DIR"] for p in folders}
    assert len(folders) >= 6 and len(dirs) == 1  # gate-a, the ablation, 3 gate-b seeds: one cache
    cache = Path(dirs.pop()).parent
    assert cache.parent == tmp_path / "runs" / "t" / "compile-cache"
    key = json.loads((cache / "key.json").read_text())
    facts = summary(tmp_path, "00-verify-pod")["decision"]["facts"]
    assert key["torch"] == facts["torch"] and key["gpu"] == "cpu"  # verify-pod's probe of this machine
    jobs = [j for j in all_jobs(tmp_path) if j["backend"] != "-"]
    assert [j["compile"]["cache"] for j in jobs] == ["cold"] + ["warm"] * (len(jobs) - 1)
    assert jobs[0]["compile"]["seconds"] == pytest.approx(0.2)
    assert all(j["compile"]["seconds"] == pytest.approx(0.01) for j in jobs[1:])


def test_compile_cache_off_sets_nothing(tmp_path: Path, gpu_campaign: Path) -> None:
    result = golfrun(tmp_path, "run-all", "--set", "compile_cache.enabled=false")
    assert result.exit_code == 0, result.output
    for path in (tmp_path / "runs" / "t").glob("0[234]-*/jobs/*/job.json"):
        assert "TORCHINDUCTOR_CACHE_DIR" not in json.loads(path.read_text())["full_env"]
    assert {j["compile"]["cache"] for j in all_jobs(tmp_path) if j["backend"] != "-"} == {"off"}
    assert not (tmp_path / "runs" / "t" / "compile-cache").exists()


def test_cpu_jobs_count_cpu_seconds_and_no_price(tmp_path: Path, campaign: Path) -> None:
    result = golfrun(tmp_path, "run-all")
    assert result.exit_code == 0, result.output
    s = summary(tmp_path, "02-gate-a")
    assert s["gpu_seconds_total"] == 0.0 and s["cpu_seconds_total"] > 0 and s["usd"] is None
    assert s["jobs"][0]["gpus"] == 0 and s["jobs"][0]["compile"]["cache"] == "off"
    assert "CPU-minutes" in result.output
    ledger = json.loads(golfrun(tmp_path, "status", "--json").output)["ledger"]
    assert ledger["usd"] is None and ledger["cpu_seconds_total"] > 0


def test_a_failed_attempt_stays_in_the_ledger_when_the_stage_is_rerun(tmp_path: Path, shared_data: Path) -> None:
    """gate-a's job fails once (exit 3), then the rerun passes in a fresh job folder with a new summary:
    the campaign's totals count both attempts. (A CPU campaign: its device-seconds are CPU-seconds,
    the same ledger path as GPU-seconds on a GPU.)"""
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_CRASH_ONCE": str(tmp_path / "crashed")})
    first = golfrun(tmp_path, "run-all")
    assert first.exit_code == 12, first.output  # gate-a ERROR
    failed = summary(tmp_path, "02-gate-a")["jobs"][0]
    assert failed["state"] == "FAILED" and failed["gpu_seconds"]["total"] > 0
    again = golfrun(tmp_path, "run-all")
    assert again.exit_code == 0, again.output
    gate_a = summary(tmp_path, "02-gate-a")
    assert gate_a["verdict"] == "PASS" and gate_a["jobs"][0]["state"] == "SUCCEEDED"  # the failed run is gone from it
    passed = gate_a["jobs"][0]["gpu_seconds"]["total"]

    records = sorted((tmp_path / "runs" / "t" / "02-gate-a" / "attempts").glob("*.json"))
    attempts = [json.loads(p.read_text()) for p in records]
    assert [a["state"] for a in sorted(attempts, key=lambda a: a["finished_at"])] == ["FAILED", "SUCCEEDED"]
    assert {a["schema"] for a in attempts} == {"golfrun.ledger-attempt/1"} and {a["job"] for a in attempts} == {"seed0"}
    assert sorted(a["gpu_seconds"]["total"] for a in attempts) == sorted([failed["gpu_seconds"]["total"], passed])

    status = json.loads(golfrun(tmp_path, "status", "--json").output)
    row = {r["stage"]: r for r in status["stages"]}["gate-a"]
    assert row["attempts"] == 2 and row["attempts_failed"] == 1
    assert row["spent_cpu_seconds"] == pytest.approx(failed["gpu_seconds"]["total"] + passed, abs=1e-3)
    assert row["cpu_seconds"] == pytest.approx(gate_a["cpu_seconds_total"])  # the latest run alone
    new_only = sum(summary(tmp_path, f)["cpu_seconds_total"] for f in JOB_STAGES)
    assert status["ledger"]["cpu_seconds_total"] == pytest.approx(new_only + failed["gpu_seconds"]["total"], abs=1e-3)
    assert status["ledger"]["attempts_failed"] == 1
    table = golfrun(tmp_path, "status").output
    assert "(1 failed)" in table and "1 failed attempt(s) included" in table
    spend = json.loads(CliRunner().invoke(main, ["spend", "--json", "--runs-dir", str(tmp_path / "runs")]).output)
    assert spend[0]["cpu_seconds"] == pytest.approx(status["ledger"]["cpu_seconds_total"], abs=1e-3)
    assert spend[0]["attempts_failed"] == 1
    # preserve archives the attempt records with their stage: the failed attempt's cost is kept with the results
    with tarfile.open(next((tmp_path / "runs" / "t" / "05-preserve").glob("*.tar.gz"))) as tar:
        archived = [n for n in tar.getnames() if "/02-gate-a/attempts/" in n]
    assert sorted(Path(n).name for n in archived) == sorted(p.name for p in records)


def test_an_attempt_stopped_by_sigterm_is_recorded_as_interrupted(tmp_path: Path, shared_data: Path) -> None:
    block = tmp_path / "block"
    block.touch()
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "0", "FAKE_BLOCK_FILE": str(block)})
    args = ["run-all", "--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]
    proc = start_golfrun(tmp_path, *args, stdout=subprocess.PIPE)
    try:
        assert wait_for(lambda: bool(launches(tmp_path)))
        time.sleep(0.5)  # the trainer holds its "GPU" for a while before golfrun is stopped
        os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    block.unlink()
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "t" / "02-gate-a" / "attempts").glob("*.json")]
    assert record["state"] == "INTERRUPTED" and record["job"] == "seed0"
    assert record["duration_s"] >= 0.5 and record["gpu_seconds"]["total"] == pytest.approx(record["duration_s"], abs=0.01)
    assert golfrun(tmp_path, "run-all").exit_code == 0  # the rerun counts both
    ledger = json.loads(golfrun(tmp_path, "status", "--json").output)["ledger"]
    assert ledger["attempts_failed"] == 1 and ledger["cpu_seconds_total"] > record["gpu_seconds"]["total"]


def test_old_summary_schema_stays_readable() -> None:
    from golfrun.summary import Summary

    old = {"schema": "golfrun.summary/1", "stage": "gate-a", "campaign": "t", "verdict": "PASS",
           "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:01:00Z", "fingerprint": "x",
           "jobs": [{"name": "seed0", "env": {}, "backend": "local", "cached": False, "duration_s": 5.0}]}
    s = Summary.from_dict(old)
    assert s.gpu_seconds_total == 0.0 and s.usd is None and s.jobs[0].gpu_seconds == {}


def test_a_log_only_trainer_gives_what_its_lines_allow(tmp_path: Path, shared_data: Path) -> None:
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_LOG_ONLY": "1", "FAKE_TRAIN_MS": "4000"})
    for stage in ("verify-pod", "download-data", "gate-a"):
        result = golfrun(tmp_path, stage)
        assert result.exit_code == 0, result.output
    job = summary(tmp_path, "02-gate-a")["jobs"][0]
    g = job["gpu_seconds"]  # no results.json: train and eval from the logged times, the rest is "other"
    assert g["train"] == pytest.approx(4.0) and g["eval"] == pytest.approx(1.5) and g["serialize"] == 0.0
    assert g["total"] == pytest.approx(g["train"] + g["eval"] + g["startup"] + g["other"], abs=0.01)


def test_the_price_is_the_campaigns_else_the_pods_rate_per_gpu() -> None:
    from golfrun import ledger

    assert ledger.price_per_gpu_hour(2.5, {"cost_per_hr": 21.5, "gpu_count": 8}) == 2.5
    assert ledger.price_per_gpu_hour(0.0, {"cost_per_hr": 21.5, "gpu_count": 8}) == pytest.approx(2.6875)
    assert ledger.price_per_gpu_hour(0.0, None) is None and ledger.usd(3600.0, None) is None
    assert ledger.usd(7200.0, 2.6875) == pytest.approx(5.375)


def test_a_summary_keeps_the_ttt_evaluations_compile_figures() -> None:
    from golfrun.trainer.results import RESULTS_SCHEMA, TrainerResult

    entry = {"label": "quantized_ttt_phased", "val_loss": 2.77, "val_bpb": 1.07, "eval_time_ms": 5.0,
             "ttt": {"warmup_s": 152.4, "graphs_compiled_in_timer": 0}}
    result = TrainerResult.from_dict({"schema": RESULTS_SCHEMA, "evals": [entry], "final": entry})
    assert result.to_dict()["final"]["ttt"] == {"warmup_s": 152.4, "graphs_compiled_in_timer": 0}
    assert result.to_dict()["evals"][0]["ttt"]["graphs_compiled_in_timer"] == 0


def _kill_golfrun_when(tmp_path: Path, ready, hold_s: float = 0.0) -> None:  # type: ignore[no-untyped-def]
    """Start run-all as a process and SIGKILL it (nothing of it runs afterwards) `hold_s` after `ready()` holds."""
    args = ["run-all", "--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]
    proc = start_golfrun(tmp_path, *args)
    try:
        assert wait_for(ready)
        time.sleep(hold_s)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def _epoch(iso: str) -> float:
    from golfrun.fileio import epoch_of

    value = epoch_of(iso)
    assert value is not None
    return value


def test_a_run_adopted_after_golfrun_was_killed_writes_its_attempt_record(tmp_path: Path, shared_data: Path) -> None:
    """golfrun is SIGKILLed after gate-a's trainer wrote results.json (FAKE_BLOCK_AFTER; the job guard then
    ends the trainer and notes when): the rerun adopts the result and records the attempt from job.json's
    start to that end, its phases from timings_s."""
    block = tmp_path / "block"
    block.touch()
    write_campaign(tmp_path, shared_data, trainer_env={**GPU_ENV, "FAKE_BLOCK_SEED": "0", "FAKE_BLOCK_FILE": str(block),
                                                       "FAKE_BLOCK_STAGE": "gate-a", "FAKE_BLOCK_AFTER": "1"})
    job = tmp_path / "runs" / "t" / "02-gate-a" / "jobs" / "seed0"
    _kill_golfrun_when(tmp_path, lambda: (job / "results.json").is_file())
    assert wait_for(lambda: (job / "job.orphaned.json").is_file())  # the guard ends the orphan within 0.1 s
    block.unlink()
    attempts = tmp_path / "runs" / "t" / "02-gate-a" / "attempts"
    assert not list(attempts.glob("*.json"))  # nothing of the killed golfrun wrote it
    started = json.loads((job / "job.json").read_text())["submitted_at"]
    ended = json.loads((job / "job.orphaned.json").read_text())["ended_epoch"]
    assert ended >= (job / "results.json").stat().st_mtime
    assert golfrun(tmp_path, "run-all").exit_code == 0
    assert json.loads((job / "job.json").read_text())["adopted"] is True
    (record,) = [json.loads(p.read_text()) for p in attempts.glob("*.json")]
    assert (record["state"], record["source"], record["started_at"]) == ("SUCCEEDED", "adopted", started)
    assert record["duration_s"] == pytest.approx(ended - _epoch(started), abs=0.002)
    g = record["gpu_seconds"]
    assert record["gpus"] == 1 and g["train"] == pytest.approx(0.1) and g["serialize"] == pytest.approx(0.02)
    assert g["total"] == pytest.approx(max(record["duration_s"], 0.4), abs=0.01)  # wall × 1 GPU, or its phases
    assert summary(tmp_path, "02-gate-a")["jobs"][0]["gpu_seconds"] == g  # the summary counts the adopted run too
    rows = {r["stage"]: r for r in json.loads(golfrun(tmp_path, "status", "--json").output)["stages"]}
    assert rows["gate-a"]["attempts"] == 1 and rows["gate-a"]["spent_gpu_seconds"] == pytest.approx(g["total"])


def test_an_attempt_golfrun_was_sigkilled_under_is_reconstructed_by_the_next_run(tmp_path: Path,
                                                                                  shared_data: Path) -> None:
    """golfrun is SIGKILLed 2 s into gate-a's training (its job guard then ends the trainer and notes
    when): no attempt record. Until a run reaches the job again, `status` counts it from job.json (its
    `held`) as held to the guard's note, one job not recorded yet. The next run finds the job folder
    SUBMITTED without a record and records it before cleaning the folder, INTERRUPTED: from job.json's
    start to the end the guard noted, not to the trainer's last log line (written at its start); without
    the note (the guard killed too), the folder's last write would be the end, a lower bound. It is then
    counted once, as that record."""
    block = tmp_path / "block"
    block.touch()
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_BLOCK_SEED": "0", "FAKE_BLOCK_FILE": str(block)})
    job = tmp_path / "runs" / "t" / "02-gate-a" / "jobs" / "seed0"
    _kill_golfrun_when(tmp_path, lambda: bool(launches(tmp_path)), hold_s=2.0)
    assert wait_for(lambda: (job / "job.orphaned.json").is_file())  # the guard ends the orphan within 0.1 s
    block.unlink()
    doc = json.loads((job / "job.json").read_text())
    assert doc["state"] == "SUBMITTED" and not (job.parents[1] / "attempts").exists()
    ended = json.loads((job / "job.orphaned.json").read_text())["ended_epoch"]
    assert doc["held"] == {"processes": 1, "gpus": 0, "usd_per_gpu_hour": None}  # a CPU campaign, no price
    status = golfrun(tmp_path, "status", "--json")
    (gate_a,) = [r for r in json.loads(status.output)["stages"] if r["stage"] == "gate-a"]
    assert (gate_a["attempts"], gate_a["attempts_unrecorded"]) == (0, 1)
    assert gate_a["spent_cpu_seconds"] == pytest.approx(ended - _epoch(doc["submitted_at"]), abs=0.002)
    assert json.loads(status.output)["ledger"]["attempts_unrecorded"] == 1
    assert "1 job(s) not recorded yet, running or left by a killed golfrun" in golfrun(tmp_path, "status").output
    spend = CliRunner().invoke(main, ["spend", "--runs-dir", str(tmp_path / "runs")])
    assert "(1 job(s) not recorded yet included, so far)" in spend.output, spend.output
    rerun = golfrun(tmp_path, "run-all")
    assert rerun.exit_code == 0, rerun.output
    assert "gate-a: job seed0: recorded the attempt a killed golfrun left unrecorded" in rerun.output
    assert "to the end its guard noted" in rerun.output
    records = [json.loads(p.read_text()) for p in (job.parents[1] / "attempts").glob("*.json")]
    (lost,) = [r for r in records if r["source"] == "reconstructed"]
    assert (lost["state"], lost["started_at"], lost["job"]) == ("INTERRUPTED", doc["submitted_at"], "seed0")
    assert lost["duration_s"] == pytest.approx(ended - _epoch(doc["submitted_at"]), abs=0.002)
    assert lost["duration_s"] >= 2.0  # the trainer held its "GPU" that long, silent after its first lines
    assert lost["gpus"] == 0 and lost["gpu_seconds"]["total"] == pytest.approx(lost["duration_s"], abs=0.002)
    assert [r["state"] for r in records if r is not lost] == ["SUCCEEDED"]
    assert (job.parents[1] / "attempts" / f"seed0--{lost['finished_at'].replace('-', '').replace(':', '')}--"
            f"{doc['attempt_id']}.json").is_file()  # the id its job.json named
    after = json.loads(golfrun(tmp_path, "status", "--json").output)
    ledger = after["ledger"]
    assert ledger["attempts"] == 2 + 3 + 2 and ledger["attempts_failed"] == 1  # gate-a twice, 3 ablation jobs, 2 new gate-b seeds
    (gate_a,) = [r for r in after["stages"] if r["stage"] == "gate-a"]
    assert gate_a["attempts_unrecorded"] == 0 and ledger["attempts_unrecorded"] == 0  # counted once: as its record
    assert gate_a["spent_cpu_seconds"] == pytest.approx(sum(r["gpu_seconds"]["total"] for r in records), abs=0.002)
    assert golfrun(tmp_path, "run-all").exit_code == 0  # a third run records nothing more
    assert len(list((job.parents[1] / "attempts").glob("*.json"))) == 2


def test_jobs_without_a_record_yet_are_counted_as_held_so_far(tmp_path: Path) -> None:
    """ledger.unrecorded_attempts over a stage folder: a SUBMITTED job.json with `held` (8 GPUs at 3 USD per
    GPU-hour) counts from its start to its folder's last write, priced; one from before `held`, one whose
    attempt is recorded, one torn mid-write and one that finished are left out. stage_spend adds it to the recorded attempts,
    not to their count or the failed ones."""
    from golfrun import ledger
    from golfrun.fileio import epoch_of

    stage = tmp_path / "02-gate-a"
    start = time.time() - 100.0

    def job(name: str, **doc: object) -> Path:
        folder = stage / "jobs" / name
        folder.mkdir(parents=True)
        base = {"state": "SUBMITTED", "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                "attempt_id": f"id-{name}", "backend": "local",
                "held": {"processes": 8, "gpus": 8, "usd_per_gpu_hour": 3.0}}
        (folder / "job.json").write_text(json.dumps({**base, **doc}))
        os.utime(folder / "job.json", (start, start))
        return folder

    log = job("running") / "job.log"
    log.write_text("step 1\n")
    os.utime(log, (start + 40.0, start + 40.0))  # its last write: 40 s after its start
    job("old", held=None)
    (job("torn") / "job.json").write_bytes(b'{"state": "SUBM\xff')  # a write cut short: not even UTF-8
    job("done", state="SUCCEEDED")
    job("recorded")
    ledger.record_attempt(stage, ledger.Attempt(
        stage="gate-a", job="recorded", state="FAILED", started_at="x", finished_at="2026-12-05T00:00:00Z",
        duration_s=10.0, backend="local", gpus=8, gpu_seconds={"total": 80.0}, usd=0.0667), "id-recorded")

    (pending,) = ledger.unrecorded_attempts(stage)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    assert (pending.job, pending.state, pending.source, pending.stage, pending.gpus) == (
        "running", "UNRECORDED", "unrecorded", "gate-a", 8)
    held_s = 40.0 + start - epoch_of(started_at)  # job.json's start has whole seconds
    assert pending.duration_s == pytest.approx(held_s, abs=0.01)
    assert pending.total == pytest.approx(8 * held_s, abs=0.1)
    assert pending.usd == pytest.approx(8 * held_s / 3600 * 3.0, abs=1e-3)
    spend = ledger.stage_spend(stage, None)
    assert (spend.attempts, spend.failed, spend.unrecorded) == (1, 1, 1)
    assert spend.gpu_seconds == pytest.approx(80.0 + 8 * held_s, abs=0.1)
    assert spend.usd == pytest.approx(0.0667 + 8 * held_s / 3600 * 3.0, abs=1e-3)
