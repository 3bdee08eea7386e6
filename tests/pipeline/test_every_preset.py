"""Every preset, planned and run through every stage on the fake trainer.

A preset must never be able to validate and then stop half-way for a reason of golfrun's own (the
pr1610 preset's `eval_only_quantized` ablation once validated and was then refused by the stage).
Each preset keeps its own stages, modes, variants, seeds and thresholds; the test swaps only what
cannot run here — the trainer (the instant fake one, scoring at the reference), the GPUs, the data
source (a small synthetic set) and the preserve target — and gives the first variant a clear
improvement so that gate-b runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from golfrun.campaign.load import build_campaign, load_campaign, preset_names
from tests.fixtures.pipeline_campaign import FAKE_TRAINER, run_golfrun

STAGES = ("00-verify-pod", "01-download-data", "02-gate-a", "03-ablation", "04-gate-b", "05-preserve")


def _runnable_here(preset: str, tmp: Path, data_dir: Path) -> Path:
    """The preset as a campaign file with only the machine-bound parts swapped (module docstring)."""
    raw: dict[str, Any] = load_campaign(preset).to_dict()
    ref_bpb = min(raw["reference"]["val_bpb"])
    raw["trainer"] = str(FAKE_TRAINER)
    raw["trainer_env"] = {**raw["trainer_env"], "FAKE_BPB": f"{ref_bpb - 0.0005:.8f}", "FAKE_SEED_STEP": "0.0001"}
    raw["backend"]["kind"] = "local"
    raw["backend"]["local"]["nproc_per_node"] = 1
    raw["verify_pod"].update(gpu_count=0, gpu_name="", torch_version="", cuda_version="", attention_backend="",
                             required_packages=["json"], min_free_disk_gb=0.0, git_commit="")
    raw["data"].update(source="synthetic", variant="sp512", train_shards=2, dir=str(data_dir), min_free_disk_gb=0.0)
    raw["data"]["synthetic"].update(vocab_size=512, train_docs=400, val_docs=40)
    first = raw["ablation"]["variants"][0]
    first["env"] = {**first["env"], "FAKE_DELTA": "-0.01"}
    raw["preserve"]["targets"] = [f"dir:{tmp / 'preserved'}"]
    path = tmp / f"{preset}.toml"
    path.write_text(build_campaign(raw, source=str(path), base_dir=tmp).to_toml(), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("preset-data")


@pytest.mark.parametrize("preset", preset_names())
def test_dry_run_plans_the_stages_that_need_no_upstream_result(preset: str, tmp_path: Path, data_dir: Path) -> None:
    campaign = _runnable_here(preset, tmp_path, data_dir)
    proc = run_golfrun(["run-all", "--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs"), "--dry-run"],
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    ablation = out[out.index("[ablation]"):out.index("[gate-b]")]
    assert "plan depends on upstream" not in ablation, ablation
    for v in load_campaign(preset).ablation.variants:
        assert f"job {v.name} (" in ablation


@pytest.mark.parametrize("preset", preset_names())
def test_every_stage_runs_on_the_fake_trainer(preset: str, tmp_path: Path, data_dir: Path) -> None:
    campaign = _runnable_here(preset, tmp_path, data_dir)
    runs = tmp_path / "runs"
    proc = run_golfrun(["run-all", "--campaign", str(campaign), "--runs-dir", str(runs)], cwd=tmp_path, timeout=600)
    name = load_campaign(preset).name
    verdicts = {}
    for stage in STAGES:
        summary = runs / name / stage / "summary.json"
        assert summary.is_file(), f"{preset}: no {stage} summary\n{proc.stdout}\n{proc.stderr}"
        verdicts[stage] = json.loads(summary.read_text())["verdict"]
    assert verdicts == dict.fromkeys(STAGES, "PASS"), (verdicts, proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0
    abl = (runs / name / "03-ablation" / "summary.json").read_text()
    mode = load_campaign(preset).ablation.mode
    assert f'"mode": "{mode}"' in abl

