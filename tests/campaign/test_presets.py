"""The built-in presets load, carry the numbers they promise, and round-trip through to_toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from golfrun.campaign import Campaign, load_campaign, preset_names, preset_text
from golfrun.campaign.load import REPO_ROOT
from golfrun.errors import CampaignError


def test_preset_names() -> None:
    assert {"tiny", "pr1610"} <= set(preset_names())


@pytest.mark.parametrize("name", ["tiny", "pr1610"])
def test_preset_loads_and_round_trips(name: str, tmp_path: Path) -> None:
    c = load_campaign(name)
    assert isinstance(c, Campaign) and c.name == name and c.source == f"preset:{name}"
    assert c.trainer == REPO_ROOT / "train_gpt.py"
    path = tmp_path / "resolved.toml"
    path.write_text(c.to_toml())
    again = load_campaign(str(path))
    assert again == c
    assert again.to_dict() == c.to_dict()


def test_default_is_tiny() -> None:
    c = load_campaign(None)
    assert c.name == "tiny"
    assert c.data.source == "synthetic" and c.data.variant == "sp512" and c.data.synthetic.vocab_size == 512
    assert c.verify_pod.gpu_count == 0
    assert c.backend.kind == "local" and c.backend.local.nproc_per_node == 1
    assert c.ablation.mode == "eval_only"
    # every variant changes the evaluation (a knob the tiny model ignores would screen nothing)
    assert [v.name for v in c.ablation.variants] == ["ctx64", "ctx128", "ttt", "ttt_corrector"]
    assert all(v.env for v in c.ablation.variants)
    assert c.gate_b.seeds == [0, 1, 2]
    assert c.trainer_env["VOCAB_SIZE"] == "512" and c.trainer_env["TTT_ENABLED"] == "0"
    assert all(t.startswith("dir:") for t in c.preserve.targets)


def test_pr1610_numbers() -> None:
    c = load_campaign("pr1610")
    assert c.backend.local.nproc_per_node == 8 and c.verify_pod.gpu_count == 8
    assert c.data.source == "hf:kevclark/parameter-golf" and c.data.variant == "sp8192" and c.data.train_shards == 128
    assert c.reference.val_bpb == [1.07216564, 1.07300174, 1.07325147]
    assert c.reference.val_loss == [2.76951521, 2.77167493, 2.77232000]
    assert c.reference.artifact_bytes == [15996697, 15995985, 15988805]
    assert (c.gate_a.bpb_tolerance, c.gate_a.artifact_cap_bytes, c.gate_a.artifact_headroom_bytes) == (0.003, 16_000_000, 2480)
    assert (c.gate_a.max_train_seconds, c.gate_a.max_eval_seconds) == (600.0, 600.0)
    assert (c.ablation.promote_delta_bpb, c.ablation.hold_delta_bpb) == (-0.002, -0.001)
    assert {v.name: v.env for v in c.ablation.variants} == {
        "1a": {"CORRECTOR_ALPHA": "0.3", "CORRECTOR_ORDERS": "8"},
        "1b": {"CORRECTOR_ALPHA": "0.3", "CORRECTOR_ORDERS": "5,8,12"},
        "1c": {"CORRECTOR_ALPHA": "0.1", "CORRECTOR_ORDERS": "5,8,12"},
    }
    assert (c.gate_b.mean_tolerance_bpb, c.gate_b.record_margin_nats, c.gate_b.alpha) == (0.002, 0.005, 0.01)
    assert c.trainer_env == {"PHASED_TTT_ENABLED": "1", "PHASED_TTT_PREFIX_DOCS": "2000"}
    slurm = c.backend.slurm
    assert slurm.gpus_per_node == 8 and slurm.container.image and slurm.time["default"] == "00:45:00"
    assert c.backend.runpod.gpu_count == 8 and c.backend.runpod.all_ports() == ["22/tcp"]


def test_preset_text_is_the_file_init_writes(tmp_path: Path) -> None:
    text = preset_text("tiny")
    assert "TODO(calibrate)" in text
    path = tmp_path / "campaign.toml"
    path.write_text(text)
    c = load_campaign(str(path))
    # Written next to no trainer: the relative path now points beside the file.
    assert c.trainer == tmp_path / "train_gpt.py"
    assert c.section("gate_a") == load_campaign("tiny").section("gate_a")
    with pytest.raises(CampaignError, match="unknown preset 'huge'.*pr1610"):
        preset_text("huge")
