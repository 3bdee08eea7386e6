"""The campaign the RunPod tests run on a fake pod: the tiny preset with the pipeline's fake trainer
(tests/fixtures/pipeline_trainer.py) and one variant that beats the baseline by more than the
promotion threshold (so gate-b runs it), the pod's work folder in a temporary folder, and the
test's Python on the pod's PATH."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from golfrun.pipeline.runpod_campaign import FollowTiming

FAKE_TRAINER = Path(__file__).resolve().parents[1] / "fixtures" / "pipeline_trainer.py"
# TOML text, as --set takes it: the tiny preset's thresholds promote a gain of more than 0.002 bpb.
FAKE_VARIANTS = '[{name = "better", env = {FAKE_DELTA = "-0.003"}}, {name = "same", env = {FAKE_DELTA = "0"}}]'
FAST = {"ready_timeout_s": 10.0, "settle_s": 0.3, "poll_s": 0.05, "ssh_timeout_s": 30.0}
FAST_FOLLOW = FollowTiming(log_poll_s=0.5, api_poll_s=0.5, ssh_grace_s=10.0, pull_every_s=2.0)


def overrides(workdir: Path, extra: dict[str, Any] | None = None, *, fake_trainer: bool = True) -> list[str]:
    """--set overrides (TOML values) that point the tiny campaign at the fake pod (and, unless
    fake_trainer is False, at the fake trainer and variants it scores)."""
    sets = {
        "backend.kind": "runpod",
        "backend.runpod.gpu_type": "NVIDIA L40S",
        "backend.runpod.workdir": str(workdir),
        # The "pod" shares this test's interpreter: its prepare step must never `pip install -e`
        # the pod's copy into the test environment (pip only reports what it would do).
        "backend.runpod.setup": [f"export PATH={Path(sys.executable).parent}:$PATH", "export PIP_DRY_RUN=1"],
        "backend.runpod.forward_env": [],
        **(extra or {}),
    }
    fake = [f"trainer={json.dumps(str(FAKE_TRAINER))}", f"ablation.variants={FAKE_VARIANTS}"] if fake_trainer else []
    return fake + [f"{key}={json.dumps(value)}" for key, value in sets.items()]


def load(workdir: Path, extra: dict[str, Any] | None = None) -> Any:
    from golfrun.campaign import load_campaign

    return load_campaign("tiny", overrides(workdir, extra))
