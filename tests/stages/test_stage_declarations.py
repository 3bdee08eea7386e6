"""What a stage declares in its SPEC and the rooms above read: the figures `golfrun status` shows
for it, how its jobs fan out as a Slurm job array, and what `golfrun decide --promote` does to it.
The six stages' figures and array sizes are pinned; a toy stage, registered the way the "add a
stage" recipe says (its module with SPEC, one line in the registry, its place in the order), shows
its declared figures in the status view, gets its declared array size in the Slurm chain and is
promoted as it declares, with nothing of views.py or the chain knowing it.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import golfrun.stages
from golfrun.campaign import Campaign, load_campaign
from golfrun.errors import UsageError
from golfrun.stages.spec import Promotion, SlurmArray, StageSpec
from golfrun.summary import STAGES, Summary, Verdict

FIXTURES = Path(__file__).resolve().parents[1] / "report" / "fixtures" / "campaign"
REPO = Path(__file__).resolve().parents[2]


def fixture_summary(stage: str) -> Summary:
    folder = golfrun.stages.spec(stage).folder
    return Summary.from_dict(json.loads((FIXTURES / folder / "summary.json").read_text()))


def test_status_figures_of_each_stage() -> None:
    from golfrun.pipeline.views import key_figures

    assert key_figures(fixture_summary("verify-pod")) == "0 GPU(s), torch 2.13.0+cpu, 4/4 checks"
    assert key_figures(fixture_summary("download-data")) == "sp512: 2 train / 1 val shards"
    assert key_figures(fixture_summary("gate-a")) == "val_bpb 2.000000 (≤ 2.010000), 100000 B"
    assert key_figures(fixture_summary("ablation")) == "best good Δbpb -0.010000; promoted good"
    assert key_figures(fixture_summary("gate-b")) == (
        "good: mean val_bpb 1.991000, sample std 0.001000 over 3 seeds; record p=0.0003")
    # figures a decision lacks are "-"; a stage that declares none shows its first reason's first line
    empty = dataclasses.replace(fixture_summary("ablation"), decision={"best": None, "promoted": None})
    assert key_figures(empty) == "promoted -"
    assert key_figures(dataclasses.replace(empty, stage="gate-a", decision={})) == "val_bpb - (≤ -), - B"
    assert key_figures(dataclasses.replace(empty, stage="verify-pod", decision={}, checks=[])) == (
        "0 GPU(s), torch -, 0/0 checks")
    preserve = dataclasses.replace(empty, stage="preserve", reasons=["3 targets verified\nsecond line"])
    assert key_figures(preserve) == "3 targets verified"
    # SKIPPED and ERROR show why, whatever the stage declares
    assert key_figures(dataclasses.replace(empty, verdict=Verdict.SKIPPED, reasons=["gate-a: KILL"])) == "gate-a: KILL"
    assert key_figures(dataclasses.replace(empty, verdict=Verdict.ERROR, reasons=["boom\ntrace"])) == "boom"


@pytest.mark.parametrize("overrides,ablation,gate_b,waves", [
    ((), 4, 3, False),  # three eval-only variants share one baseline job
    (("ablation.mode=train",), 3, 3, False),
    (("ablation.halving_fractions=[0.25, 0.5]",), 1, 3, False),  # one stage job runs the rungs
    (("gate_b.max_seeds=2", "gate_b.seeds=[0, 1, 2, 3]"), 4, 2, False),
    (("gate_b.wave_size=2", "gate_b.seeds=[0, 1, 2, 3, 4]", "gate_b.require_record=true"), 4, 2, True),
    (("gate_b.wave_size=8", "gate_b.seeds=[0, 1, 2]", "gate_b.require_record=true"), 4, 3, True),
])
def test_slurm_array_sizes(overrides: tuple[str, ...], ablation: int, gate_b: int, waves: bool) -> None:
    from golfrun.pipeline.slurm_campaign import array_size, in_waves

    campaign = load_campaign("pr1610", list(overrides))
    assert (array_size(campaign, "ablation"), array_size(campaign, "gate-b")) == (ablation, gate_b)
    assert in_waves(campaign, "gate-b") is waves and not in_waves(campaign, "ablation")
    for stage in ("verify-pod", "download-data", "gate-a", "preserve"):
        assert array_size(campaign, stage) == 1 and not in_waves(campaign, stage)


# ------------------------------------------------------------------------------------ a toy stage


def toy_figures(summary: Summary) -> str:
    return f"toy figure {summary.decision.get('answer')}"


def toy_array_size(campaign: Campaign) -> int:
    return len(campaign.gate_b.seeds) + 7


def toy_check(campaign: Campaign, name: str) -> None:
    if name not in ("red", "blue"):
        raise UsageError(f"decide toy --promote {name!r}: choose red or blue")


def toy_promote(summary: Summary, name: str) -> None:
    summary.decision["colour"] = name


SPEC = StageSpec("toy", len(STAGES), upstream=("gate-a",), config_sections=("gate_a",), uses_trainer=True,
                 runs_jobs=True, array=SlurmArray(size=toy_array_size), key_figures=toy_figures,
                 promotion=Promotion(check=toy_check, apply=toy_promote))


def plan(ctx: object) -> list[object]:  # a stage that plans jobs has `plan(ctx)`
    return []


@pytest.fixture
def toy_stage(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This module registered as the stage after preserve: one registry line, its place in the order
    (`golfrun.summary.STAGES`, as every golfrun module that took the name sees it)."""
    import golfrun.pipeline.summaries  # noqa: F401  (loaded, so that it sees the order too)

    monkeypatch.setitem(golfrun.stages.MODULES, "toy", __name__)
    for module in [m for name, m in sys.modules.items() if name.startswith("golfrun")]:
        if getattr(module, "STAGES", None) is STAGES:
            monkeypatch.setattr(module, "STAGES", (*STAGES, "toy"))
    assert sys.modules[__name__].SPEC is SPEC
    golfrun.stages.specs.cache_clear()
    yield "toy"
    golfrun.stages.specs.cache_clear()


def test_a_toy_stage_declares_its_status_figures_and_its_slurm_array(toy_stage: str) -> None:
    from golfrun.pipeline.slurm_campaign import array_size, in_waves
    from golfrun.pipeline.views import key_figures

    assert golfrun.stages.specs()[toy_stage] is SPEC and SPEC.array_jobs
    summary = dataclasses.replace(fixture_summary("gate-a"), stage=toy_stage, decision={"answer": 42})
    assert key_figures(summary) == "toy figure 42"
    assert key_figures(dataclasses.replace(summary, verdict=Verdict.SKIPPED, reasons=["blocked"])) == "blocked"
    campaign = load_campaign("pr1610", [])
    assert array_size(campaign, toy_stage) == 10 and not in_waves(campaign, toy_stage)
    for path in ("golfrun/pipeline/views.py", "golfrun/pipeline/slurm_campaign.py"):
        assert "toy" not in (REPO / path).read_text()


def test_a_toy_stage_is_promoted_as_it_declares(toy_stage: str, tmp_path: Path) -> None:
    from golfrun.pipeline import summaries
    from golfrun.pipeline.engine import Engine
    from golfrun.pipeline.views import decide

    engine = Engine(campaign=load_campaign("tiny", []), campaign_dir=tmp_path / "tiny", log=lambda _: None)
    held = dataclasses.replace(fixture_summary("gate-a"), stage=toy_stage, verdict=Verdict.KILL, decision={})
    summaries.write_summary(engine.campaign_dir, held)
    with pytest.raises(UsageError, match="choose red or blue"):
        decide(engine, toy_stage, "green", False, "why not")
    decided = decide(engine, toy_stage, "red", False, "red is faster")
    assert decided.verdict is Verdict.PASS and decided.decision == {"colour": "red"}
    assert summaries.read_summary(engine.campaign_dir, toy_stage).human_decision["previous_verdict"] == "KILL"
    # a stage that declares no promotion is told which stages take one
    summaries.write_summary(engine.campaign_dir, dataclasses.replace(held, stage="gate-b", verdict=Verdict.HOLD))
    with pytest.raises(UsageError, match="--promote applies to ablation, toy; for gate-b use --kill"):
        decide(engine, "gate-b", "red", False, "x")


def test_the_views_and_the_slurm_chain_compare_no_stage_names() -> None:
    """What differs between stages is declared in their SPECs, not decided by comparing names."""
    for path in ("golfrun/pipeline/views.py", "golfrun/pipeline/slurm_campaign.py", "golfrun/pipeline/slurm_job.py",
                 "golfrun/stages/common.py"):
        tree = ast.parse((REPO / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                names = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in STAGES]
                assert not names, f"{path}:{node.lineno} compares with stage name(s) {names}"
            if isinstance(node, ast.Dict):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in STAGES]
                assert not keys, f"{path}:{node.lineno} keys a table by stage name(s) {keys}"


def test_no_module_outside_the_stages_imports_a_stage_module() -> None:
    """Above the stages, a stage is reached through the registry (golfrun.stages.module/spec), so
    adding one stays one module plus one line."""
    stage_modules = {m.rsplit(".", 1)[1] for m in golfrun.stages.MODULES.values()}
    for path in sorted((REPO / "golfrun").rglob("*.py")):
        if path.parent.name == "stages":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "golfrun.stages":
                named = {a.name for a in node.names} & stage_modules
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                named = {n for n in names if n.startswith("golfrun.stages.") and n.rsplit(".", 1)[1] in stage_modules}
            else:
                continue
            assert not named, f"{path.relative_to(REPO)}:{node.lineno} imports stage module(s) {named}"
