"""What golfrun does on a pod, over SSH: lay out the work folder, start the deadline timer, push
code, campaign and earlier results, prepare, verify, start `golfrun run-all` detached, read its
log and exit code, and pull results home with every file's sha256 checked.

The pod's work folder (`[backend.runpod] workdir`, W):

    W/code/                 golfrun and the trainer, as pushed from the laptop
    W/campaign.toml         the resolved campaign, with backend.kind = "local"
    W/runs/<campaign>/      the campaign's runs folder (summaries, jobs, preserve tarball)
    W/.golfrun/             golfrun-pod.sh, run.log, run.pid, exit_code, pod_deadline.{py,log,pid}

Every command is an argv list. The campaign's own shell text (its setup lines) lives only in
golfrun-pod.sh, rendered by a pure function (golden-tested) and shipped as a file; the few fixed
bash snippets here take their values as positional arguments ($1, $2…), never pasted in.
"""

from __future__ import annotations

import io
import posixpath
import shlex
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golfrun.errors import ProvenanceError, TransportError
from golfrun.fileio import sha256_file

STATE = ".golfrun"
POD_SCRIPT = "golfrun-pod.sh"
DEADLINE_SCRIPT = Path(__file__).with_name("pod_deadline.py")
# Never leaves the laptop / never pulled over local files that matter.
PUSH_EXCLUDE = (".pod", "pod.json", ".lock", "data", "__pycache__")
PULL_EXCLUDE_DIRS = ("data",)
DEPS_CHECK = "import golfrun.cli, click, rich, numpy, scipy, sentencepiece, brotli, paramiko, jinja2"

Log = Callable[[str], None]


@dataclass(frozen=True)
class PodPaths:
    workdir: str
    campaign: str

    @property
    def code(self) -> str:
        return posixpath.join(self.workdir, "code")

    @property
    def runs(self) -> str:
        return posixpath.join(self.workdir, "runs")

    @property
    def campaign_dir(self) -> str:
        return posixpath.join(self.runs, self.campaign)

    @property
    def campaign_file(self) -> str:
        return posixpath.join(self.workdir, "campaign.toml")

    @property
    def state(self) -> str:
        return posixpath.join(self.workdir, STATE)

    def in_state(self, name: str) -> str:
        return posixpath.join(self.state, name)


def render_pod_script(paths: PodPaths, setup: Sequence[str], run_all_args: Sequence[str], verify_args: Sequence[str]) -> str:
    """golfrun-pod.sh: `prepare` (install golfrun's dependencies unless present), `verify`
    (stage 00 on this pod) and `run` (the whole campaign; exit code to .golfrun/exit_code)."""
    q = shlex.quote
    setup_text = "\n".join(setup) if setup else "# (none)"
    exit_file, exit_tmp = paths.in_state("exit_code"), paths.in_state("exit_code.tmp")
    return f"""#!/usr/bin/env bash
# golfrun's commands on this pod, written by golfrun (docs/runpod.md). Usage: {POD_SCRIPT} prepare|verify|run
#   prepare  install golfrun's dependencies unless they are importable
#   verify   the verify-pod stage, on this pod
#   run      golfrun run-all; its exit code is written to {exit_file}
set -u
cd {q(paths.workdir)} || exit 70
# --- [backend.runpod] setup
{setup_text}
# ---
export PYTHONPATH={q(paths.code)}"${{PYTHONPATH:+:$PYTHONPATH}}"
export PYTHONUNBUFFERED=1
case "${{1:-}}" in
  prepare)
    python3 -c {q(DEPS_CHECK)} 2>/dev/null && {{ echo "golfrun: dependencies present"; exit 0; }}
    echo "golfrun: installing golfrun and its dependencies"
    python3 -m pip install --quiet --disable-pip-version-check -e {q(paths.code)}
    python3 -c {q(DEPS_CHECK)}
    ;;
  verify)
    python3 -m golfrun.cli {shlex.join(verify_args)}
    ;;
  run)
    rm -f {q(exit_file)}
    python3 -m golfrun.cli {shlex.join(run_all_args)}
    code=$?
    echo "$code" > {q(exit_tmp)} && mv {q(exit_tmp)} {q(exit_file)}
    exit "$code"
    ;;
  *)
    echo "usage: $0 prepare|verify|run" >&2
    exit 64
    ;;
esac
"""


def run_all_args(paths: PodPaths, force: Sequence[str] = ()) -> list[str]:
    args = ["run-all", "--campaign", paths.campaign_file, "--runs-dir", paths.runs, "--backend", "local"]
    for stage in force:
        args += ["--force", stage]
    return args


def verify_args(paths: PodPaths) -> list[str]:
    # --force: a verify-pod summary pushed from an earlier pod describes that pod, not this one
    return ["verify-pod", "--campaign", paths.campaign_file, "--runs-dir", paths.runs, "--backend", "local", "--force"]


# ---------------------------------------------------------------------------------------- files


def pack(items: Iterable[tuple[Path, str]], exclude: Sequence[str] = ()) -> bytes:
    """A tar.gz of (local path, name in the archive) pairs; folders recurse; `exclude` names any
    path component to leave out (keys, locks, data, caches). For the runs folder: code goes
    through golfrun.transport.sync."""
    buffer = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if any(part in exclude for part in parts):
            return None
        return info if (info.isfile() or info.isdir()) else None

    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for local, arcname in items:
            if local.exists():
                tar.add(str(local), arcname=arcname, filter=keep)
    return buffer.getvalue()


def push_code(transport: Any, repo_root: Path, trainer: Path, paths: PodPaths) -> str:
    """Push golfrun's working tree (golfrun.transport.sync) and the trainer; return the trainer's
    path on the pod. A trainer outside the repository travels beside it, in code/trainer/."""
    from golfrun.transport import sync

    sync.push_worktree(transport, repo_root, paths.code)
    trainer = trainer.resolve()
    try:
        rel = trainer.relative_to(repo_root.resolve()).as_posix()
    except ValueError:
        rel = f"trainer/{trainer.name}"
    remote_trainer = posixpath.join(paths.code, rel)
    transport.put(trainer, remote_trainer)  # also when git ignores it: the campaign names it
    return remote_trainer


def push_runs(transport: Any, campaign_dir: Path, paths: PodPaths) -> None:
    """Push what the laptop already holds of the campaign (summaries of a lost pod) for the resume."""
    if not any(campaign_dir.glob("*/summary.json")):
        return
    from golfrun.transport import sync

    sync.push_tar(transport, pack([(campaign_dir, ".")], exclude=PUSH_EXCLUDE), paths.campaign_dir, replace=False)


def put_text(transport: Any, text: str, remote: str, mode: int = 0o644) -> None:
    from golfrun.transport import sync

    sync.put_text(transport, text, remote, mode)


# ---------------------------------------------------------------------------------------- processes


def start_detached(transport: Any, paths: PodPaths, argv: Sequence[str], log_name: str, pid_name: str,
                   env: Mapping[str, str] | None = None) -> None:
    """Start argv in its own session (setsid), output to .golfrun/<log_name>, pid to <pid_name>:
    it outlives the SSH connection and the laptop."""
    script = 'cd "$1" && shift && log="$1" && pidf="$2" && shift 2 && { setsid nohup "$@" >"$log" 2>&1 </dev/null & echo $! >"$pidf"; }'
    transport.run(["bash", "-c", script, "golfrun-detach", paths.state, log_name, pid_name, *argv], env=env or None).check()


def start_deadline(transport: Any, paths: PodPaths, at_epoch: float, api_url: str, env_file: str) -> None:
    """Copy the deadline timer to the pod and start it detached (before anything else runs there)."""
    remote = paths.in_state("pod_deadline.py")
    transport.put(DEADLINE_SCRIPT, remote)
    existing = transport.run(["bash", "-c", 'kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null', "_", paths.in_state("deadline.pid")])
    if existing.returncode == 0:  # already running (a reconnect): move its deadline instead
        set_deadline(transport, paths, at_epoch)
        return
    start_detached(transport, paths, ["python3", remote, "--at", f"{at_epoch:.0f}", "--api-url", api_url,
                                      "--env-file", env_file, "--log", paths.in_state("pod_deadline.log")],
                   "pod_deadline.out", "deadline.pid")


def set_deadline(transport: Any, paths: PodPaths, at_epoch: float) -> None:
    put_text(transport, f"{at_epoch:.0f}\n", paths.in_state("pod_deadline.log.at"))


# One round trip per poll: the run's state first (so a finished run's log is read whole), then
# the log's size and the bytes after `offset`.
_POLL = r"""
log=$1; off=$2; ec=$3; pidf=$4
if [ -s "$ec" ]; then state="exit $(cat "$ec")"
elif kill -0 "$(cat "$pidf" 2>/dev/null)" 2>/dev/null; then state=alive
elif [ -e "$pidf" ]; then state=dead
else state=none; fi
size=$(stat -c %s "$log" 2>/dev/null || echo 0)
echo "$size $state"
if [ "$size" -gt "$off" ]; then tail -c +$((off + 1)) "$log" | head -c $((size - off)); fi
"""


@dataclass(frozen=True)
class RunPoll:
    text: str  # new log text
    offset: int  # where the next poll starts
    exit_code: int | None  # set once the run finished
    state: str  # "exit" | "alive" | "dead" (started, gone without an exit code) | "none" (never started)


def poll_run(transport: Any, paths: PodPaths, offset: int = 0) -> RunPoll:
    out = transport.run(["bash", "-c", _POLL, "golfrun-poll", paths.in_state("run.log"), str(offset),
                         paths.in_state("exit_code"), paths.in_state("run.pid")]).check()
    head, _, text = out.stdout.partition("\n")
    parts = head.split()
    if len(parts) < 2 or not parts[0].isdigit():
        raise TransportError(f"unexpected answer polling the run on the pod: {head!r}")
    size, state = int(parts[0]), parts[1]
    code = int(parts[2]) if state == "exit" and len(parts) > 2 and parts[2].lstrip("-").isdigit() else None
    return RunPoll(text, max(offset, size), code, state)


def run_state(transport: Any, paths: PodPaths) -> tuple[int | None, bool]:
    """(exit code or None, whether the detached run's process is alive)."""
    poll = poll_run(transport, paths, offset=1 << 62)
    return poll.exit_code, poll.state == "alive"


def read_log(transport: Any, paths: PodPaths, offset: int) -> tuple[str, int]:
    """New text of the run's log from byte `offset` on, and the next offset."""
    poll = poll_run(transport, paths, offset)
    return poll.text, poll.offset


# ---------------------------------------------------------------------------------------- pull


def remote_checksums(transport: Any, remote_dir: str) -> dict[str, str]:
    """{relative path: sha256} of every regular file under remote_dir (data/ left out)."""
    prune = " -o ".join(f"-path ./{d}" for d in PULL_EXCLUDE_DIRS)
    script = f'cd "$1" 2>/dev/null || exit 0; find . \\( {prune} \\) -prune -o -type f ! -name "*.tmp" -print0 | xargs -0 -r sha256sum'
    out = transport.run(["bash", "-c", script, "_", remote_dir], timeout_s=600).check()
    sums: dict[str, str] = {}
    for line in out.stdout.splitlines():
        digest, _, rel = line.partition("  ")
        if rel:
            sums[rel[2:] if rel.startswith("./") else rel] = digest
    return sums


def pull(transport: Any, remote_dir: str, local_dir: Path, log: Log, strict: bool = True) -> list[str]:
    """Bring every changed file home and check its sha256 against the pod's; returns what came.

    A file arrives under a temporary name and replaces the local one only once its checksum
    matches; a mismatch is fetched once more, then is an error naming the file. While the run
    is still writing (`strict=False`, the periodic pulls), a file that keeps changing is left for
    the next pull instead.
    """
    sums = remote_checksums(transport, remote_dir)
    fetched: list[str] = []
    for rel, digest in sorted(sums.items()):
        if Path(rel).parts and Path(rel).parts[0] in (".pod",) or rel in ("pod.json", ".lock"):
            continue  # laptop-only files are never overwritten from the pod
        local = local_dir / rel
        if local.is_file() and sha256_file(local) == digest:
            continue
        tmp = local.with_name(local.name + ".pulling")
        for attempt in (1, 2):
            try:
                transport.get(posixpath.join(remote_dir, rel), tmp)
            except TransportError:
                if strict:
                    raise
                break  # gone meanwhile (a temporary file): the next pull sees the new state
            if sha256_file(tmp) == digest:
                break
            if attempt == 2:
                tmp.unlink(missing_ok=True)
                if not strict:
                    break
                raise ProvenanceError(f"pull {rel}: sha256 differs from the pod's copy twice; the file is corrupted in transit")
        if not tmp.exists():
            continue
        tmp.replace(local)
        fetched.append(rel)
    if strict or fetched:
        log(f"pulled {len(fetched)} changed file(s) of {len(sums)} into {local_dir}, sha256 checked")
    return fetched


def ensure_state_dir(transport: Any, paths: PodPaths) -> None:
    out = transport.run(["mkdir", "-p", paths.state, paths.runs])
    if out.returncode != 0:
        raise TransportError(f"cannot create {paths.state} on the pod: {out.stderr.strip()}")
