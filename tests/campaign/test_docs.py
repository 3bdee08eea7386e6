"""docs/campaign.md carries the key reference generated from the schema, current and complete."""

from __future__ import annotations

from pathlib import Path

from golfrun.campaign import schema
from golfrun.campaign.docs import BEGIN, END, render_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "campaign.md"


def test_generated_block_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    assert block.strip() == render_reference().strip(), "run: python -m golfrun.campaign.docs --write docs/campaign.md"


def test_every_key_is_listed() -> None:
    reference = render_reference()
    for dotted, f, _ in schema.iter_keys(schema.CampaignFields):
        if not f.metadata.get("section"):
            assert f"| `{f.name}` |" in reference, dotted
    for f in schema.iter_keys(schema.Variant):
        assert f"| `{f[0]}` |" in reference
    for table in ("[backend.slurm]", "[backend.slurm.container]", "[backend.runpod]", "[[ablation.variants]]", "[data.synthetic]"):
        assert f"`{table}`" in reference
