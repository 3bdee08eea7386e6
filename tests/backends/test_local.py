"""The local backend with real subprocesses and fake trainers (tests/fixtures/trainers/)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from golfrun.backends.base import Job, JobState, wait
from golfrun.backends.local import LAUNCH_FILE, MARKER_ENV, PID_FILE, LocalBackend, reap_stale
from golfrun.errors import BackendError
from golfrun.secrets import REDACTED
from golfrun.trainer.results import load_results
from golfrun.transport.local import find_processes_with_env, process_start_time
from tests.fixtures.waiting import wait_for

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trainers"


def trainer(name: str) -> str:
    return str(FIXTURES / f"fake_{name}_trainer.py")


def job(tmp_path: Path, name: str, kind: str, env: dict[str, str] | None = None, **kw) -> Job:  # type: ignore[no-untyped-def]
    return Job(name=name, script=trainer(kind), env=env or {}, workdir=str(tmp_path / name), **kw)


def alive(pid: int) -> bool:
    return process_start_time(pid) is not None


def test_trainer_with_results_json(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    backend = LocalBackend(on_line=lambda j, line: lines.append((j.name, line)))
    j = job(tmp_path, "seed0", "record", {"SEED": "0", "FAKE_WRITE_RESULTS": "1"})
    handle = backend.submit(j)
    status = wait(backend, handle, deadline_s=60, poll_interval_s=0.1)
    assert status.state is JobState.SUCCEEDED and status.exit_code == 0
    assert status.backend_ids == [handle.id]
    workdir = Path(backend.fetch(handle))
    assert workdir == tmp_path / "seed0"
    result = load_results(workdir)
    assert result.source == "results.json"
    assert result.run_id == "seed0"  # RUN_ID defaults to the job's name
    assert result.seed == 0
    assert result.final is not None and result.final.val_bpb == 1.07216564
    # the record's log file lands in ARTIFACT_DIR = the job folder; the full output in job.log
    assert (workdir / "seed0.txt").is_file()
    log = (workdir / "job.log").read_text()
    assert "a warning on stderr" in log and "quantized_ttt_phased" in log
    assert ("seed0", "model_params:35944602") in lines
    launch = json.loads((workdir / LAUNCH_FILE).read_text())
    assert launch["argv"] == [sys.executable, j.script]
    assert launch["env"]["ARTIFACT_DIR"] == str(workdir)
    assert launch["env"]["RUN_ID"] == "seed0"
    assert len(launch["script_sha256"]) == 64
    assert not (workdir / PID_FILE).exists()  # removed once the job finished


def test_upstream_style_trainer_is_read_from_its_log(tmp_path: Path) -> None:
    backend = LocalBackend()
    handle = backend.submit(job(tmp_path, "upstream", "record", {"RUN_ID": "train0", "SEED": "0"}))
    assert wait(backend, handle, deadline_s=60, poll_interval_s=0.1).state is JobState.SUCCEEDED
    workdir = Path(backend.fetch(handle))
    assert not (workdir / "results.json").exists()
    result = load_results(workdir)
    assert result.source == "log"
    assert result.run_id == "train0"
    assert result.steps == 4832 and result.stopped_early
    assert result.final is not None and (result.final.val_loss, result.final.val_bpb) == (2.76951521, 1.07216564)
    assert result.artifact is not None and result.artifact.total_bytes == 15_996_697
    assert result.artifact.path == str(workdir / "final_model.int6.ptz")


def test_trainer_crash_is_failed_with_the_log_tail(tmp_path: Path) -> None:
    backend = LocalBackend()
    handle = backend.submit(job(tmp_path, "crash", "crash"))
    status = wait(backend, handle, deadline_s=60, poll_interval_s=0.1)
    assert status.state is JobState.FAILED
    assert status.exit_code == 1
    assert status.reason.startswith("exit code 1; last lines of ")
    assert "RuntimeError: CUDA error: an illegal memory access was encountered" in status.reason
    assert backend.poll(handle) is status  # stable once finished
    backend.cancel(handle)  # too late: the outcome stands
    assert backend.poll(handle).state is JobState.FAILED


def test_cancel_stops_the_whole_tree(tmp_path: Path) -> None:
    backend = LocalBackend(grace_s=5)
    handle = backend.submit(job(tmp_path, "sleep", "sleep"))
    workdir = tmp_path / "sleep"
    assert wait_for(lambda: "warmup_step" in (workdir / "job.log").read_text())
    assert backend.poll(handle).state is JobState.RUNNING
    child = int((workdir / "child.pid").read_text())
    backend.cancel(handle)
    status = backend.poll(handle)
    assert status.state is JobState.CANCELLED and status.reason == "cancelled"
    assert not alive(int(handle.id)) and wait_for(lambda: not alive(child), 10)


def test_time_limit_cancels_with_timeout_reason(tmp_path: Path) -> None:
    backend = LocalBackend(grace_s=0.5)
    handle = backend.submit(job(tmp_path, "slow", "sleep", {"FAKE_IGNORE_SIGTERM": "1"}, time_limit_s=1.0))
    status = wait(backend, handle, deadline_s=60, poll_interval_s=0.1)
    assert status.state is JobState.CANCELLED
    assert status.reason == "TIMEOUT after 1s"
    child = int((tmp_path / "slow" / "child.pid").read_text())
    assert wait_for(lambda: not alive(child), 10)


def test_secrets_never_reach_the_job_folder(tmp_path: Path) -> None:
    secret = "hf_SeCrEtVaLuE0123456789abcdef"
    backend = LocalBackend()
    handle = backend.submit(job(tmp_path, "leaky", "record", {"HF_TOKEN": secret, "FAKE_PRINT_SECRET": "1"}))
    assert wait(backend, handle, deadline_s=60, poll_interval_s=0.1).state is JobState.SUCCEEDED
    log = (tmp_path / "leaky" / "job.log").read_text()
    assert "debug: token is ***REDACTED***" in log
    for path in (tmp_path / "leaky").iterdir():
        if path.name != "final_model.int6.ptz":
            assert secret not in path.read_text(), path.name
    assert json.loads((tmp_path / "leaky" / LAUNCH_FILE).read_text())["env"]["HF_TOKEN"] == REDACTED


def test_two_processes_through_torch_distributed_run(tmp_path: Path) -> None:
    """nproc_per_node=2 → `python -m torch.distributed.run --standalone`; the ranks meet (gloo all_reduce)."""
    backend = LocalBackend()
    j = job(tmp_path, "dist", "dist", nproc_per_node=2)
    assert backend.command(j) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", j.script,
    ]
    handle = backend.submit(j)
    status = wait(backend, handle, deadline_s=240, poll_interval_s=0.2)
    assert status.state is JobState.SUCCEEDED, status.reason
    ranks = [json.loads((tmp_path / "dist" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [
        {"rank": "0", "world_size": "2", "local_rank": "0", "run_id": "dist", "sum_of_ranks_plus_one": 3},
        {"rank": "1", "world_size": "2", "local_rank": "1", "run_id": "dist", "sum_of_ranks_plus_one": 3},
    ]


def test_cancel_of_a_torchrun_job_stops_every_worker(tmp_path: Path) -> None:
    backend = LocalBackend(grace_s=5)
    handle = backend.submit(job(tmp_path, "dsleep", "sleep", nproc_per_node=2))
    workdir = tmp_path / "dsleep"
    names = ("trainer0.pid", "trainer1.pid", "child0.pid", "child1.pid")

    def pids_written() -> bool:
        return all((workdir / n).is_file() and (workdir / n).read_text() for n in names)

    assert wait_for(pids_written, 60)
    pids = [int((workdir / n).read_text()) for n in names]
    assert all(alive(p) for p in pids)
    backend.cancel(handle)
    assert backend.poll(handle).state is JobState.CANCELLED
    assert wait_for(lambda: not any(alive(p) for p in pids), 10)


def test_reap_stale_after_golfrun_died(tmp_path: Path) -> None:
    """A golfrun killed mid-job leaves the trainer running; the next submit into the folder stops it."""
    first = LocalBackend(grace_s=2)
    old = first.submit(job(tmp_path, "job", "sleep"))
    workdir = tmp_path / "job"
    assert wait_for(lambda: (workdir / "child.pid").is_file() and (workdir / "child.pid").read_text() != "")
    child = int((workdir / "child.pid").read_text())
    assert (workdir / PID_FILE).is_file()
    # a new golfrun process knows nothing of `first`; it sees the pid file
    second = LocalBackend(grace_s=2)
    assert second.poll(old).state is JobState.RUNNING
    handle = second.submit(job(tmp_path, "job", "crash"))
    assert not alive(int(old.id)) and wait_for(lambda: not alive(child), 10)
    assert wait(second, handle, deadline_s=60, poll_interval_s=0.1).state is JobState.FAILED
    assert second.poll(old).state is JobState.UNKNOWN
    first.poll(old)  # reap the zombie in this test process


def test_a_finished_job_leaves_no_worker_running(tmp_path: Path) -> None:
    """The trainer exits and leaves a child in a session of its own: the job guard stops it."""
    backend = LocalBackend(grace_s=2)
    handle = backend.submit(job(tmp_path, "orphan", "sleep", {"FAKE_ORPHAN": "1"}))
    assert wait(backend, handle, deadline_s=60, poll_interval_s=0.1).state is JobState.SUCCEEDED
    child = int((tmp_path / "orphan" / "child.pid").read_text())
    assert not alive(child)  # stopped before the job counted as finished


def test_reap_stale_finds_orphaned_workers_by_marker(tmp_path: Path) -> None:
    """A worker with the folder's marker that no guard watches (started outside golfrun) is reaped."""
    import subprocess

    workdir = tmp_path / "orphan"
    workdir.mkdir()
    env = {**os.environ, MARKER_ENV: str(workdir.resolve())}
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env, start_new_session=True)
    try:
        assert wait_for(lambda: bool(find_processes_with_env(MARKER_ENV, str(workdir.resolve()))))
        assert LocalBackend(grace_s=2).reap_stale(workdir) is True
        assert worker.wait(timeout=10) < 0
        assert reap_stale(workdir) is False
    finally:
        if worker.poll() is None:
            worker.kill()


def test_bad_jobs_are_backend_errors(tmp_path: Path) -> None:
    backend = LocalBackend()
    with pytest.raises(BackendError, match="trainer script not found: /nope.py"):
        backend.submit(Job(name="x", script="/nope.py", env={}, workdir=str(tmp_path / "x")))
    with pytest.raises(BackendError, match="workdir must be absolute"):
        backend.submit(Job(name="x", script=trainer("crash"), env={}, workdir="rel/x"))
    with pytest.raises(BackendError, match="one node"):
        backend.command(Job(name="x", script=trainer("crash"), env={}, workdir=str(tmp_path), nodes=2))
    running = backend.submit(job(tmp_path, "busy", "sleep"))
    try:
        with pytest.raises(BackendError, match="another job is still running"):
            backend.submit(job(tmp_path, "busy", "sleep"))
    finally:
        backend.cancel(running)


def test_live_output_feeds_the_progress_display(tmp_path: Path) -> None:
    import io

    from golfrun.pipeline.progress import ProgressDisplay

    out = io.StringIO()
    display = ProgressDisplay(stream=out, live=False, min_interval_s=0.0, clock=lambda: 0.0)
    display.set_stage("gate-a")
    finished: list[tuple[str, str]] = []

    def on_finish(j, status) -> None:
        finished.append((j.name, status.state.value))
        display.job_finished(j.name, status.state.value)

    backend = LocalBackend(on_line=lambda j, line: display.on_line(j.name, line), on_finish=on_finish)
    handle = backend.submit(job(tmp_path, "seed0", "record", {"SEED": "0"}))
    assert wait(backend, handle, deadline_s=60, poll_interval_s=0.1).state is JobState.SUCCEEDED
    backend.poll(handle)  # a later poll returns the same outcome without finishing the job again
    assert finished == [("seed0", "SUCCEEDED")]
    lines = out.getvalue().splitlines()
    assert "[gate-a] seed0  train  500/20000  loss 3.2523  val_bpb 3.4874  8.20M tok/s  ETA 0s" in lines
    assert lines[-1] == "[gate-a] seed0  done  loss 3.2523  val_bpb 1.0722  8.20M tok/s  SUCCEEDED"


def _silent_trainer(tmp_path: Path) -> str:
    script = tmp_path / "silent_trainer.py"
    script.write_text("import time\nprint('loading', flush=True)\nprint('step 1', flush=True)\ntime.sleep(600)\n")
    return str(script)


def test_a_silent_job_is_stopped_as_stalled_with_its_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-gpu") + os.pathsep + "/usr/bin:/bin")  # no nvidia-smi here
    backend = LocalBackend(grace_s=1)
    j = Job(name="quiet", script=_silent_trainer(tmp_path), env={}, workdir=str(tmp_path / "quiet"), stall_s=1.0)
    status = wait(backend, backend.submit(j), deadline_s=60, poll_interval_s=0.1)
    assert status.state is JobState.CANCELLED
    assert status.reason == "STALLED: no output and no GPU activity for 1s"
    assert (tmp_path / "quiet" / "job.log").read_text() == "loading\nstep 1\n"


def test_gpu_activity_keeps_a_silent_job_alive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in nvidia-smi on PATH (this machine has no GPU) reports the utilization in a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    util = tmp_path / "util"
    util.write_text("0\n87\n")  # two GPUs, one busy
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat {util}\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    backend = LocalBackend(grace_s=1)
    j = Job(name="gpu", script=_silent_trainer(tmp_path), env={}, workdir=str(tmp_path / "gpu"), stall_s=1.0)
    handle = backend.submit(j)
    end = time.monotonic() + 3.0  # three stall periods of silence, the GPU busy throughout
    while time.monotonic() < end:
        assert backend.poll(handle).state is JobState.RUNNING
        time.sleep(0.1)
    util.write_text("0\n0\n")  # the GPU goes idle: a hang
    status = wait(backend, handle, deadline_s=60, poll_interval_s=0.1)
    assert status.state is JobState.CANCELLED and status.reason.startswith("STALLED")
