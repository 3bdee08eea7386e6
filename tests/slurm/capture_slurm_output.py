"""Capture real squeue / scontrol / sacct output from the test cluster into tests/slurm/captured/,
for the parser tests. Run by hand (as root): .venv/bin/python -m tests.slurm.capture_slurm_output"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from tests.services.slurm import SlurmCluster

OUT = Path(__file__).parent / "captured"


def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="golfrun-capture-"))
    state.chmod(0o755)
    c = SlurmCluster(state)
    try:
        c.start()

        def sb(*args: str) -> str:
            r = c.run("sbatch", "--parsable", "-o", "/dev/null", *args)
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()

        ok = sb("-J", "ok", "--wrap", "true")
        fail = sb("-J", "fail", "--wrap", "exit 3")
        dep = sb("-J", "dep", "-d", f"afterok:{fail}", "--kill-on-invalid-dep=yes", "--wrap", "true")
        stuck = sb("-J", "stuck", "-d", f"afterok:{fail}", "--wrap", "true")
        arr = sb("-J", "arr", "--array=0-3%2", "--wrap", "sleep 1; [ $SLURM_ARRAY_TASK_ID != 2 ]")
        long = sb("-J", "long", "--wrap", "sleep 300")
        oom = sb("-J", "gpuwait", f"--gpus-per-node={c.gpus}", "-d", f"afterany:{long}", "--wrap", "true")
        r = c.run("sbatch", "-o", "/dev/null", "-J", "plain", "--wrap", "true")
        (OUT / "sbatch-plain.txt").write_text(r.stdout)
        c.wait_state(long, {"RUNNING"})
        ids = ",".join([ok, fail, dep, stuck, arr, long, oom])
        time.sleep(1)
        (OUT / "squeue-running.txt").write_text(
            c.run("squeue", "-h", "-t", "all", "-r", "-j", ids, "-o", "%i|%A|%T|%r").stdout
        )
        c.run("scancel", long)
        c.wait_state(dep, {"CANCELLED"})
        c.wait_state(arr, {"COMPLETED", "FAILED"})
        c.wait_state(oom, {"COMPLETED", "FAILED"})
        time.sleep(2)
        (OUT / "squeue-final.txt").write_text(
            c.run("squeue", "-h", "-t", "all", "-r", "-j", ids, "-o", "%i|%A|%T|%r").stdout
        )
        (OUT / "scontrol-show-job.txt").write_text(c.run("scontrol", "-o", "show", "job").stdout)
        sacct = c.run("sacct", "-X", "-n", "-P", "-j", ids, "-o", "JobID,JobIDRaw,State,ExitCode,Reason")
        (OUT / "sacct-disabled.txt").write_text(f"rc={sacct.returncode}\n{sacct.stdout}{sacct.stderr}")
        (OUT / "sacct-completion.txt").write_text(
            c.run("sacct", "-c", "-n", "-P", "-j", ids, "-o", "JobID,State,ExitCode").stdout
        )
        gone = c.run("squeue", "-h", "-t", "all", "-r", "-j", "999999", "-o", "%i|%A|%T|%r")
        (OUT / "squeue-unknown-id.txt").write_text(f"rc={gone.returncode}\n{gone.stdout}{gone.stderr}")
        mixed = c.run("squeue", "-h", "-t", "all", "-r", "-j", f"{ok},999999", "-o", "%i|%A|%T|%r")
        (OUT / "squeue-mixed-ids.txt").write_text(f"rc={mixed.returncode}\n{mixed.stdout}{mixed.stderr}")
        (OUT / "ids.txt").write_text(
            f"ok={ok}\nfail={fail}\ndep={dep}\nstuck={stuck}\narr={arr}\nlong={long}\ngpuwait={oom}\n"
        )
    finally:
        c.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
