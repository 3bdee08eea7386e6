"""`golfrun preflight` and `golfrun spend`: the machine and the money, by hand.

    golfrun preflight [--campaign …] [--json]    measure this machine (docs/pipeline.md, verify-pod)
    golfrun spend [--runs-dir runs] [--json]      money and GPU-hours per campaign under a runs folder

Library modules are imported inside the commands so `golfrun --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from golfrun.cli import campaign_dir, campaign_options, guarded, load


def register(group: click.Group) -> None:
    group.add_command(preflight_command)
    group.add_command(spend_command)


@click.command("preflight")
@campaign_options
@click.option("--json", "as_json", is_flag=True, help="Print the fingerprint, figures and checks as JSON.")
@click.pass_context
@guarded
def preflight_command(ctx: click.Context, campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path,
                      backend: str | None, as_json: bool) -> None:
    """Measure this machine as verify-pod does: bf16 matmul per GPU, NCCL all-reduce, host-to-device
    copy, the attention kernel's forward+backward, the data folder's read speed; held to the
    expected figures of the GPU model (exit 0 PASS, 10 below the campaign's min_perf_fraction)."""
    from golfrun import machine, preflight
    from golfrun.gates.checks import verdict_from
    from golfrun.summary import EXIT_CODES

    campaign = load(campaign_spec, overrides, backend)
    python = campaign.backend.local.python or sys.executable
    v = campaign.verify_pod
    m = machine.probe(python, packages=list(v.required_packages), torch="yes",
                      git_folder=Path(campaign.trainer).resolve().parent)
    figures = preflight.run(python, data_dir=str(campaign.data_dir(campaign_dir(runs_dir, campaign))),
                            attention=v.attention_backend or "auto")
    found = preflight.checks(figures, float(v.min_perf_fraction))
    verdict, reasons = verdict_from(found)
    if as_json:
        click.echo(json.dumps({"verdict": verdict.value, "reasons": reasons, "machine": m.fingerprint.to_dict(),
                               "nvidia_smi": m.smi, "facts": m.facts, "preflight": figures,
                               "checks": [c.__dict__ for c in found]}, indent=2, default=str))
    else:
        click.echo(f"machine: {m.fingerprint.describe()}")
        click.echo(preflight.render(figures, found))
        click.echo(f"{verdict.value}: {reasons[0] if reasons else ''}")
    ctx.exit(EXIT_CODES[verdict])


@click.command("spend")
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="The runs folder whose campaigns are listed.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@guarded
def spend_command(runs_dir: Path, as_json: bool) -> None:
    """Money and GPU-hours per campaign, for every campaign under the runs folder (summaries'
    ledger; RunPod pods' own cost, re-rolled and lost pods included)."""
    from golfrun import budget

    rows = budget.spend_table(runs_dir)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        click.echo(budget.render_spend(rows))
