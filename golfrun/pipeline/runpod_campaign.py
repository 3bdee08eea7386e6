"""`golfrun run-all --backend runpod`: the whole campaign on a RunPod pod, from a laptop.

create pod (id → runs/<campaign>/pod.json) → wait RUNNING + ssh.direct → first SSH login (host key
recorded) → in-pod deadline timer → push code, campaign and earlier summaries → prepare (setup
lines, install golfrun unless present) → verify-pod on the pod → `golfrun run-all` detached
(setsid; exit code to a file) → follow the log → pull results with sha256 checks → terminate.

`--detach` returns once the run has started; `golfrun pod logs|status|pull|down` pick it up later,
and running this again re-attaches to the live pod instead of creating another. Any failure
terminates the pod unless `--keep`. A pod lost mid-run (gone, stopped, restarted) is replaced by a
new one that resumes from the summaries already pulled home (the engine skips what is done).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun import budget
from golfrun.backends.runpod import pods
from golfrun.backends.runpod import remote as rp
from golfrun.backends.runpod import volumes
from golfrun.backends.runpod.api import RunpodClient
from golfrun.errors import BackendError, GolfrunError, TransportError
from golfrun.fileio import iso_at, now_iso
from golfrun.pipeline.remote import RemoteOptions
from golfrun.secrets import is_secret_name, redact_text

if TYPE_CHECKING:
    from golfrun.campaign import Campaign

Log = Callable[[str], None]
MAX_PODS = 3  # one campaign run uses at most this many pods (the first + resumes after losses)


class BudgetReached(BackendError):
    """The campaign's pods cost what [backend.runpod] budget_usd allows."""


class VerifyFailed(BackendError):
    """verify-pod did not pass on the pod; `code` is its exit code (the verdict's)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class FollowTiming:
    log_poll_s: float = 5.0  # read the pod's log this often
    api_poll_s: float = 30.0  # ask the API about the pod (status, rate) this often
    ssh_grace_s: float = 300.0  # SSH may fail this long (pod still RUNNING) before the pod counts as lost
    pull_every_s: float = 120.0  # bring finished summaries home while the run goes on (a lost pod loses less)


def run_campaign(campaign: "Campaign", campaign_dir: Path, options: RemoteOptions, log: Log, *,
                 timing: Mapping[str, float] | None = None, follow_timing: FollowTiming | None = None) -> int:
    """Run the campaign on a pod. Returns the exit code of `golfrun run-all` on the pod (0 when
    detached). `timing` overrides RunpodSettings' wait limits (tests use short ones)."""
    settings = pods.RunpodSettings.from_campaign(campaign)
    if timing:
        settings = dataclasses.replace(settings, **timing)
    campaign_dir = Path(campaign_dir)
    forwarded = forwarded_env(campaign)
    if options.dry_run:
        return plan_campaign(campaign, log)
    client = RunpodClient.from_env(log=log)
    campaign_dir.mkdir(parents=True, exist_ok=True)
    from golfrun.pipeline.lock import CampaignLock

    # One laptop process per campaign: two would each create a pod; `golfrun pod down` waits too.
    with CampaignLock(campaign_dir, command="golfrun run-all --backend runpod"):
        return _run_locked(client, campaign, settings, campaign_dir, options, forwarded, log, follow_timing)


def _run_locked(client: RunpodClient, campaign: "Campaign", settings: pods.RunpodSettings, campaign_dir: Path,
                options: RemoteOptions, forwarded: Mapping[str, str], log: Log, follow_timing: FollowTiming | None) -> int:
    scrub = list(forwarded.values())
    say: Log = lambda text: log(redact_text(text, scrub))  # noqa: E731
    record = _starting_record(client, campaign, settings, campaign_dir, say)
    volume = volumes.ensure_data_volume(client, settings, campaign, say)  # the data, once for every pod
    if volume is not None:
        settings = volumes.with_volume(settings, volume)
    paths = rp.PodPaths(settings.workdir, campaign.name)
    used, rerolls = 0, 0
    while True:
        if settings.budget_usd and record.cost_so_far() >= settings.budget_usd:
            raise BudgetReached(f"budget reached: this campaign's pods cost {record.cost_so_far():.2f} USD of "
                                f"{settings.budget_usd:.2f} ([backend.runpod] budget_usd); no new pod")
        if not record.live:
            # [budget] counts every attempt and the pods' idle time in this folder: a campaign that has
            # already spent it gets no new pod (a live one is re-attached: its own golfrun refuses stages)
            budget.check_spent(campaign, campaign_dir, "a new pod")
            used += 1
            if used > MAX_PODS + rerolls:
                raise BackendError(f"gave up after {MAX_PODS} pods were lost; see {pods.record_path(campaign_dir)}")
            pods.create(client, settings, campaign_dir, record, say)
        transport = None
        try:
            try:
                transport = bring_up(client, settings, campaign, campaign_dir, record, paths, forwarded, options, say)
                if options.detach:
                    say(f"detached: the campaign runs on pod {record.pod_id}; follow it with `golfrun pod logs --follow`, "
                        f"bring results home with `golfrun pod pull`, end the pod with `golfrun pod down` "
                        f"(it ends itself at {_iso(record.deadline_epoch)} in any case)")
                    return 0
                code = follow(client, settings, campaign_dir, record, paths, transport, say, follow_timing or FollowTiming())
                rp.pull(transport, paths.campaign_dir, campaign_dir, say)
                _finish(client, campaign_dir, record, options, f"campaign finished (exit {code})", say)
                return code
            except TransportError as exc:
                # An SSH failure because the pod itself went away is a lost pod, not a bug.
                if record.pod_id and client.get_pod(record.pod_id) is None:
                    raise pods.PodLostError(f"the pod went away ({exc})") from None
                raise
        except pods.PodLostError as lost:
            record = _after_loss(client, settings, campaign_dir, record, transport, paths, lost, say)
        except pods.PodError as broken:  # never booted: stuck, ERROR, a restart loop, no GPUs, no SSH
            if not _end_for_reroll(client, settings, campaign_dir, record, options, f"did not boot: {broken}",
                                   rerolls, say):
                raise
            rerolls, record = rerolls + 1, pods.retire(record)
            pods.save_record(campaign_dir, record)
        except VerifyFailed as failed:
            say(str(failed))
            slow = _machine_failures(campaign_dir)
            if slow and not _budget_spent(settings, record) and _end_for_reroll(
                    client, settings, campaign_dir, record, options, f"verify-pod: {', '.join(slow)}", rerolls, say):
                rerolls, record = rerolls + 1, pods.retire(record)
                pods.save_record(campaign_dir, record)
                continue
            _finish(client, campaign_dir, record, options, "verify-pod failed", say)
            if _budget_spent(settings, record):
                # the in-pod timer ended the pod while verify-pod ran: the budget, not the machine, stopped it
                raise BudgetReached(f"budget reached: this campaign's pods cost {record.cost_so_far():.2f} USD of "
                                    f"{settings.budget_usd:.2f} ([backend.runpod] budget_usd) during verify-pod") from None
            return failed.code
        except BaseException as exc:
            _on_failure(client, campaign_dir, record, transport, paths, options, exc, say)
            raise
        finally:
            if transport is not None:
                transport.close()


def _starting_record(client: RunpodClient, campaign: "Campaign", settings: pods.RunpodSettings, campaign_dir: Path,
                     say: Log) -> pods.PodRecord:
    """The pod record to work with: the live pod of an earlier run (re-attach), else a fresh one
    that keeps the earlier pods' costs."""
    record = pods.load_record(campaign_dir)
    if record is not None and not record.pod_id and not record.ended_at:
        # the laptop died inside the create call: the pod may exist under the recorded name
        found = client.find_pods(record.name)
        if found:
            record.pod_id, record.status = found[0].id, found[0].status
            pods.save_record(campaign_dir, record)
            say(f"found pod {record.pod_id} created for {record.name} by an interrupted run")
    if record is not None and record.live:
        say(f"re-attaching to pod {record.pod_id} ({record.name}) from {pods.record_path(campaign_dir)}")
        if pods.refresh(client, campaign_dir, record) is None:
            say(f"pod {record.pod_id} is gone; starting a new pod that resumes from the summaries pulled so far")
            record = pods.retire(record)
    elif record is not None:
        record = pods.retire(record)
    else:
        record = pods.PodRecord(campaign=campaign.name, name=pods.pod_name(campaign.name), api_url=client.base_url,
                                budget_usd=settings.budget_usd, workdir=settings.workdir)
    record.budget_usd, record.workdir, record.api_url = settings.budget_usd, settings.workdir, client.base_url
    return record


def _after_loss(client: RunpodClient, settings: pods.RunpodSettings, campaign_dir: Path, record: pods.PodRecord,
                transport: Any, paths: rp.PodPaths, lost: pods.PodLostError, say: Log) -> pods.PodRecord:
    """A lost pod: pull what can be pulled, end it, and return the record of the pod that resumes
    (BudgetReached / BackendError when the budget or the deadline ended it)."""
    say(f"pod {record.pod_id} lost: {lost}")
    _best_effort_pull(transport, paths, campaign_dir, say)
    pods.terminate(client, campaign_dir, record, f"lost: {lost}", say)
    if _budget_spent(settings, record):
        raise BudgetReached(f"budget reached: this campaign's pods cost {record.cost_so_far():.2f} USD of "
                            f"{settings.budget_usd:.2f} ([backend.runpod] budget_usd); the pod ended itself") from None
    if record.deadline_epoch and time.time() >= record.deadline_epoch - 5:
        raise BackendError(f"the campaign's deadline ({settings.deadline_minutes} min) ended pod {record.pod_id}; "
                           f"what was pulled is in {campaign_dir}; `golfrun run-all --backend runpod` resumes "
                           "on a new pod") from None
    record = pods.retire(record)
    pods.save_record(campaign_dir, record)
    say(f"resuming on a new pod {record.name} from the summaries pulled so far")
    return record


def _on_failure(client: RunpodClient, campaign_dir: Path, record: pods.PodRecord, transport: Any, paths: rp.PodPaths,
                options: RemoteOptions, exc: BaseException, say: Log) -> None:
    """Before an error leaves the laptop's run: Ctrl-C after the start leaves the run going on the
    pod; anything else ends the pod unless --keep (a budget stop pulls first)."""
    if isinstance(exc, KeyboardInterrupt):
        if record.run_started_at and record.live:
            say(f"interrupted: the campaign goes on on pod {record.pod_id} (it ends itself at "
                f"{_iso(record.deadline_epoch)}); re-attach with `golfrun run-all --backend runpod` or "
                "`golfrun pod logs --follow`, end it with `golfrun pod down`")
        elif record.live and not options.keep:
            pods.terminate(client, campaign_dir, record, "interrupted during bring-up", say)
        return
    if isinstance(exc, BudgetReached):
        _best_effort_pull(transport, paths, campaign_dir, say)
    if options.keep:
        say(f"--keep: pod {record.pod_id} is left running (it ends itself at {_iso(record.deadline_epoch)}); "
            "end it with `golfrun pod down`")
    elif record.live:
        try:
            pods.terminate(client, campaign_dir, record, f"failed: {type(exc).__name__}: {exc}"[:300], say)
        except GolfrunError as term_err:
            say(f"could not terminate pod {record.pod_id}: {term_err}; run `golfrun pod down` or `golfrun pod sweep --yes`")


# verify-pod checks that another pod of the same request may pass (the machine, not the campaign)
_MACHINE_CHECKS = ("gpu_count", "gpu_name", "gpu_form_factor", "free_disk_gb")


def _machine_failures(campaign_dir: Path) -> list[str]:
    """The failed checks of the pulled verify-pod summary when every one is about the machine
    (preflight figures, GPUs, disk), so that another pod may pass; [] otherwise."""
    import json

    try:
        doc = json.loads((campaign_dir / "00-verify-pod" / "summary.json").read_text())
    except (OSError, ValueError):
        return []
    failed = [c for c in doc.get("checks") or [] if not c.get("passed") and c.get("severity", "fail") == "fail"]
    names = [str(c.get("name")) for c in failed]
    machine = all(n.startswith("preflight:") or n in _MACHINE_CHECKS for n in names)
    return [f"{c['name']} {c.get('observed')} (limit {c.get('op')} {c.get('limit')})" for c in failed] if names and machine else []


def _end_for_reroll(client: RunpodClient, settings: pods.RunpodSettings, campaign_dir: Path, record: pods.PodRecord,
                    options: RemoteOptions, why: str, rerolls: int, say: Log) -> bool:
    """Terminate a slow or broken pod (its cost stays in pod.json); True when another may be
    created ([backend.runpod] max_rerolls not used up). --keep leaves it for a person."""
    if options.keep:
        say(f"--keep: pod {record.pod_id} is left running ({why}); end it with `golfrun pod down`")
        return False
    pods.terminate(client, campaign_dir, record, f"re-roll: {why}"[:300], say)
    if rerolls >= settings.max_rerolls:
        say(f"no re-roll left ([backend.runpod] max_rerolls = {settings.max_rerolls}); pods so far cost "
            f"{record.cost_so_far():.4f} USD")
        return False
    say(f"re-roll {rerolls + 1} of {settings.max_rerolls}: pod {record.pod_id} ended ({why}); creating another")
    return True


def bring_up(client: RunpodClient, settings: pods.RunpodSettings, campaign: "Campaign", campaign_dir: Path,
             record: pods.PodRecord, paths: rp.PodPaths, forwarded: Mapping[str, str], options: RemoteOptions,
             log: Log) -> Any:
    """From a created pod to a detached run (or to an already started one): returns the transport."""
    pod = client.get_pod(record.pod_id)
    if pod is None:
        raise pods.PodLostError(f"pod {record.pod_id} is gone")
    if not (record.host_key and pod.status == "RUNNING" and pod.ssh_direct is not None):
        pods.wait_running(client, settings, campaign_dir, record, log)
    else:
        pods.refresh(client, campaign_dir, record)
    try:
        transport = pods.connect(campaign_dir, record, timeout_s=settings.ssh_timeout_s)
    except TransportError as exc:
        if client.get_pod(record.pod_id) is None:
            raise pods.PodLostError(f"the pod went away before SSH worked ({exc})") from None
        raise pods.PodError(f"pod {record.pod_id}: no SSH login within {settings.ssh_timeout_s:.0f}s: {exc}") from None
    try:
        _prepare_and_start(client, settings, campaign, campaign_dir, record, paths, forwarded, options, log, transport)
    except BaseException:
        transport.close()
        raise
    return transport


def _budget_spent(settings: pods.RunpodSettings, record: pods.PodRecord) -> bool:
    return bool(settings.budget_usd) and (record.cost_so_far() >= settings.budget_usd
                                          or _ended_by_budget_deadline(settings, record))


def _ended_by_budget_deadline(settings: pods.RunpodSettings, record: pods.PodRecord) -> bool:
    """The in-pod timer ended the pod at a deadline that the budget (not deadline_minutes) set.

    The timer may fire a moment before the cost we compute reaches the budget, so comparing costs
    alone would take a pod ended for its budget for a lost one, and replace it.
    """
    if not (record.deadline_epoch and record.running_since_epoch) or time.time() < record.deadline_epoch - 5:
        return False
    return record.deadline_epoch - record.running_since_epoch < settings.deadline_minutes * 60.0 - 60.0


def _prepare_and_start(client: RunpodClient, settings: pods.RunpodSettings, campaign: "Campaign", campaign_dir: Path,
                       record: pods.PodRecord, paths: rp.PodPaths, forwarded: Mapping[str, str],
                       options: RemoteOptions, log: Log, transport: Any) -> None:
    rp.ensure_state_dir(transport, paths)
    at = pods.deadline_epoch(settings, record)
    # re-attaching never moves a pod's deadline later, only earlier (a smaller budget)
    record.deadline_epoch = min(record.deadline_epoch, at) if record.deadline_epoch else at
    rp.start_deadline(transport, paths, record.deadline_epoch, record.api_url or client.base_url,
                      pods.pod_env_file(record.pod_id))
    pods.save_record(campaign_dir, record)
    log(f"pod {record.pod_id} ends itself at {_iso(record.deadline_epoch)} (in-pod timer); "
        f"{record.cost_per_hr:.2f} USD/h")
    exit_code, alive = rp.run_state(transport, paths)
    if exit_code is not None or alive:
        log(f"the campaign's run is already {'finished' if exit_code is not None else 'running'} on pod {record.pod_id}")
        return
    from golfrun.campaign.load import REPO_ROOT

    remote_trainer = rp.push_code(transport, REPO_ROOT, Path(campaign.trainer), paths)
    pod_campaign = dataclasses.replace(campaign, trainer=Path(remote_trainer),
                                       backend=dataclasses.replace(campaign.backend, kind="local"))
    if settings.data_volume_gb and not campaign.data.dir:  # the data lives on the network volume
        pod_campaign = dataclasses.replace(pod_campaign, data=dataclasses.replace(
            campaign.data, dir=volumes.pod_data_dir(settings)))
    rp.put_text(transport, pod_campaign.to_toml(), paths.campaign_file)
    rp.push_runs(transport, campaign_dir, paths)
    _write_info(transport, record, paths)
    force = list(options.force)
    if record.earlier_pods and not force and not campaign.data.dir and not settings.data_volume_gb:
        # The summaries came back from the lost pod, the dataset did not (it never leaves a pod):
        # download-data must build it again; later stages then find their jobs cached one by one.
        force = ["download-data"]
    script = rp.render_pod_script(paths, settings.setup, rp.run_all_args(paths, force), rp.verify_args(paths))
    rp.put_text(transport, script, rp.posixpath.join(paths.state, rp.POD_SCRIPT), 0o755)
    pod_env = {**dict(settings.env), **forwarded}
    step = transport.run(["bash", rp.posixpath.join(paths.state, rp.POD_SCRIPT), "prepare"], env=pod_env, timeout_s=1800)
    _show_output(step, log)
    step.check()
    verify = transport.run(["bash", rp.posixpath.join(paths.state, rp.POD_SCRIPT), "verify"], env=pod_env, timeout_s=900)
    _show_output(verify, log)
    if verify.returncode != 0:
        rp.pull(transport, paths.campaign_dir, campaign_dir, log)
        raise VerifyFailed(f"verify-pod did not pass on pod {record.pod_id} (exit {verify.returncode}); "
                           f"see {campaign_dir / '00-verify-pod' / 'summary.json'}", verify.returncode)
    rp.start_detached(transport, paths, ["bash", rp.posixpath.join(paths.state, rp.POD_SCRIPT), "run"],
                      "run.log", "run.pid", env=pod_env)
    record.run_started_at = now_iso()
    pods.save_record(campaign_dir, record)
    log(f"golfrun run-all started on pod {record.pod_id}, detached (log {paths.in_state('run.log')})")


def follow(client: RunpodClient, settings: pods.RunpodSettings, campaign_dir: Path, record: pods.PodRecord,
           paths: rp.PodPaths, transport: Any, log: Log, timing: FollowTiming) -> int:
    """Stream the run's log until its exit code appears. Raises PodLostError when the pod goes away
    or restarts, BudgetReached when the budget is spent, BackendError past the deadline."""
    offset, last_api, ssh_failing_since = 0, 0.0, None
    last_uptime, last_pull = -1.0, time.monotonic()
    while True:
        now = time.monotonic()
        if now - last_pull >= timing.pull_every_s:
            last_pull = now
            try:
                rp.pull(transport, paths.campaign_dir, campaign_dir, log, strict=False)
            except TransportError as exc:
                log(f"periodic pull failed ({exc}); trying again later")
        if now - last_api >= timing.api_poll_s:
            last_api = now
            pod = pods.refresh(client, campaign_dir, record)
            if pod is None:
                raise pods.PodLostError("the pod is gone (terminated outside golfrun, or by its deadline)")
            if pod.status != "RUNNING":
                raise pods.PodLostError(f"the pod is {pod.status}")
            if pod.uptime_s is not None and 0 <= pod.uptime_s < last_uptime:
                raise pods.PodLostError("the pod restarted (its container disk was wiped)")
            last_uptime = pod.uptime_s if pod.uptime_s is not None else last_uptime
            if settings.budget_usd and record.cost_so_far() >= settings.budget_usd:
                raise BudgetReached(f"budget reached: {record.cost_so_far():.2f} USD of {settings.budget_usd:.2f} "
                                    "([backend.runpod] budget_usd); work stopped")
            if record.deadline_epoch and time.time() > record.deadline_epoch + 120:
                raise BackendError(f"the campaign's deadline ({settings.deadline_minutes} min) passed on pod {record.pod_id}")
        try:
            poll = rp.poll_run(transport, paths, offset)
            offset = poll.offset
            for line in poll.text.splitlines():
                log(f"[pod] {line}")
            ssh_failing_since = None
        except TransportError as exc:
            ssh_failing_since = ssh_failing_since or now
            if now - ssh_failing_since > timing.ssh_grace_s:
                raise pods.PodLostError(f"no SSH to the pod for {timing.ssh_grace_s:.0f}s: {exc}") from None
            last_api = 0.0  # ask the API at once whether the pod still exists
            time.sleep(timing.log_poll_s)
            continue
        if poll.exit_code is not None:
            code = poll.exit_code
            record.exit_code = code
            pods.save_record(campaign_dir, record)
            log(f"golfrun run-all on pod {record.pod_id} exited {code}")
            return code
        if poll.state != "alive":
            raise pods.PodLostError("golfrun run-all on the pod stopped without writing its exit code")
        time.sleep(timing.log_poll_s)


def forwarded_env(campaign: "Campaign", env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of `[backend.runpod] forward_env` that are set here (they go to the pod's run)."""
    env = os.environ if env is None else env
    names = list(campaign.backend.runpod.forward_env)
    for name in names:
        if name.upper() in ("RUNPOD_API_KEY", "RUNPOD_API_URL"):
            raise BackendError(f"[backend.runpod] forward_env: {name} is never sent to a pod (the pod has its own key)")
    return {name: env[name] for name in names if env.get(name)}


def _finish(client: RunpodClient, campaign_dir: Path, record: pods.PodRecord, options: RemoteOptions,
            reason: str, log: Log) -> None:
    if options.keep:
        log(f"--keep: pod {record.pod_id} is left running; end it with `golfrun pod down`")
        return
    pods.terminate(client, campaign_dir, record, reason, log)
    log(f"cost: {record.cost_so_far():.2f} USD ({record.cost_per_hr:.2f} USD/h)")


def _best_effort_pull(transport: Any, paths: rp.PodPaths, campaign_dir: Path, log: Log) -> None:
    if transport is None:
        return
    try:
        rp.pull(transport, paths.campaign_dir, campaign_dir, log)
    except GolfrunError as exc:
        log(f"could not pull from the pod: {exc}")


def _write_info(transport: Any, record: pods.PodRecord, paths: rp.PodPaths) -> None:
    """runs/<campaign>/pod.json on the pod: the pod's record (no secret in it), so that preserve
    puts it into the tarball and provenance (`cluster.pod`): ids, GPUs, USD/h, cost so far, deadline.
    The laptop's own pod.json is never overwritten by it (pull skips that name)."""
    import json

    doc = {**dataclasses.asdict(record), "cost_so_far_usd": round(record.cost_so_far(), 6), "as_of": now_iso()}
    transport.run(["mkdir", "-p", paths.campaign_dir]).check()
    rp.put_text(transport, json.dumps(doc, indent=2, sort_keys=True) + "\n", rp.posixpath.join(paths.campaign_dir, pods.POD_JSON))


def _show_output(step: Any, log: Log) -> None:
    for line in (step.stdout + step.stderr).splitlines()[-40:]:
        log(f"[pod] {line}")


def plan_campaign(campaign: "Campaign", log: Log) -> int:
    """--dry-run: the pod that would be created (secrets masked) and what would run on it."""
    import json

    settings = pods.RunpodSettings.from_campaign(campaign)
    forwarded_env(campaign)  # a forbidden forward_env name is an error here too
    body = pods.create_body(settings, pods.pod_name(campaign.name, "<id>"), "<per-run ssh public key>")
    body["env"] = {k: ("***" if is_secret_name(k) else v) for k, v in body["env"].items()}
    log("dry run: would create this pod (POST /v2/pods) and run the campaign on it:")
    log(json.dumps(body, indent=2))
    log(f"then: in-pod deadline {settings.deadline_minutes} min"
        + (f", budget {settings.budget_usd:.2f} USD" if settings.budget_usd else "")
        + f", workdir {settings.workdir}, setup lines: {len(settings.setup)}")
    return 0


def _iso(epoch: float) -> str:
    return iso_at(epoch) if epoch else "?"
