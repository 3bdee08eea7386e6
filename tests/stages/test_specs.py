"""Each stage's SPEC: in the order of summary.STAGES, reading only earlier stages, naming campaign
sections that exist, and planning jobs exactly when the module has `plan`. What the engine, the CLI
and the Slurm chain derive from the SPECs is checked through them."""

from __future__ import annotations

from golfrun import stages
from golfrun.campaign import load_campaign
from golfrun.summary import STAGE_DIRS, STAGES


def test_specs_follow_the_order_and_name_real_sections() -> None:
    campaign = load_campaign(None)
    specs = stages.specs()
    assert list(specs) == list(STAGES)
    for name, spec in specs.items():
        assert spec.folder == STAGE_DIRS[name]
        assert all(STAGES.index(up) < spec.number for up in spec.upstream), name
        for section in spec.config_sections:
            campaign.section(section)  # a CampaignError if the section does not exist
        assert spec.runs_jobs == hasattr(stages.module(name), "plan"), name
        assert not spec.array_jobs or spec.runs_jobs, name


def test_what_the_cli_and_the_slurm_chain_read_from_the_specs() -> None:
    from golfrun.cli import main

    with_index = {name for name, cmd in main.commands.items() if name in STAGES
                  and any(p.name == "job_index" for p in cmd.params)}
    assert with_index == {s.name for s in stages.specs().values() if s.runs_jobs}
    assert "reads: download-data, gate-a, ablation" in main.commands["gate-b"].help


def test_gate_b_reads_the_promoted_variant_through_the_handoff_not_the_ablation_module() -> None:
    import ast
    import inspect

    import golfrun.stages.gate_b as gate_b

    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(gate_b)))
                if isinstance(node, ast.ImportFrom)}
    assert "golfrun.stages.ablation" not in imported and "golfrun.stages.handoff" in imported
