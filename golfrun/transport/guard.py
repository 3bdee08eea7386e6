"""The job guard: a small process between golfrun and a long-lived job, so that no job outlives golfrun.

    python guard.py --parent PID [--orphan-signal TERM|KILL] [--orphan-grace S] [--orphan-note PATH] -- ARGV...

`golfrun.transport.local.spawn` starts every job through it, in a session of its own. The guard:

- makes itself a child subreaper (PR_SET_CHILD_SUBREAPER), so descendants whose parent dies —
  torchrun's workers, which run in sessions of their own — are re-parented to the guard and stay
  in its process tree, where /proc can find them;
- starts ARGV in a process group of its own with PR_SET_PDEATHSIG = SIGKILL: if the guard itself
  is SIGKILLed, the job's first process dies with it;
- forwards the first SIGTERM, SIGINT or SIGHUP to every descendant (golfrun's cancel); a second
  one ends the job as below (golfrun's grace period is over, or a second Ctrl-C);
- checks every POLL_S whether golfrun (PID) is still its parent. When golfrun is gone — whatever
  killed it, SIGKILL included — it ends the job: `--orphan-signal` KILL (a local trainer) sends
  SIGKILL to every descendant; INT (srun) sends SIGINT twice, which makes srun SIGKILL every task
  of the step and end it (the tasks run under slurmstepd, out of the guard's reach: a killed srun
  would leave them running); then SIGKILL to what is left after `--orphan-grace` seconds; once the
  job is gone, it writes `--orphan-note` (when given): when it ended the job, for golfrun's next run,
  which records the time the job held (golfrun/stages/common.py `record_lost_attempt`);
- when ARGV's process exits, stops whatever it left running (TERM, then KILL after LEFTOVER_GRACE_S),
  so nothing of a finished job keeps writing into its folder;
- exits with ARGV's status (re-raising the signal that killed it), so golfrun sees the job's own
  exit code.

Its only output is one line on stderr (into the job's log) when ARGV cannot be started, and the
orphan note.
Run by golfrun's own interpreter as a script (not `-m`), so the trainer's interpreter never needs
golfrun; it imports only golfrun.transport.local's /proc helpers and golfrun.fileio.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the golfrun package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from golfrun.fileio import now_iso, write_json_atomic  # noqa: E402
from golfrun.transport.local import descendants, kill_processes, process_start_time  # noqa: E402

POLL_S = 0.1
LEFTOVER_GRACE_S = 2.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
NOTE_SCHEMA = "golfrun.guard-orphan/1"


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux: the parent poll still stops the job
        return False


def _child_setup(guard_pid: int) -> None:
    """In the job's process, between fork and exec (the guard is single-threaded, so this is safe)."""
    os.setpgid(0, 0)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != guard_pid:  # the guard died before the death signal was armed
        os._exit(137)


def _signal_tree(sig: int) -> set[tuple[int, int]]:
    tree = descendants(os.getpid())
    kill_processes(tree, sig)
    return tree


def _alive(tree: set[tuple[int, int]]) -> bool:
    return any(process_start_time(pid) == start for pid, start in tree)


def _reap(child_pid: int) -> int | None:
    """Reap every exited descendant (a subreaper inherits zombies); the job's wait status once it exited."""
    status = None
    while True:
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status
        if pid == 0:
            return status
        if pid == child_pid:
            status = code


def _stop_tree(first: int, grace_s: float, child_pid: int) -> int | None:
    """Send `first` to every descendant, SIGKILL what is left after `grace_s`; the job's status if it exited."""
    status = None
    tree = _signal_tree(first)
    end = time.monotonic() + grace_s
    while _alive(tree) and time.monotonic() < end:
        status = _reap(child_pid) if status is None else status
        time.sleep(0.02)
    if first != signal.SIGKILL:
        tree |= _signal_tree(signal.SIGKILL)
    end = time.monotonic() + 5.0
    while _alive(tree) and time.monotonic() < end:
        status = _reap(child_pid) if status is None else status
        time.sleep(0.02)
    return _reap(child_pid) if status is None else status


def _end_job(how: str, grace_s: float, child_pid: int) -> int | None:
    """End the job's whole tree now: SIGKILL, or for srun two SIGINTs (Slurm: "terminate the step
    now", SIGKILL to every task) then SIGKILL to what is left after `grace_s`."""
    if how == "INT":
        _signal_tree(signal.SIGINT)
        time.sleep(0.3)  # srun wants the second one within a second
    status = _stop_tree(getattr(signal, f"SIG{how}"), grace_s, child_pid)
    return status if status is not None else 137 << 8


def _note_orphan(path: str, parent: int) -> None:
    """When the job of a vanished golfrun ended: nothing else is left to say it (best effort)."""
    try:
        write_json_atomic(path, {"schema": NOTE_SCHEMA, "ended_at": now_iso(), "ended_epoch": round(time.time(), 3),
                                 "golfrun_pid": parent})
    except OSError:
        pass


def _exit_like(status: int) -> None:
    """Exit with the job's wait status: its exit code, or death by the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be handled, nor reset
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        time.sleep(1.0)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="guard.py")
    p.add_argument("--parent", type=int, required=True)
    p.add_argument("--orphan-signal", choices=("KILL", "TERM", "INT"), default="KILL")
    p.add_argument("--orphan-grace", type=float, default=1.0)
    p.add_argument("--orphan-note", default="")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command")
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    guard_pid = os.getpid()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) == 1:  # golfrun's cancel: the job may stop in its own way
            _signal_tree(signum)

    for sig in FORWARDED:
        signal.signal(sig, on_signal)
    try:
        child = subprocess.Popen(command, preexec_fn=lambda: _child_setup(guard_pid))  # noqa: PLW1509
    except OSError as exc:
        print(f"golfrun guard: cannot run {command[0]}: {exc}", file=sys.stderr, flush=True)
        os._exit(127)
    status = None
    while status is None:
        status = _reap(child.pid)
        # golfrun is gone (nothing will read the job's output or record its result), or it asked
        # a second time (its grace period is over, or a second Ctrl-C): end the job now
        if status is None and (os.getppid() != args.parent or len(received) > 1):
            orphaned = os.getppid() != args.parent
            for sig in FORWARDED:
                signal.signal(sig, signal.SIG_IGN)
            status = _end_job(args.orphan_signal, args.orphan_grace, child.pid)
            if orphaned and args.orphan_note:
                _note_orphan(args.orphan_note, args.parent)
            break
        if status is None:
            time.sleep(POLL_S)
    if _alive(descendants(guard_pid)):  # the job ended but left processes running (orphaned workers)
        _stop_tree(signal.SIGTERM, LEFTOVER_GRACE_S, -1)
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
