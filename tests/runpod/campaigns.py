"""The campaign the RunPod tests run on a fake pod: the tiny preset with a quick stand-in trainer,
the pod's work folder in a temporary folder, and the test's Python on the pod's PATH."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from golfrun.pipeline.runpod_campaign import FollowTiming

HERE = Path(__file__).resolve().parent
FAKE_TRAINER = HERE / "fake_pod_trainer.py"
FAST = {"ready_timeout_s": 10.0, "settle_s": 0.3, "poll_s": 0.05, "ssh_timeout_s": 30.0}
FAST_FOLLOW = FollowTiming(log_poll_s=0.5, api_poll_s=0.5, ssh_grace_s=10.0, pull_every_s=2.0)


def overrides(workdir: Path, extra: dict[str, Any] | None = None) -> list[str]:
    """--set overrides (TOML values) that point the tiny campaign at the fake pod."""
    sets = {
        "trainer": str(FAKE_TRAINER),
        "backend.kind": "runpod",
        "backend.runpod.gpu_type": "NVIDIA L40S",
        "backend.runpod.workdir": str(workdir),
        "backend.runpod.setup": [f"export PATH={Path(sys.executable).parent}:$PATH"],
        "backend.runpod.forward_env": [],
        **(extra or {}),
    }
    return [f"{key}={json.dumps(value)}" for key, value in sets.items()]


def load(workdir: Path, extra: dict[str, Any] | None = None) -> Any:
    from golfrun.campaign import load_campaign

    return load_campaign("tiny", overrides(workdir, extra))
