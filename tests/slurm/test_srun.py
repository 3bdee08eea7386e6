"""The srun backend inside a real Slurm allocation: one task per process, each mapped to the
torch.distributed variables by the rank wrapper."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from golfrun.backends.srun_rank import first_host, port_for, rank_env, torchrun_argv
from tests.services.slurm import SlurmCluster

REPO = Path(__file__).resolve().parents[2]


def test_rank_env_mapping() -> None:
    env = rank_env({"SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16", "SLURM_NODEID": "1",
                    "SLURM_STEP_TASKS_PER_NODE": "8(x2)", "SLURM_STEP_NODELIST": "gpu07,gpu08", "SLURM_JOB_ID": "123456"})
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["LOCAL_WORLD_SIZE"], env["NODE_RANK"]) == ("9", "1", "16", "8", "1")
    assert env["MASTER_ADDR"] == "gpu07"
    assert env["MASTER_PORT"] == str(port_for("123456")) == "23456"
    kept = rank_env({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})
    assert (kept["MASTER_ADDR"], kept["MASTER_PORT"]) == ("10.0.0.1", "29500")
    assert first_host("") == "127.0.0.1"
    argv = torchrun_argv({"SLURM_NNODES": "2", "SLURM_NODEID": "1", "MASTER_ADDR": "gpu07", "MASTER_PORT": "23456"}, 8, "py", ["t.py"])
    assert argv == ["py", "-m", "torch.distributed.run", "--nnodes=2", "--node_rank=1", "--nproc_per_node=8",
                    "--master_addr=gpu07", "--master_port=23456", "t.py"]


@pytest.mark.slurm
@pytest.mark.parametrize("launcher", ["tasks", "torchrun"])
def test_srun_backend_launches_ranked_tasks(slurm_cluster: SlurmCluster, tmp_path: Path, launcher: str) -> None:
    trainer = tmp_path / "trainer.py"
    trainer.write_text(textwrap.dedent("""
        import json, os
        keys = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "ARTIFACT_DIR", "CUDA_VISIBLE_DEVICES", "GOLF"]
        with open(os.path.join(os.environ["ARTIFACT_DIR"], f"rank{os.environ['RANK']}.json"), "w") as f:
            json.dump({k: os.environ.get(k) for k in keys}, f)
    """))
    driver = tmp_path / "driver.py"
    work = tmp_path / "job dir"
    driver.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        os.environ["GOLFRUN_SRUN_LAUNCHER"] = {launcher!r}
        from golfrun.backends.base import Job, wait
        from golfrun.backends.srun import SrunBackend
        b = SrunBackend()
        job = Job(name="ranks", script={str(trainer)!r}, env={{"GOLF": "x y"}}, workdir={str(work)!r}, nproc_per_node=2)
        st = wait(b, b.submit(job), deadline_s=120, poll_interval_s=0.2)
        print("STATE", st.state.value, st.reason)
        sys.exit(0 if st.state.value == "SUCCEEDED" else 1)
    """))
    out = tmp_path / "out.txt"
    r = slurm_cluster.run("sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", f"--gpus-per-node={slurm_cluster.gpus}",
                          "-o", str(out), "--wrap", f"{sys.executable} {driver}")
    assert r.returncode == 0, r.stderr
    state = slurm_cluster.wait_state(r.stdout.strip(), {"COMPLETED", "FAILED"}, timeout_s=150)
    assert state == "COMPLETED", out.read_text() + (work / "job.log").read_text() if (work / "job.log").exists() else out.read_text()
    ranks = [json.loads((work / f"rank{i}.json").read_text()) for i in range(2)]
    assert [(x["RANK"], x["LOCAL_RANK"], x["WORLD_SIZE"], x["LOCAL_WORLD_SIZE"]) for x in ranks] == [("0", "0", "2", "2"), ("1", "1", "2", "2")]
    assert ranks[0]["MASTER_ADDR"] == ranks[1]["MASTER_ADDR"] == "localhost"
    assert ranks[0]["MASTER_PORT"] == ranks[1]["MASTER_PORT"]
    assert ranks[0]["ARTIFACT_DIR"] == str(work) and ranks[0]["GOLF"] == "x y"
    assert ranks[0]["CUDA_VISIBLE_DEVICES"] == "0,1"
    launched = json.loads((work / "launch.json").read_text())["argv"]
    per_node = "1" if launcher == "torchrun" else "2"
    assert launched[:5] == ["srun", "--nodes=1", f"--ntasks={per_node}", f"--ntasks-per-node={per_node}", "--kill-on-bad-exit=1"]
    assert ("--torchrun" in launched) == (launcher == "torchrun")
