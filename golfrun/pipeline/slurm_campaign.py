"""`golfrun run-all --backend slurm`: the whole campaign as a chain of Slurm jobs.

One Slurm job per stage runs that stage on the cluster (`python -m golfrun.pipeline.slurm_job`),
so the gates decide where the data is. Ablation variants and gate-b seeds run as a job array
(one task per trainer job, `%throttle`) followed by an aggregation job that finds every job
cached and writes the stage's summary. Stages are chained with `--dependency=afterok:<ids>
--kill-on-invalid-dep=yes`: a stage that ends in anything but PASS exits non-zero, and Slurm
cancels everything downstream. `preserve` depends with `afterany`, so it always runs.

Nothing of golfrun has to stay alive after submission: by default `run_campaign` follows the jobs
(one squeue/sacct call per interval) and pulls the results home; with `--detach` it returns as
soon as everything is submitted, and `golfrun status|cancel|pull` work from `slurm.json` later.

Over SSH (`--ssh user@host[:port]` or backend.slurm.ssh) the code is pushed to
`<remote_dir>/code/<tree digest>` (golfrun/transport/sync.py) and the campaign runs in `<remote_dir>/runs`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun.backends.base import JobState, JobStatus
from golfrun.backends.slurm import Poller, SlurmClient, slurm_time
from golfrun.errors import BackendError, GolfrunError
from golfrun.fileio import epoch_of, now_iso, write_json_atomic, write_text_atomic
from golfrun.pipeline.remote import RemoteOptions
from golfrun.sbatch.render import Container, SbatchSpec, render_stage_script, sbatch_argv
from golfrun.stages import spec as spec_of
from golfrun.summary import EXIT_BUDGET, EXIT_CODES, STAGES, Verdict

if TYPE_CHECKING:
    from golfrun.campaign import Campaign
    from golfrun.campaign.schema import SlurmBackend

Log = Callable[[str], None]
STATE_FILE = "slurm.json"
STATE_SCHEMA = "golfrun.slurm-campaign/1"
SCRIPTS_DIR = "slurm"
CAMPAIGN_FILE = "campaign.slurm.toml"
DEFAULT_REMOTE_DIR = "golfrun-work"
PYTHON = "python3"  # after the campaign's set-up lines (venv activation) on the cluster


# ------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class ClusterPaths:
    """Where things are on the machine that runs sbatch (and on the compute nodes)."""

    code: str  # jobs cd here and import golfrun from here
    runs: str  # the runs folder (runs/<campaign>/ below it)
    campaign: str

    @property
    def campaign_dir(self) -> str:
        return posixpath.join(self.runs, self.campaign)

    @property
    def campaign_file(self) -> str:
        return posixpath.join(self.campaign_dir, CAMPAIGN_FILE)

    @property
    def scripts(self) -> str:
        return posixpath.join(self.campaign_dir, SCRIPTS_DIR)


@dataclass
class Submission:
    """One sbatch call of the plan."""

    key: str  # "gate-a", "ablation.tasks", "ablation"
    stage: str
    kind: str  # stage | tasks | aggregate
    script_name: str
    spec: SbatchSpec
    after: list[str] = field(default_factory=list)  # keys this one waits for
    dep_type: str = "afterok"
    job_id: str = ""


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def array_size(campaign: "Campaign", stage: str) -> int:
    """The tasks of the stage's job array, as its SPEC declares them; 1 for a stage with no array."""
    array = spec_of(stage).array
    return array.size(campaign) if array is not None else 1


def in_waves(campaign: "Campaign", stage: str) -> bool:
    """The stage's SPEC runs its jobs in waves: one job array and aggregation job per wave, whatever its size."""
    array = spec_of(stage).array
    return array is not None and array.in_waves(campaign)


def stage_time(settings: "SlurmBackend", stage: str) -> str:
    value = settings.time.get(stage, settings.time.get("default", ""))
    if value in ("", None):
        return ""
    if isinstance(value, int):
        return str(value)  # minutes, as Slurm reads a bare number
    return slurm_time(value)


def cluster_campaign(campaign: "Campaign", trainer: str) -> "Campaign":
    """The campaign as the cluster runs it: trainer path there, one trainer process per GPU."""
    s = campaign.backend.slurm
    local = dataclasses.replace(campaign.backend.local, nproc_per_node=max(1, int(s.gpus_per_node)))
    backend = dataclasses.replace(campaign.backend, kind="slurm", local=local)
    return dataclasses.replace(campaign, trainer=Path(trainer), backend=backend)


def plan_submissions(campaign: "Campaign", paths: ClusterPaths, force: tuple[str, ...] = ()) -> list[Submission]:
    """Every sbatch call, in submission order, with its script and dependencies (pure)."""
    s = campaign.backend.slurm
    for name in force:
        if name not in STAGES:
            raise GolfrunError(f"--force {name!r}: not a stage; stages are: {', '.join(STAGES)}")
    first_forced = min((STAGES.index(x) for x in force), default=len(STAGES))
    container = Container(s.container.image, tuple(s.container.mounts), s.container.workdir) if s.container.image else None
    base_env = {"PYTHONPATH": paths.code, "PYTHONUNBUFFERED": "1", "GOLFRUN_SRUN_NODES": str(s.nodes)}

    def spec(stage: str, kind: str, command_extra: list[str], heavy: bool) -> SbatchSpec:
        nn = STAGES.index(stage)
        name = f"{campaign.name}.{nn:02d}-{stage}" + (".tasks" if kind == "tasks" else "")
        pattern = "%x-%A_%a.out" if kind == "tasks" else "%x-%j.out"
        return SbatchSpec(
            job_name=name,
            description=f"campaign {campaign.name}, stage {stage} ({kind})",
            command=(PYTHON, "-m", "golfrun.pipeline.slurm_job", "--campaign-file", paths.campaign_file,
                     "--runs-dir", paths.runs, "--stage", stage, *command_extra),
            workdir=paths.code,
            output=posixpath.join(paths.scripts, pattern),
            partition=s.partition,
            account=s.account,
            qos=s.qos,
            time=stage_time(s, stage),
            nodes=int(s.nodes) if heavy else 1,
            ntasks_per_node=max(1, int(s.gpus_per_node)) if heavy else 1,
            gpus_per_node=int(s.gpus_per_node) if heavy else 0,
            cpus_per_task=int(s.cpus_per_task),
            mem=s.mem if heavy else "",
            constraint=s.constraint if heavy else "",
            exclusive=bool(s.exclusive) if heavy else False,
            array=f"0-{array_size(campaign, stage) - 1}" if kind == "tasks" else "",
            array_throttle=int(s.array_throttle) if kind == "tasks" else 0,
            extra_sbatch=tuple(s.extra_sbatch),
            setup=tuple(s.setup),
            env=tuple(base_env.items()),
            container=container,
        )

    subs: list[Submission] = []
    previous: str | None = None
    for i, stage in enumerate(STAGES):
        forced = i >= first_forced
        flags = (["--force"] if forced else []) + (["--no-job-cache"] if stage in force else [])
        nn = f"{i:02d}-{stage}"
        if spec_of(stage).runs_when_blocked:  # preserve: after everything, whatever its outcome
            subs.append(Submission(stage, stage, "stage", f"{nn}.sbatch", spec(stage, "stage", flags, False),
                                   [x.key for x in subs], "afterany"))
            break
        after = [previous] if previous else []
        if spec_of(stage).array_jobs and not forced and (array_size(campaign, stage) > 1 or in_waves(campaign, stage)):
            tasks = Submission(f"{stage}.tasks", stage, "tasks", f"{nn}.tasks.sbatch",
                               spec(stage, "tasks", ["--array-task"], True), after)
            agg = Submission(stage, stage, "aggregate", f"{nn}.sbatch", spec(stage, "aggregate", [], False), [tasks.key])
            subs += [tasks, agg]
        else:
            subs.append(Submission(stage, stage, "stage", f"{nn}.sbatch",
                                   spec(stage, "stage", flags, spec_of(stage).needs_gpus), after))
        previous = stage
    return subs


def submit_next_wave(campaign: "Campaign", stage: str, campaign_dir: Path, code: str, job_id: str,
                     log: Log) -> tuple[str, str]:
    """From the aggregation job of a stage run in waves (gate-b), on the cluster, whose looks asked
    for another wave: submit that wave's job array (the same tasks script: its plan is the first
    unfinished wave) and another aggregation job after it, and make the pending last job (preserve,
    which runs when blocked) that waited for this job wait for the new one instead — so it still
    runs once, at the end. Returns (tasks id, aggregation id)."""
    from golfrun.transport.local import LocalTransport

    paths = ClusterPaths(code=code, runs=str(Path(campaign_dir).parent), campaign=campaign.name)
    subs = {sub.key: sub for sub in plan_submissions(campaign, paths)}
    transport = LocalTransport()
    client = SlurmClient(transport, cwd=code)
    tasks = client.submit(posixpath.join(paths.scripts, subs[f"{stage}.tasks"].script_name))
    agg = client.submit(posixpath.join(paths.scripts, subs[stage].script_name), f"afterok:{tasks}")
    log(f"{stage}: next wave submitted: tasks job {tasks}, aggregation job {agg}")
    last = next(sub for sub in subs.values() if spec_of(sub.stage).runs_when_blocked)
    listed = transport.run(["squeue", "-h", "-t", "PENDING", "-n", last.spec.job_name, "-o", "%i %E"])
    for line in listed.stdout.splitlines():
        pid, _, deps = line.partition(" ")
        if job_id and job_id in deps:
            transport.run(["scontrol", "update", f"JobId={pid}", f"Dependency=afterany:{agg}"]).check()
            log(f"{stage}: {last.stage} (job {pid}) now waits for job {agg}")
    return tasks, agg


def dependency(sub: Submission, ids: dict[str, str]) -> str:
    if not sub.after:
        return ""
    return f"{sub.dep_type}:" + ":".join(ids[k] for k in sub.after)


# ------------------------------------------------------------------------------------- state file


def state_path(campaign_dir: Path) -> Path:
    return Path(campaign_dir) / STATE_FILE


def write_state(campaign_dir: Path, state: dict[str, Any]) -> None:
    write_json_atomic(state_path(campaign_dir), state)


def read_state(campaign_dir: Path) -> dict[str, Any]:
    path = state_path(campaign_dir)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GolfrunError(f"{path}: no Slurm submission recorded for this campaign (run `golfrun run-all --backend slurm`)") from None
    except (OSError, ValueError) as exc:
        raise GolfrunError(f"{path}: unreadable ({exc})") from None
    if not isinstance(state, dict) or state.get("schema") != STATE_SCHEMA:
        raise GolfrunError(f"{path}: not a {STATE_SCHEMA} file")
    return state


# ------------------------------------------------------------------------------------- transport


@dataclass(frozen=True)
class Connection:
    ssh: str  # "" = this machine
    known_hosts: str = ""
    key_path: str = ""
    accept_new_host_key: bool = False

    def open(self) -> Any:
        if not self.ssh:
            from golfrun.transport.local import LocalTransport

            return LocalTransport()
        from golfrun.transport.ssh import SshTransport

        return SshTransport(self.ssh, key_path=self.key_path or os.environ.get("GOLFRUN_SSH_KEY") or None,
                            known_hosts=self.known_hosts or None, accept_new_host_key=self.accept_new_host_key)


def _close(transport: Any) -> None:
    close = getattr(transport, "close", None)
    if close is not None:
        close()


def _resolve_remote_dir(transport: Any, remote_dir: str) -> str:
    if remote_dir.startswith("/"):
        return remote_dir.rstrip("/") or "/"
    home = transport.run(["pwd"]).check().stdout.strip()
    return posixpath.join(home, remote_dir or DEFAULT_REMOTE_DIR)


# ------------------------------------------------------------------------------------- run


def run_campaign(campaign: "Campaign", campaign_dir: Path, options: RemoteOptions, log: Log, *,
                 poll_interval_s: float = 2.0, max_poll_interval_s: float = 60.0, wait_deadline_s: float | None = None) -> int:
    """Submit the campaign's chain (or, with dry_run, only write the scripts); unless detached,
    follow it to the end and pull the results. Returns the campaign's exit code (0 when detached
    or dry-run)."""
    campaign_dir = Path(campaign_dir).absolute()
    if options.dry_run:
        return plan_campaign(campaign, campaign_dir, options, log)
    from golfrun import budget

    # The chain is submitted whole; its stage jobs hold each stage to [budget] on the cluster, but a
    # campaign that has already spent it (this folder's ledger) is refused here, before any sbatch.
    budget.check_spent(campaign, campaign_dir, "the Slurm chain")
    s = campaign.backend.slurm
    ssh = options.ssh or s.ssh
    transport = Connection(ssh or "", s.known_hosts, "", options.accept_new_host_key).open()
    try:
        paths, remote_dir, subs = _stage_code(transport, campaign, campaign_dir, ssh or "", options, log)
        client = SlurmClient(transport, cwd=paths.code)
        state = _submit_chain(client, campaign, campaign_dir, subs, paths, ssh or "", remote_dir, log)
        if options.detach:
            log(f"detached: {len(subs)} Slurm jobs submitted; follow with `golfrun status`, "
                f"stop with `golfrun cancel`, bring results home with `golfrun pull`")
            return 0
        deadline = wait_deadline_s if wait_deadline_s is not None else _wait_deadline(campaign)
        poller = Poller(client, min_interval_s=poll_interval_s, max_interval_s=max_poll_interval_s)
        return _follow(poller, transport, state, campaign_dir, deadline, log)
    finally:
        _close(transport)


def plan_campaign(campaign: "Campaign", campaign_dir: Path, options: RemoteOptions, log: Log) -> int:
    """--dry-run: write the sbatch scripts and the submission order; submit nothing."""
    campaign_dir = Path(campaign_dir).absolute()
    s = campaign.backend.slurm
    ssh = options.ssh or s.ssh
    scripts_local = campaign_dir / SCRIPTS_DIR
    paths = _paths(campaign, campaign_dir, ssh, s.remote_dir or f"~/{DEFAULT_REMOTE_DIR}")
    subs = plan_submissions(campaign, paths, tuple(options.force))
    _write_scripts(subs, scripts_local)
    _write_plan(subs, scripts_local, paths)
    if not ssh:
        write_text_atomic(campaign_dir / CAMPAIGN_FILE,
                          cluster_campaign(campaign, str(Path(campaign.trainer).absolute())).to_toml())
    log(f"dry run: {len(subs)} sbatch scripts in {scripts_local} (submit order in {scripts_local / 'submit-plan.txt'}); nothing submitted")
    return 0


def follow_campaign(campaign: "Campaign", campaign_dir: Path, log: Log, *, poll_interval_s: float = 2.0,
                    max_poll_interval_s: float = 60.0) -> int:
    """Re-attach to the campaign's last submission (slurm.json): wait for its end, pull, exit code."""
    state, transport = _reconnect(Path(campaign_dir))
    try:
        client = SlurmClient(transport, cwd=state["paths"]["code"])
        poller = Poller(client, min_interval_s=poll_interval_s, max_interval_s=max_poll_interval_s)
        return _follow(poller, transport, state, Path(campaign_dir).absolute(), _wait_deadline(campaign), log)
    finally:
        _close(transport)


def _stage_code(transport: Any, campaign: "Campaign", campaign_dir: Path, ssh: str, options: RemoteOptions,
                log: Log) -> tuple[ClusterPaths, str, list[Submission]]:
    """Plan the chain and put what its jobs read where they run: scripts, campaign file, code (SSH)."""
    s = campaign.backend.slurm
    remote_dir = _resolve_remote_dir(transport, s.remote_dir) if ssh else ""
    code_id = ""
    if ssh:
        from golfrun.transport import sync

        code_id = sync.tree_digest(repo_root())[:16]
    paths = _paths(campaign, campaign_dir, ssh, remote_dir, code_id)
    subs = plan_submissions(campaign, paths, tuple(options.force))
    campaign_dir.mkdir(parents=True, exist_ok=True)
    scripts_local = campaign_dir / SCRIPTS_DIR
    _write_scripts(subs, scripts_local)
    if not ssh:
        write_text_atomic(campaign_dir / CAMPAIGN_FILE,
                          cluster_campaign(campaign, str(Path(campaign.trainer).absolute())).to_toml())
        return paths, remote_dir, subs
    from golfrun.transport import sync

    if transport.run(["test", "-f", posixpath.join(paths.code, sync.SOURCE_FILE)]).returncode == 0:
        log(f"code already on {ssh}: {paths.code}")
    else:
        log(f"pushing code to {ssh}:{paths.code}")
        sync.push_worktree(transport, repo_root(), paths.code)
    remote_trainer = _remote_trainer(Path(campaign.trainer), paths)
    transport.run(["mkdir", "-p", "--", paths.scripts]).check()
    sync.put_text(transport, cluster_campaign(campaign, remote_trainer).to_toml(), paths.campaign_file)
    _push_summaries(transport, campaign_dir, paths)
    for sub in subs:
        transport.put(scripts_local / sub.script_name, posixpath.join(paths.scripts, sub.script_name))
    return paths, remote_dir, subs


def _submit_chain(client: SlurmClient, campaign: "Campaign", campaign_dir: Path, subs: list[Submission],
                  paths: ClusterPaths, ssh: str, remote_dir: str, log: Log) -> dict[str, Any]:
    """sbatch every submission in order with its dependencies; slurm.json records what was submitted."""
    state: dict[str, Any] = {
        "schema": STATE_SCHEMA,
        "campaign": campaign.name,
        "ssh": ssh,
        "known_hosts": campaign.backend.slurm.known_hosts,
        "remote_dir": remote_dir,
        "paths": dataclasses.asdict(paths),
        "submitted_at": time.time(),
        "jobs": [],
    }
    ids: dict[str, str] = {}
    try:
        for sub in subs:
            script = posixpath.join(paths.scripts, sub.script_name)
            dep = dependency(sub, ids)
            try:
                sub.job_id = client.submit(script, dep)
            except BackendError as exc:
                # half a chain is worse than none: take back what was submitted
                if ids:
                    client.cancel(list(ids.values()))
                raise BackendError(f"sbatch of {sub.key} failed; cancelled the {len(ids)} job(s) already "
                                   f"submitted. {exc}") from exc
            ids[sub.key] = sub.job_id
            state["jobs"].append({"key": sub.key, "stage": sub.stage, "kind": sub.kind, "job_id": sub.job_id,
                                  "script": script, "dependency": dep})
            log(f"submitted {sub.key}: job {sub.job_id}" + (f" ({dep})" if dep else ""))
    finally:
        write_state(campaign_dir, state)  # what was submitted, even if a later sbatch failed
    return state


def _follow(poller: Poller, transport: Any, state: dict[str, Any], campaign_dir: Path, deadline_s: float,
            log: Log) -> int:
    """Wait for every job of the chain (one query per interval), pull over SSH, the exit code."""
    by_id = {j["job_id"]: j["key"] for j in state["jobs"]}
    shown: dict[str, str] = {}

    def on_change(statuses: dict[str, JobStatus]) -> None:
        for i, st in statuses.items():
            text = st.state.value + (f" ({st.reason})" if st.reason else "")
            if shown.get(i) != text:
                shown[i] = text
                log(f"slurm: {by_id[i]} (job {i}) {text}")

    try:
        final = poller.wait(list(by_id), deadline_s, on_change)
    except KeyboardInterrupt:
        log("interrupted: the jobs go on in Slurm; `golfrun status`, `golfrun cancel`, `golfrun pull` pick them up")
        raise
    if state.get("ssh"):
        _pull(transport, ClusterPaths(**state["paths"]), campaign_dir, log)
    return _finish(campaign_dir, state, final, log)


def _paths(campaign: "Campaign", campaign_dir: Path, ssh: str | None, remote_dir: str, code_id: str = "") -> ClusterPaths:
    if ssh:
        # one folder per pushed tree: a later push never changes the code of jobs still queued
        return ClusterPaths(code=posixpath.join(remote_dir, "code", code_id or "<tree digest>"),
                            runs=posixpath.join(remote_dir, "runs"), campaign=campaign.name)
    return ClusterPaths(code=str(repo_root()), runs=str(campaign_dir.parent), campaign=campaign.name)


def _remote_trainer(trainer: Path, paths: ClusterPaths) -> str:
    try:
        rel = trainer.resolve().relative_to(repo_root())
    except ValueError:
        raise BackendError(
            f"trainer {trainer} is outside the repository {repo_root()}: over SSH only the repository's "
            "files are pushed; put the trainer in the repository"
        ) from None
    return posixpath.join(paths.code, rel.as_posix())


def _push_summaries(transport: Any, campaign_dir: Path, paths: ClusterPaths) -> None:
    """Summaries already at home (a rerun) go to the cluster so finished stages are served from cache."""
    for summary in sorted(campaign_dir.glob("*/summary.json")):
        transport.put(summary, posixpath.join(paths.campaign_dir, summary.parent.name, "summary.json"))


def _write_scripts(subs: list[Submission], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for sub in subs:
        path = folder / sub.script_name
        path.write_text(render_stage_script(sub.spec), encoding="utf-8")
        path.chmod(0o755)


def _write_plan(subs: list[Submission], folder: Path, paths: ClusterPaths) -> None:
    lines = ["# submission order; $ID(<key>) is the id sbatch printed for that key", ""]
    for sub in subs:
        dep = f"{sub.dep_type}:" + ":".join(f"$ID({k})" for k in sub.after) if sub.after else ""
        argv = sbatch_argv(posixpath.join(paths.scripts, sub.script_name), dep)
        lines.append(f"{sub.key}: {' '.join(argv)}")
    (folder / "submit-plan.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _wait_deadline(campaign: "Campaign") -> float:
    """Every stage's time limit (tasks of an array counted one after another) plus a day of queueing."""
    s = campaign.backend.slurm
    total = 0.0
    for stage in STAGES:
        t = stage_time(s, stage)
        secs = _seconds(t) if t else 24 * 3600.0
        total += secs * (array_size(campaign, stage) + 1 if spec_of(stage).array_jobs else 1)
    return total + 24 * 3600.0


def _seconds(text: str) -> float:
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        h, m, sec = (0, parts[0], 0) if not days else (parts[0], 0, 0)
    elif len(parts) == 2:
        h, m, sec = (0, parts[0], parts[1]) if not days else (parts[0], parts[1], 0)
    else:
        h, m, sec = parts
    return float(days * 86400 + h * 3600 + m * 60 + sec)


def _pull(transport: Any, paths: ClusterPaths, campaign_dir: Path, log: Log) -> None:
    from golfrun.transport import sync

    copied = sync.pull_tree(transport, paths.campaign_dir, campaign_dir)
    log(f"pulled {len(copied)} files from {paths.campaign_dir}")


# ------------------------------------------------------------------------------------- results


def stage_statuses(state: dict[str, Any], job_statuses: dict[str, JobStatus]) -> dict[str, JobStatus]:
    """Stage → status: the array's while it is unfinished or failed, else the stage job's."""
    out: dict[str, JobStatus] = {}
    for job in state["jobs"]:
        st = job_statuses.get(job["job_id"])
        if st is None:
            continue
        stage = job["stage"]
        if job["kind"] == "tasks":
            out[stage] = st
        elif stage in out and (not out[stage].state.finished or out[stage].state is not JobState.SUCCEEDED):
            continue
        else:
            out[stage] = st
    return out


def _finish(campaign_dir: Path, state: dict[str, Any], final: dict[str, JobStatus], log: Log) -> int:
    """Campaign exit code from the summaries; a stage whose Slurm job failed or was cancelled
    without leaving a summary of this run gets an ERROR summary naming the Slurm reason."""
    from golfrun.pipeline import summaries
    from golfrun.pipeline.engine import exit_code
    from golfrun.summary import Summary

    submitted = float(state.get("submitted_at", 0))
    verdict_codes = {code for v, code in EXIT_CODES.items() if v is not Verdict.PASS}
    per_stage = stage_statuses(state, final)
    results: list[Summary] = []
    refused: list[str] = []
    for stage in STAGES:
        try:
            summary = summaries.read_summary(campaign_dir, stage)
        except GolfrunError:
            summary = None
        st = per_stage.get(stage)
        job = _job_of(state, stage, st) if st is not None else None
        if st is not None and job is not None and st.state is JobState.FAILED and st.exit_code == EXIT_BUDGET:
            refused.append(_budget_refusal(campaign_dir, stage, job, submitted))  # no summary: none was written
            continue
        fresh = summary is not None and _epoch(summary.finished_at) >= submitted - 1
        # the stage's own job ended with a verdict: its summary (fresh, or served from cache) counts
        decided = st is not None and job is not None and job["kind"] != "tasks" and (
            st.state is JobState.SUCCEEDED or (st.state is JobState.FAILED and st.exit_code in verdict_codes))
        if summary is not None and (fresh or decided):
            results.append(summary)
        elif st is not None and job is not None and st.state in (JobState.FAILED, JobState.CANCELLED, JobState.UNKNOWN) \
                and "DependencyNeverSatisfied" not in st.reason:
            reason = f"Slurm job {job['job_id']} ({job['key']}): {st.reason or st.state.value}; its output is in {SCRIPTS_DIR}/"
            stamp = now_iso()
            summary = Summary(stage=stage, campaign=state["campaign"], verdict=Verdict.ERROR, started_at=stamp,
                              finished_at=stamp, fingerprint="", reasons=[reason])
            summaries.write_summary(campaign_dir, summary)
            results.append(summary)
    for summary in results:
        log(f"{summary.stage}: {summary.verdict.value}" + (f" — {summary.reasons[0].splitlines()[0]}" if summary.reasons else ""))
    for line in refused:
        log(line)
    if refused:  # as `golfrun run-all` on this machine: the campaign stopped at the budget, exit 4
        return EXIT_BUDGET
    return exit_code(results) if results else EXIT_CODES[Verdict.ERROR]


def _budget_refusal(campaign_dir: Path, stage: str, job: dict[str, Any], submitted: float) -> str:
    """Why the stage's Slurm job exited 4: the refusal it recorded (golfrun/budget.py `record_stop`)."""
    from golfrun import budget
    from golfrun.pipeline import summaries

    stop = budget.read_stop(summaries.stage_dir(campaign_dir, stage))
    if stop is not None and _epoch(str(stop.get("at"))) >= submitted - 1:
        return f"{stage}: not started: {stop.get('message')}"
    return (f"{stage}: not started: Slurm job {job['job_id']} ({job['key']}) exited {EXIT_BUDGET} (the campaign's "
            f"[budget]); its output is in {SCRIPTS_DIR}/")


def _job_of(state: dict[str, Any], stage: str, st: JobStatus) -> dict[str, Any]:
    jobs = [j for j in state["jobs"] if j["stage"] == stage]
    for j in jobs:
        if any(b == j["job_id"] or b.startswith(j["job_id"] + "_") for b in st.backend_ids):
            return j
    return jobs[-1]


def _epoch(iso: str) -> float:
    return epoch_of(iso) or 0.0


# ------------------------------------------------------------------------------------- later, from the laptop


def has_submission(campaign_dir: Path) -> bool:
    """Whether the campaign was submitted to Slurm (status views call slurm_states only then)."""
    return state_path(Path(campaign_dir)).is_file()


def _reconnect(campaign_dir: Path, accept_new_host_key: bool = False) -> tuple[dict[str, Any], Any]:
    state = read_state(campaign_dir)
    conn = Connection(state.get("ssh", ""), state.get("known_hosts", ""), "", accept_new_host_key)
    return state, conn.open()


def slurm_states(campaign_dir: Path) -> dict[str, JobStatus]:
    """Stage → Slurm status of the campaign's last submission (one query for all its jobs)."""
    state, transport = _reconnect(Path(campaign_dir))
    try:
        client = SlurmClient(transport, cwd=state["paths"]["code"])
        return stage_statuses(state, client.query([j["job_id"] for j in state["jobs"]]))
    finally:
        _close(transport)


def cancel_campaign(campaign_dir: Path, log: Log) -> list[str]:
    """scancel every job of the campaign's last submission that has not finished; returns their ids."""
    state, transport = _reconnect(Path(campaign_dir))
    try:
        client = SlurmClient(transport, cwd=state["paths"]["code"])
        ids = [j["job_id"] for j in state["jobs"]]
        statuses = client.query(ids)
        live = [i for i in ids if not statuses[i].state.finished]
        client.cancel(live)
        log(f"cancelled {len(live)} Slurm job(s): {' '.join(live)}" if live else "no unfinished Slurm jobs")
        return live
    finally:
        _close(transport)


def pull_campaign(campaign_dir: Path, log: Log) -> int:
    """Bring runs/<campaign> home from the cluster (no-op when it ran on this machine's file system)."""
    state, transport = _reconnect(Path(campaign_dir))
    try:
        if not state.get("ssh"):
            log(f"the campaign ran on this machine's file system: nothing to pull ({campaign_dir})")
            return 0
        from golfrun.transport import sync

        copied = sync.pull_tree(transport, posixpath.join(state["paths"]["runs"], state["campaign"]), Path(campaign_dir))
        log(f"pulled {len(copied)} files from {state['ssh']}:{state['paths']['runs']}/{state['campaign']}")
        return len(copied)
    finally:
        _close(transport)
