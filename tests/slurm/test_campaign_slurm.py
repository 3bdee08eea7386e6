"""A whole campaign on a real single-node Slurm (tests/services): the built-in tiny campaign with the
real train_gpt.py, and, with the pipeline's instant fake trainer (tests/fixtures/pipeline_trainer.py),
submitted here and over SSH, the KILL path, a failed and a cancelled trainer job. Every check reads what Slurm itself reports (squeue) and the
summaries the cluster-side jobs wrote."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from golfrun.backends.base import JobState
from tests.fixtures.pipeline_campaign import write_campaign
from tests.services.common import all_pids, proc_environ
from tests.services.slurm import SlurmCluster
from tests.services.sshd import SshdServer

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
# the compute side finds this interpreter (and its golfrun dependencies) through a set-up line
SETUP = f'backend.slurm.setup=["export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH"]'


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from golfrun.data.synthetic import build_dataset

    root = tmp_path_factory.mktemp("slurm-data")
    build_dataset(root)
    return root


def golfrun(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    full = {**env, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "golfrun.cli", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout)


def squeue_states(cluster: SlurmCluster, state: dict) -> dict[str, str]:
    """key → Slurm state(s) as squeue prints them (array tasks joined)."""
    out: dict[str, str] = {}
    for job in state["jobs"]:
        r = cluster.run("squeue", "-h", "-t", "all", "-r", "-j", job["job_id"], "-o", "%T")
        out[job["key"]] = ",".join(sorted(set(r.stdout.split())))
    return out


def golfrun_processes(conf: Path) -> list[str]:
    """Processes of this cluster's jobs, or golfrun commands, still alive."""
    found = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        env = proc_environ(pid)
        if env.get("SLURM_CONF") == str(conf) and ("-m golfrun" in cmd or "pipeline_trainer" in cmd or "SLURM_JOB_ID" in env):
            found.append(f"{pid}: {cmd}")
    return found


def summary(campaign_dir: Path, stage_folder: str) -> dict:
    return json.loads((campaign_dir / stage_folder / "summary.json").read_text())


def test_dry_run_writes_scripts_and_submits_nothing(slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, data_dir)
    before = slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%i").stdout
    r = golfrun(["run-all", "--backend", "slurm", "--dry-run", "--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs"),
                 "--set", SETUP], tmp_path, slurm_cluster.env)
    assert r.returncode == 0, r.stdout + r.stderr
    scripts = sorted(p.name for p in (tmp_path / "runs" / "t" / "slurm").glob("*.sbatch"))
    assert scripts == ["00-verify-pod.sbatch", "01-download-data.sbatch", "02-gate-a.sbatch", "03-ablation.sbatch",
                       "03-ablation.tasks.sbatch", "04-gate-b.sbatch", "04-gate-b.tasks.sbatch", "05-preserve.sbatch"]
    plan = (tmp_path / "runs" / "t" / "slurm" / "submit-plan.txt").read_text()
    assert "--dependency=afterany:" in plan and "--kill-on-invalid-dep=yes" in plan
    assert not (tmp_path / "runs" / "t" / "slurm.json").exists()
    assert slurm_cluster.run("squeue", "-h", "-t", "all", "-o", "%i").stdout == before


def test_campaign_end_to_end_submitted_here(slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, data_dir)
    runs = tmp_path / "runs"
    r = golfrun(["run-all", "--backend", "slurm", "--campaign", str(campaign), "--runs-dir", str(runs), "--set", SETUP,
                 "--set", "backend.slurm.array_throttle=2", "--set", 'verify_pod.required_packages=["torch"]'],
                tmp_path, slurm_cluster.env)
    cdir = runs / "t"
    assert r.returncode == 0, r.stdout + r.stderr + slurm_cluster.logs()
    # every trainer job of every stage's Slurm job, array tasks included, used one compile cache in
    # the campaign folder on the shared file system
    caches = {json.loads(p.read_text())["full_env"]["TORCHINDUCTOR_CACHE_DIR"] for p in cdir.glob("0[234]-*/jobs/*/job.json")}
    assert len(caches) == 1 and Path(caches.pop()).parent.parent == cdir / "compile-cache"
    state = json.loads((cdir / "slurm.json").read_text())
    states = squeue_states(slurm_cluster, state)
    assert set(states.values()) == {"COMPLETED"}, states
    for folder in ("00-verify-pod", "01-download-data", "02-gate-a", "03-ablation", "04-gate-b", "05-preserve"):
        assert summary(cdir, folder)["verdict"] == "PASS", folder
    # ablation ran as an array: one trainer job per task, then the aggregation found them cached
    jobs = summary(cdir, "03-ablation")["jobs"]
    assert {j["name"] for j in jobs} >= {"good", "bad"} and all(j["cached"] for j in jobs)
    assert "--array=0-2%2" in (cdir / "slurm" / "03-ablation.tasks.sbatch").read_text()
    assert golfrun_processes(slurm_cluster.conf) == []
    # a second submission redoes nothing: every stage job serves its summary from cache
    first = {f: summary(cdir, f)["finished_at"] for f in ("02-gate-a", "04-gate-b")}
    again = golfrun(["run-all", "--backend", "slurm", "--campaign", str(campaign), "--runs-dir", str(runs), "--set", SETUP,
                     "--set", 'verify_pod.required_packages=["torch"]'], tmp_path, slurm_cluster.env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {f: summary(cdir, f)["finished_at"] for f in first} == first
    # later, from the laptop: Slurm's view per stage
    from golfrun.pipeline.slurm_campaign import slurm_states

    os.environ["SLURM_CONF"] = str(slurm_cluster.conf)
    try:
        seen = slurm_states(cdir)
    finally:
        del os.environ["SLURM_CONF"]
    assert {s.state for s in seen.values()} == {JobState.SUCCEEDED}


def test_kill_over_ssh_cancels_downstream_and_preserves(slurm_cluster: SlurmCluster, slurm_sshd: SshdServer,
                                                         data_dir: Path, tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, data_dir)
    runs = tmp_path / "laptop-runs"
    remote = tmp_path / "cluster home" / "work"
    env = {**os.environ, "GOLFRUN_SSH_KEY": str(slurm_sshd.key_path)}
    env.pop("SLURM_CONF", None)  # the laptop has no Slurm: everything goes through ssh
    r = golfrun(["run-all", "--backend", "slurm", "--campaign", str(campaign), "--runs-dir", str(runs),
                 "--ssh", slurm_sshd.target, "--set", SETUP, "--set", "gate_a.bpb_tolerance=-100",
                 "--set", f'backend.slurm.remote_dir="{remote}"',
                 "--set", f'backend.slurm.known_hosts="{slurm_sshd.known_hosts}"'], tmp_path, env)
    assert r.returncode == 10, r.stdout + r.stderr  # KILL
    cdir = runs / "t"
    state = json.loads((cdir / "slurm.json").read_text())
    assert state["ssh"] == slurm_sshd.target
    states = squeue_states(slurm_cluster, state)
    assert states["gate-a"] == "FAILED"  # exit code 10 = KILL
    for key in ("ablation.tasks", "ablation", "gate-b.tasks", "gate-b"):
        assert states[key] == "CANCELLED", states
    assert states["preserve"] == "COMPLETED"
    # the cluster wrote the summaries; run-all pulled them home
    assert summary(cdir, "02-gate-a")["verdict"] == "KILL"
    assert summary(cdir, "03-ablation")["verdict"] == "SKIPPED"
    assert summary(cdir, "04-gate-b")["verdict"] == "SKIPPED"
    assert summary(cdir, "05-preserve")["verdict"] == "PASS" and (remote / "runs" / "t" / "05-preserve").is_dir()
    assert len(list((remote / "code").glob("*/.golfrun-source.json"))) == 1  # one folder per pushed tree
    # later, from the laptop: Slurm's view and a pull, both over SSH from slurm.json
    common = ["--campaign", str(campaign), "--runs-dir", str(runs)]
    jobs = golfrun(["slurm-jobs", *common], tmp_path, env)
    assert jobs.returncode == 0, jobs.stderr
    assert "CANCELLED" in jobs.stdout and "DependencyNeverSatisfied" in jobs.stdout
    (cdir / "02-gate-a" / "summary.json").unlink()
    pulled = golfrun(["pull", *common], tmp_path, env)
    assert pulled.returncode == 0 and "pulled" in pulled.stdout, pulled.stderr
    assert summary(cdir, "02-gate-a")["verdict"] == "KILL"
    assert golfrun_processes(slurm_cluster.conf) == []


def test_failed_and_cancelled_trainer_jobs_are_errors(slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path) -> None:
    # a trainer that crashes: the stage job itself reports ERROR with the trainer's last lines
    (tmp_path / "a").mkdir()
    campaign = write_campaign(tmp_path / "a", data_dir, trainer_env={"FAKE_CRASH": "1"})
    r = golfrun(["run-all", "--backend", "slurm", "--campaign", str(campaign), "--runs-dir", str(tmp_path / "a" / "runs"),
                 "--set", SETUP], tmp_path, slurm_cluster.env)
    assert r.returncode == 12, r.stdout + r.stderr
    gate_a = summary(tmp_path / "a" / "runs" / "t", "02-gate-a")
    assert gate_a["verdict"] == "ERROR"
    assert "blew up on purpose" in json.dumps(gate_a)

    # a trainer job cancelled in Slurm while it runs: ERROR naming the cancellation
    (tmp_path / "b").mkdir()
    block = tmp_path / "b" / "block"
    block.write_text("")
    campaign = write_campaign(tmp_path / "b", data_dir, trainer_env={"FAKE_BLOCK_SEED": "0", "FAKE_BLOCK_FILE": str(block)})
    runs = tmp_path / "b" / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "golfrun.cli", "run-all", "--backend", "slurm", "--campaign", str(campaign),
                             "--runs-dir", str(runs), "--set", SETUP], cwd=tmp_path, env={**slurm_cluster.env, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = runs / "t" / "02-gate-a" / "jobs"
        end = time.monotonic() + 120
        while time.monotonic() < end and not list(log.glob("*/seed0.txt")):
            time.sleep(0.3)
        assert list(log.glob("*/seed0.txt")), "gate-a's trainer never started"
        c = golfrun(["cancel", "--campaign", str(campaign), "--runs-dir", str(runs)], tmp_path, slurm_cluster.env)
        assert c.returncode == 0 and "cancelled" in c.stdout, c.stdout + c.stderr
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        block.unlink(missing_ok=True)
    assert proc.returncode == 12, out
    gate_a = summary(runs / "t", "02-gate-a")
    assert gate_a["verdict"] == "ERROR"
    assert "CANCELLED" in gate_a["reasons"][0], gate_a["reasons"]
    assert golfrun_processes(slurm_cluster.conf) == []


def test_rejected_submission_is_a_clear_error(slurm_cluster: SlurmCluster, data_dir: Path, tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, data_dir)
    before = slurm_cluster.run("squeue", "-h", "-o", "%i").stdout
    r = golfrun(["run-all", "--backend", "slurm", "--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs"),
                 "--set", SETUP, "--set", "backend.slurm.gpus_per_node=3"], tmp_path, slurm_cluster.env)
    assert r.returncode == 12, r.stdout + r.stderr
    assert "sbatch of verify-pod failed" in r.stderr and "Requested node configuration is not available" in r.stderr
    assert slurm_cluster.run("squeue", "-h", "-o", "%i").stdout == before


def test_tiny_campaign_with_the_real_trainer_submitted_here(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    """The built-in tiny campaign, train_gpt.py for real under srun: the same verdicts as a local run
    (gate-a and gate-b PASS), decided by the stage jobs on the cluster."""
    runs = tmp_path / "runs"
    r = golfrun(["run-all", "--backend", "slurm", "--runs-dir", str(runs), "--set", SETUP], tmp_path,
                {**slurm_cluster.env, "OMP_NUM_THREADS": "1"}, timeout=1500)
    cdir = runs / "tiny"
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:] + slurm_cluster.logs()
    for folder in ("02-gate-a", "04-gate-b", "05-preserve"):
        assert summary(cdir, folder)["verdict"] == "PASS", folder
    gate_a = summary(cdir, "02-gate-a")["jobs"][0]
    assert gate_a["backend"] == "srun" and gate_a["result"]["final"]["label"] == "diagnostic quantized"
    assert golfrun_processes(slurm_cluster.conf) == []
