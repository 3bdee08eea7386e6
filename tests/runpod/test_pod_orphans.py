"""Inside the pod: the pod's `golfrun run-all` killed (SIGKILL: out of memory, a stray kill) while a
trainer runs must not leave the trainer running on the rented GPU. Against the loopback RunPod v2
API (the real one is unreachable from here) whose pods are a real sshd on 127.0.0.1; the pod's
golfrun, its job guard and the fake trainer are real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.runpod_server import FakeRunpod
from tests.fixtures.waiting import snapshot
from tests.services.common import all_pids

ROOT = Path(__file__).resolve().parents[2]
ORPHAN_DEADLINE_S = 2.0


def job_processes(pod_workdir: Path) -> dict[int, str]:
    """pid → job folder of every process carrying a job marker under the pod's disk."""
    found = {}
    prefix = f"GOLFRUN_JOB_DIR={pod_workdir.resolve()}".encode()
    for pid in all_pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(prefix):
                found[pid] = item.split(b"=", 1)[1].decode()
    return found


def pod_golfrun(pod_workdir: Path) -> int | None:
    """The pod's `python3 -m golfrun.cli run-all` process."""
    for pid in all_pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"golfrun.cli" in cmd and b"run-all" in cmd and str(pod_workdir).encode() in b" ".join(cmd):
            return pid
    return None


def test_sigkill_of_the_pods_golfrun_ends_its_trainer(fake_runpod: FakeRunpod, tmp_path: Path, pod_workdir: Path) -> None:
    hold = tmp_path / "hold-gate-b"
    hold.write_text("")
    extra = {"trainer_env.FAKE_BLOCK_FILE": str(hold), "trainer_env.FAKE_BLOCK_STAGE": "gate-b",
             "trainer_env.FAKE_IGNORE_SIGTERM": "1"}
    laptop = subprocess.Popen([sys.executable, "-m", "tests.runpod.drive_campaign", str(tmp_path / "runs" / "tiny"),
                               str(pod_workdir), json.dumps(extra)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        end = time.monotonic() + 180
        while time.monotonic() < end and laptop.poll() is None:
            if any("04-gate-b" in d for d in job_processes(pod_workdir).values()):
                break
            time.sleep(0.1)
        jobs = job_processes(pod_workdir)
        assert jobs, "no trainer started in gate-b"
        job_dir = Path(next(iter(jobs.values())))
        golfrun = pod_golfrun(pod_workdir)
        assert golfrun is not None
        os.killpg(laptop.pid, signal.SIGSTOP)  # paused, so it cannot end the pod (and its disk) meanwhile
        os.kill(golfrun, signal.SIGKILL)
        killed_at = time.monotonic()
        while job_processes(pod_workdir) and time.monotonic() - killed_at < ORPHAN_DEADLINE_S:
            time.sleep(0.02)
        assert not job_processes(pod_workdir), job_processes(pod_workdir)
        print(f"pod trainer gone {time.monotonic() - killed_at:.2f}s after the pod's golfrun was SIGKILLed")
        before = snapshot(job_dir)
        hold.unlink()  # a surviving trainer would now write its results
        time.sleep(1.0)
        assert snapshot(job_dir) == before and not (job_dir / "results.json").exists()
        os.killpg(laptop.pid, signal.SIGCONT)
        out, _ = laptop.communicate(timeout=120)  # the laptop sees the run die and ends the pod
        assert laptop.returncode != 0, out
    finally:
        if laptop.poll() is None:
            os.killpg(laptop.pid, signal.SIGKILL)
            laptop.wait(10)
    assert fake_runpod.live_pods() == []  # the laptop ended the pod once its run died
