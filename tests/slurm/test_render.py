"""sbatch rendering: golden files, and quoting checked by bash and by a real sbatch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from golfrun.sbatch.render import Container, SbatchSpec, render_stage_script, sbatch_quote
from tests.services.slurm import SlurmCluster

GOLDEN = Path(__file__).parent / "golden"
NASTY_ARGS = ("a b", "it's", '"dq"', "$HOME", "; touch pwned", "`id`", "back\\slash", "*", "")


def _pr1610_like(nodes: int) -> SbatchSpec:
    return SbatchSpec(
        job_name="pr1610-repro.02-gate-a",
        description="pr1610-repro stage gate-a",
        command=("python", "-m", "golfrun", "gate-a", "--campaign", "runs/pr1610-repro/campaign.resolved.toml"),
        workdir="/scratch/golf/pr1610 work",
        output="/scratch/golf/pr1610 work/runs/pr1610-repro/slurm/%x-%j.out",
        partition="h100",
        account="golf",
        time="00:35:00",
        nodes=nodes,
        ntasks_per_node=8,
        gpus_per_node=8,
        cpus_per_task=16,
        mem="0",
        exclusive=True,
        extra_sbatch=("--signal=USR1@90",),
        setup=("module load cuda/12.8", "source /scratch/golf/venv/bin/activate"),
        env=(("PYTHONUNBUFFERED", "1"),),
        container=Container(
            image="nvcr.io#nvidia/pytorch:25.01-py3",
            mounts=("/scratch/golf:/scratch/golf", "/data/fineweb:/data/fineweb:ro"),
            workdir="/scratch/golf/pr1610 work",
        ),
    )


@pytest.mark.parametrize("name,spec", [("pr1610-gate-a.sh", _pr1610_like(1)), ("pr1610-2node-gate-a.sh", _pr1610_like(2))])
def test_golden(name: str, spec: SbatchSpec) -> None:
    text = render_stage_script(spec)
    path = GOLDEN / name
    if not path.exists() or os.environ.get("GOLFRUN_REGEN_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"rendered script differs from {path} (GOLFRUN_REGEN_GOLDEN=1 to accept)"
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_sbatch_quote() -> None:
    assert sbatch_quote("/a/b%j.out") == "/a/b%j.out"
    assert sbatch_quote("a b") == '"a b"'
    assert sbatch_quote('x"y\\z') == '"x\\"y\\\\z"'
    with pytest.raises(ValueError, match="newline"):
        sbatch_quote("a\nb")


def test_bad_lines_are_refused() -> None:
    spec = SbatchSpec(job_name="j", command=("true",), workdir="/w", output="/w/o", setup=("a\nb",))
    with pytest.raises(ValueError, match="newline"):
        render_stage_script(spec)
    spec = SbatchSpec(job_name="j", command=("true",), workdir="/w", output="/w/o", env=(("A B", "x"),))
    with pytest.raises(ValueError, match="environment variable name"):
        render_stage_script(spec)


def _nasty_spec(tmp: Path) -> tuple[SbatchSpec, Path]:
    work = tmp / "work dir 'single' \"double\" $x"
    work.mkdir()
    spec = SbatchSpec(
        job_name="name with 'quotes' and \"dq\"",
        command=(sys.executable, "-c", "import sys, os; print(repr(sys.argv[1:])); print(os.environ['GOLF_X'])", *NASTY_ARGS),
        workdir=str(work),
        output=str(work / "out %j.txt"),
        env=(("GOLF_X", "v 'w' \"z\" $y"),),
    )
    return spec, work


def test_quoting_survives_bash(tmp_path: Path) -> None:
    spec, work = _nasty_spec(tmp_path)
    script = tmp_path / "job.sh"
    script.write_text(render_stage_script(spec))
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [repr(list(NASTY_ARGS)), "v 'w' \"z\" $y"]
    assert not (work / "pwned").exists()


@pytest.mark.slurm
def test_quoting_survives_sbatch(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    spec, work = _nasty_spec(tmp_path)
    script = tmp_path / "job.sh"
    script.write_text(render_stage_script(spec))
    r = slurm_cluster.run("sbatch", "--parsable", str(script))
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert slurm_cluster.wait_state(job_id, {"COMPLETED", "FAILED"}) == "COMPLETED", slurm_cluster.logs()
    out = work / f"out {job_id}.txt"
    assert out.read_text().splitlines() == [repr(list(NASTY_ARGS)), "v 'w' \"z\" $y"]
    show = slurm_cluster.run("scontrol", "show", "job", job_id).stdout
    assert "JobName=name with 'quotes' and \"dq\"" in show


def _preset_scripts(overrides: tuple[str, ...]) -> dict[str, str]:
    from golfrun.campaign import load_campaign
    from golfrun.pipeline.slurm_campaign import ClusterPaths, plan_submissions

    campaign = load_campaign("pr1610", list(overrides))
    paths = ClusterPaths(code="/scratch/golf/pr1610 work/code", runs="/scratch/golf/pr1610 work/runs", campaign=campaign.name)
    return {sub.script_name: render_stage_script(sub.spec) for sub in plan_submissions(campaign, paths)}


@pytest.mark.parametrize("tag,overrides", [("pr1610", ()), ("pr1610-2node", ("backend.slurm.nodes=2",))])
def test_golden_from_the_pr1610_preset(tag: str, overrides: tuple[str, ...]) -> None:
    scripts = _preset_scripts(overrides)
    for name in ("02-gate-a.sbatch", "03-ablation.tasks.sbatch", "03-ablation.sbatch", "05-preserve.sbatch"):
        path = GOLDEN / f"{tag}-preset-{name}"
        text = scripts[name]
        if not path.exists() or os.environ.get("GOLFRUN_REGEN_GOLDEN") == "1":
            path.write_text(text)
        assert text == path.read_text(), f"rendered {name} differs from {path} (GOLFRUN_REGEN_GOLDEN=1 to accept)"
        assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    gate_a = scripts["02-gate-a.sbatch"]
    nodes = 2 if overrides else 1
    assert f"#SBATCH --nodes={nodes}\n" in gate_a and "#SBATCH --gpus-per-node=8\n" in gate_a
    assert "--container-image=nvcr.io#nvidia/pytorch:25.03-py3" in gate_a
    assert f"export GOLFRUN_SRUN_NODES={nodes}\n" in gate_a
    assert "#SBATCH --array=0-3%3\n" in scripts["03-ablation.tasks.sbatch"]
    assert "--gpus-per-node" not in scripts["05-preserve.sbatch"]  # light jobs ask for no GPUs
