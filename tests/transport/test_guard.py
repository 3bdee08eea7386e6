"""The job guard: no job outlives the golfrun that started it. Real processes: a stand-in golfrun
(a Python process that submits a job through the local backend, then waits) is killed, and the
job's processes — the trainer, its child in a session of its own, torchrun's workers — must be gone
within ORPHAN_DEADLINE_S, with no file of the job folder changing afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from golfrun.backends.local import MARKER_ENV, ORPHAN_FILE
from golfrun.transport import local
from tests.fixtures.waiting import wait_for, snapshot

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "trainers"
ORPHAN_DEADLINE_S = 2.0  # the guarantee docs/pipeline.md states


def start_golfrun(tmp_path: Path, env: dict[str, str], nproc: int = 1) -> tuple[subprocess.Popen[str], Path]:
    """A stand-in golfrun: submits fake_sleep_trainer.py, prints 'submitted', polls forever."""
    workdir = tmp_path / "job"
    driver = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from golfrun.backends.base import Job
        from golfrun.backends.local import LocalBackend
        b = LocalBackend()
        h = b.submit(Job(name="job", script={str(FIXTURES / 'fake_sleep_trainer.py')!r}, env={env!r},
                         workdir={str(workdir)!r}, nproc_per_node={nproc}))
        print("submitted", flush=True)
        while True:
            b.poll(h)
            time.sleep(0.1)
    """)
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "submitted"
    return proc, workdir


def job_processes(workdir: Path) -> set[tuple[int, int]]:
    return local.find_processes_with_env(MARKER_ENV, str(workdir.resolve()))


def pids_of(workdir: Path, names: tuple[str, ...]) -> list[int]:
    assert wait_for(lambda: all((workdir / n).is_file() and (workdir / n).read_text() for n in names), 120)
    return [int((workdir / n).read_text()) for n in names]


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigkill_of_golfrun_ends_a_trainer_that_ignores_sigterm(tmp_path: Path, nproc: int) -> None:
    """nproc=2 runs torch.distributed.run: its workers are grandchildren in sessions of their own."""
    golfrun, workdir = start_golfrun(tmp_path, {"FAKE_IGNORE_SIGTERM": "1"}, nproc)
    try:
        names = ("trainer.pid", "child.pid") if nproc == 1 else ("trainer0.pid", "trainer1.pid", "child0.pid", "child1.pid")
        pids = pids_of(workdir, names)
        assert all(local.process_start_time(p) is not None for p in pids)
        killed_epoch = time.time()
        os.kill(golfrun.pid, signal.SIGKILL)
        golfrun.wait(timeout=10)
        killed_at = time.monotonic()
        assert wait_for(lambda: not job_processes(workdir), ORPHAN_DEADLINE_S), job_processes(workdir)
        gone_after = time.monotonic() - killed_at
        # the guard noted when it ended the job (the ledger's end of an attempt nothing else saw end)
        note = json.loads((workdir / ORPHAN_FILE).read_text())
        assert note["schema"] == "golfrun.guard-orphan/1" and note["golfrun_pid"] == golfrun.pid
        assert killed_epoch <= note["ended_epoch"] <= time.time()
        before = snapshot(workdir)
        time.sleep(1.0)
        assert snapshot(workdir) == before  # the trainer printed every 0.1 s while alive
        print(f"job gone {gone_after:.2f}s after golfrun's SIGKILL (nproc={nproc})")
    finally:
        if golfrun.poll() is None:
            golfrun.kill()
        local.terminate_processes(job_processes(workdir), 1.0)


def test_sigkill_of_the_guard_ends_the_trainer(tmp_path: Path) -> None:
    """The trainer's parent-death signal: even the guard's own SIGKILL leaves no trainer behind."""
    proc = local.spawn([sys.executable, str(FIXTURES / "fake_sleep_trainer.py")], cwd=str(tmp_path),
                       env={"ARTIFACT_DIR": str(tmp_path), "FAKE_IGNORE_SIGTERM": "1"}, log_path=tmp_path / "job.log")
    try:
        trainer, = pids_of(tmp_path, ("trainer.pid",))
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        assert wait_for(lambda: local.process_start_time(trainer) is None, ORPHAN_DEADLINE_S)
    finally:
        proc.terminate(grace_s=1)


def test_the_guard_passes_on_the_jobs_exit_code_and_signal(tmp_path: Path) -> None:
    code = local.spawn([sys.executable, "-c", "import sys; print('out'); sys.exit(7)"], cwd=None, env=None,
                       log_path=tmp_path / "a.log", orphan_note=tmp_path / "note.json").wait(30)
    assert code == 7 and (tmp_path / "a.log").read_text() == "out\n"
    assert not (tmp_path / "note.json").exists()  # golfrun saw the end: the guard notes nothing
    killed = local.spawn([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"], cwd=None,
                         env=None, log_path=tmp_path / "b.log").wait(30)
    assert killed == -signal.SIGUSR1


def test_a_missing_program_is_a_transport_error(tmp_path: Path) -> None:
    from golfrun.errors import TransportError

    with pytest.raises(TransportError, match="cannot run .*no-such-program"):
        local.spawn(["no-such-program-golfrun"], cwd=None, env=None, log_path=tmp_path / "x.log")
