"""`golfrun pod up|status|logs|pull|down|sweep`: a campaign's RunPod pod from the laptop.

    golfrun pod up --campaign pr1610.toml          create the pod, start the campaign on it, return
    golfrun pod status --campaign pr1610.toml      pod, rate, cost so far, deadline, run state
    golfrun pod logs --campaign pr1610.toml -f     the run's log (follow until it ends)
    golfrun pod pull --campaign pr1610.toml        summaries, logs, tarball home, sha256 checked
    golfrun pod down --campaign pr1610.toml        pull, then terminate
    golfrun pod sweep [--yes]                      end golfrun- pods that no live campaign owns

The API key comes from RUNPOD_API_KEY, the API from RUNPOD_API_URL. Library modules are imported
inside the commands so `golfrun --help` stays fast.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from golfrun.cli import campaign_dir, campaign_options, guarded, load
from golfrun.errors import BackendError, GolfrunError
from golfrun.fileio import iso_at


def register(group: click.Group) -> None:
    group.add_command(pod)


@click.group()
def pod() -> None:
    """A campaign's RunPod pod: bring it up, watch it, bring results home, end it."""


def _attached(campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path) -> tuple[Any, Path, Any, Any]:
    """(campaign, campaign dir, client, pod record) for commands that need an existing pod."""
    from golfrun.backends.runpod import pods
    from golfrun.backends.runpod.api import RunpodClient

    campaign = load(campaign_spec, overrides, None)
    cdir = campaign_dir(runs_dir, campaign)
    record = pods.load_record(cdir)
    if record is None:
        raise BackendError(f"{pods.record_path(cdir)}: no pod recorded for campaign {campaign.name!r}; "
                           "start one with `golfrun pod up` or `golfrun run-all --backend runpod`")
    return campaign, cdir, RunpodClient.from_env(log=lambda m: click.echo(m, err=True)), record


def _transport(cdir: Path, record: Any) -> Any:
    from golfrun.backends.runpod import pods

    if not record.live:
        raise BackendError(f"pod {record.pod_id or record.name} has ended ({record.end_reason or record.status}); "
                           f"what was pulled is in {cdir}")
    return pods.connect(cdir, record, timeout_s=30)


@pod.command("up")
@campaign_options
@click.option("--keep", is_flag=True, help="Do not terminate the pod if bring-up fails.")
@click.pass_context
@guarded
def up(ctx: click.Context, campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None,
       keep: bool) -> None:
    """Create the pod and start the campaign on it, detached (= run-all --backend runpod --detach)."""
    from golfrun.pipeline.remote import RemoteOptions
    from golfrun.pipeline.runpod_campaign import run_campaign

    campaign = load(campaign_spec, overrides, "runpod")
    ctx.exit(run_campaign(campaign, campaign_dir(runs_dir, campaign), RemoteOptions(detach=True, keep=keep),
                          lambda m: click.echo(m)))


@pod.command("status")
@campaign_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@guarded
def status(campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None, as_json: bool) -> None:
    """The pod: id, status, GPUs, rate, cost so far, deadline, and the run's state."""
    from golfrun.backends.runpod import pods
    from golfrun.backends.runpod import remote as rp

    campaign, cdir, client, record = _attached(campaign_spec, overrides, runs_dir)
    if record.live:
        pods.refresh(client, cdir, record)
    run = "unknown"
    if record.live and record.ssh_host:
        try:
            transport = pods.connect(cdir, record, timeout_s=15)
            code, alive = rp.run_state(transport, rp.PodPaths(record.workdir, campaign.name))
            transport.close()
            run = f"exited {code}" if code is not None else ("running" if alive else "not running")
        except GolfrunError as exc:
            run = f"unreachable ({exc})"
    info = {"campaign": campaign.name, "pod_id": record.pod_id, "name": record.name, "status": record.status,
            "gpu": f"{record.gpu_count}x {record.gpu_type}", "data_center": record.data_center_id,
            "cost_per_hr_usd": record.cost_per_hr, "cost_so_far_usd": round(record.cost_so_far(), 4),
            "budget_usd": record.budget_usd, "deadline": _iso(record.deadline_epoch), "run": run,
            "ended": record.ended_at, "end_reason": record.end_reason, "earlier_pods": len(record.earlier_pods)}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if value not in ("", None):
            click.echo(f"{key:>16}  {value}")


@pod.command("logs")
@campaign_options
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run ends.")
@click.option("--interval", type=float, default=5.0, show_default=True, help="Seconds between reads when following.")
@guarded
def logs(campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None, follow: bool,
         interval: float) -> None:
    """The log of `golfrun run-all` on the pod."""
    from golfrun.backends.runpod import remote as rp

    campaign, cdir, _client, record = _attached(campaign_spec, overrides, runs_dir)
    transport = _transport(cdir, record)
    paths = rp.PodPaths(record.workdir, campaign.name)
    offset = 0
    try:
        while True:
            poll = rp.poll_run(transport, paths, offset)
            offset = poll.offset
            if poll.text:
                click.echo(poll.text, nl=False)
            if not follow:
                break
            if poll.state != "alive":
                click.echo(f"[golfrun] run-all on the pod exited {poll.exit_code}" if poll.exit_code is not None
                           else "[golfrun] run-all is not running on the pod", err=True)
                break
            time.sleep(interval)
    finally:
        transport.close()


@pod.command("pull")
@campaign_options
@guarded
def pull(campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None) -> None:
    """Bring summaries, logs and the preserve tarball home; every file's sha256 is checked."""
    from golfrun.backends.runpod import remote as rp

    campaign, cdir, _client, record = _attached(campaign_spec, overrides, runs_dir)
    transport = _transport(cdir, record)
    try:
        rp.pull(transport, rp.PodPaths(record.workdir, campaign.name).campaign_dir, cdir, lambda m: click.echo(m))
    finally:
        transport.close()


@pod.command("down")
@campaign_options
@click.option("--no-pull", is_flag=True, help="Terminate without pulling results first.")
@guarded
def down(campaign_spec: str | None, overrides: tuple[str, ...], runs_dir: Path, backend: str | None, no_pull: bool) -> None:
    """Pull results, then terminate the pod."""
    from golfrun.backends.runpod import pods
    from golfrun.backends.runpod import remote as rp

    from golfrun.pipeline.lock import CampaignLock

    campaign, cdir, client, record = _attached(campaign_spec, overrides, runs_dir)
    if not record.live:
        click.echo(f"pod {record.pod_id or record.name} already ended ({record.end_reason or record.status})")
        return
    # a `run-all --backend runpod` still following this pod would replace it: it must stop first
    with CampaignLock(cdir, command="golfrun pod down"):
        if not no_pull and pods.refresh(client, cdir, record) is not None:
            transport = _transport(cdir, record)
            try:
                rp.pull(transport, rp.PodPaths(record.workdir, campaign.name).campaign_dir, cdir, lambda m: click.echo(m))
            finally:
                transport.close()
        pods.terminate(client, cdir, record, "golfrun pod down", lambda m: click.echo(m))
    click.echo(f"cost: {record.cost_so_far():.2f} USD")


@pod.command("sweep")
@click.option("--runs-dir", "runs_dirs", type=click.Path(file_okay=False, path_type=Path), multiple=True,
              help="Runs folders whose live campaigns own pods (default: runs); repeatable.")
@click.option("--yes", is_flag=True, help="Terminate the orphans (otherwise only list them).")
@guarded
def sweep(runs_dirs: tuple[Path, ...], yes: bool) -> None:
    """List `golfrun-` pods that no live campaign owns; terminate them with --yes."""
    from golfrun.backends.runpod import pods
    from golfrun.backends.runpod.api import RunpodClient

    client = RunpodClient.from_env(log=lambda m: click.echo(m, err=True))
    orphans = pods.sweep(client, list(runs_dirs) or [Path("runs")], yes, lambda m: click.echo(m))
    if not orphans:
        click.echo("no orphan golfrun pods")


def _iso(epoch: float) -> str:
    return iso_at(epoch) if epoch else ""
