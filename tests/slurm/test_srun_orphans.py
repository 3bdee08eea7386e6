"""A Slurm job step whose golfrun dies: the srun backend's trainer tasks run under slurmstepd, not
under golfrun, so only ending the step stops them. The job guard does that (two SIGINTs to srun,
which Slurm documents as "terminate the step now"). On the real Slurm the tests start."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from golfrun.transport.local import process_start_time
from tests.fixtures.waiting import wait_for
from tests.services.slurm import SlurmCluster

REPO = Path(__file__).resolve().parents[2]
ORPHAN_DEADLINE_S = 3.0


@pytest.mark.slurm
def test_sigkill_of_golfrun_ends_its_srun_step(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    trainer = tmp_path / "trainer.py"
    trainer.write_text(textwrap.dedent("""
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops it
        art = os.environ["ARTIFACT_DIR"]
        open(os.path.join(art, f"task{os.environ['RANK']}.pid"), "w").write(str(os.getpid()))
        time.sleep(4)  # silent, then it would write its result
        open(os.path.join(art, f"late{os.environ['RANK']}"), "w").write("written after golfrun died")
    """))
    work = tmp_path / "job"
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(REPO)!r})
        from golfrun.backends.base import Job
        from golfrun.backends.srun import SrunBackend
        open({str(tmp_path / 'driver.pid')!r}, "w").write(str(os.getpid()))
        b = SrunBackend()
        h = b.submit(Job(name="orphan", script={str(trainer)!r}, env={{}}, workdir={str(work)!r}, nproc_per_node=2))
        while True:
            b.poll(h)
            time.sleep(0.2)
    """))
    r = slurm_cluster.run("sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "-o", str(tmp_path / "out.txt"),
                          "--wrap", f"{sys.executable} {driver}; sleep 60")  # the allocation outlives golfrun
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    try:
        assert wait_for(lambda: all((work / f"task{i}.pid").is_file() and (work / f"task{i}.pid").read_text()
                                    for i in (0, 1)), 120), (tmp_path / "out.txt").read_text()
        tasks = [int((work / f"task{i}.pid").read_text()) for i in (0, 1)]
        starts = [process_start_time(p) for p in tasks]
        os.kill(int((tmp_path / "driver.pid").read_text()), signal.SIGKILL)
        killed_at = time.monotonic()
        gone = wait_for(lambda: all(process_start_time(p) != s for p, s in zip(tasks, starts)), ORPHAN_DEADLINE_S)
        took = time.monotonic() - killed_at
        assert gone, f"srun tasks still alive {ORPHAN_DEADLINE_S}s after golfrun died"
        print(f"srun step's tasks gone {took:.2f}s after golfrun's SIGKILL")
        def step_ended() -> bool:
            return "orphan" not in slurm_cluster.run("squeue", "--steps", "--noheader", "-j", job_id).stdout

        assert wait_for(step_ended, 30)  # Slurm's own bookkeeping of the step follows
        time.sleep(max(0.0, 5.0 - (time.monotonic() - killed_at)))  # past the moment a live task would write
        assert not list(work.glob("late*"))  # no task wrote after golfrun died
    finally:
        slurm_cluster.run("scancel", job_id)
