"""The campaign-runner registry: every backend.kind the schema accepts has a runner with the five
verbs, `run-all` reaches it through the registry, and the local runner says plainly what it cannot
do (it runs in the foreground)."""

from __future__ import annotations

from pathlib import Path

import pytest

from golfrun.campaign import load_campaign
from golfrun.campaign.schema import Backend
from golfrun.errors import CampaignError, GolfrunError
from golfrun.runners import base

VERBS = ("plan", "launch", "follow", "cancel", "pull")


def test_every_backend_kind_has_a_runner_with_the_verbs() -> None:
    kinds = Backend.__dataclass_fields__["kind"].metadata["choices"]
    assert set(base.REGISTRY) == set(kinds)
    for kind in kinds:
        runner = base.get(kind)
        assert runner.name == kind
        assert all(callable(getattr(runner, verb)) for verb in VERBS)


def test_an_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(CampaignError, match="'nope': unknown; known: local, slurm, runpod"):
        base.get("nope")


def test_run_with_dry_run_plans_and_starts_nothing(tmp_path: Path, campaign: Path) -> None:
    loaded = load_campaign(str(campaign))
    lines: list[str] = []
    code = base.run("local", loaded, tmp_path / "runs" / "t", base.RunOptions(dry_run=True), lines.append)
    assert code == 0
    assert "\n[gate-a]" in lines and any(line.strip().startswith("command ") for line in lines)
    assert not (tmp_path / "runs" / "t" / "02-gate-a").exists()


def test_the_local_runner_has_nothing_to_follow_cancel_or_pull(tmp_path: Path, campaign: Path) -> None:
    loaded = load_campaign(str(campaign))
    runner = base.get("local")
    lines: list[str] = []
    assert runner.pull(loaded, tmp_path, lines.append) == 0 and "nothing to pull" in lines[0]
    with pytest.raises(GolfrunError, match="foreground"):
        runner.follow(loaded, tmp_path, lines.append)
    with pytest.raises(GolfrunError, match="Ctrl-C"):
        runner.cancel(loaded, tmp_path, lines.append)
