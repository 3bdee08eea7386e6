"""The one place golfrun runs commands on this machine.

- `run(argv, …)`: a short command to completion, with a deadline.
- `spawn(argv, …)`: a long-lived job (a trainer) under the job guard (golfrun/transport/guard.py)
  in its own process session, its merged stdout+stderr written line by line to a log file (secret
  values scrubbed) and handed to a callback; `LocalProcess.terminate` signals the whole tree. The
  guard ends the job, torchrun's workers included, within POLL_S + its grace of golfrun's death,
  whatever killed golfrun (docs/pipeline.md, "No job outlives golfrun").
- `LocalTransport`: the `Transport` protocol over the two above plus file copies.

Commands are argv lists, never shell strings. `env` always means variables set *on top of* the
current environment, as it does for the SSH transport.

Process trees: `torch.distributed.run` starts each worker in a session of its own, so signalling
the launcher's process group does not reach the workers. `terminate` therefore records the
launcher's descendants (Linux /proc) before signalling and SIGKILLs the survivors after the
grace period; `find_processes_with_env` finds a job's processes by a marker variable even after
their parent died (used to reap stale trainers, see golfrun/backends/local.py).
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

from golfrun.errors import TransportError
from golfrun.secrets import LineRedactor, secret_values_from_env
from golfrun.transport.base import CompletedRun, format_argv

PROC = Path("/proc")
GUARD = Path(__file__).with_name("guard.py")
TAIL_KEEP = 200  # lines of output kept in memory for error messages


def merged_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """The current environment with `env` on top."""
    merged = dict(os.environ)
    if env:
        merged.update({str(k): str(v) for k, v in env.items()})
    return merged


def run(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float,
    check: bool = True,
) -> CompletedRun:
    """Run `argv` to completion and capture its output.

    A timeout kills the command's whole process group and raises TransportError naming it; so
    does a command that cannot be started. With `check`, a non-zero exit raises too.
    """
    argv = _argv(argv)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=merged_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        raise TransportError(f"cannot run {format_argv(argv)}: {exc}") from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        try:
            proc.communicate(timeout=2.0)
        except subprocess.TimeoutExpired:  # a process outside the group still holds the pipes
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            proc.wait(timeout=5.0)
        raise TransportError(f"command timed out after {timeout_s:g}s: {format_argv(argv)}") from None
    result = CompletedRun(proc.returncode, stdout, stderr, tuple(argv))
    return result.check() if check else result


class LocalProcess:
    """A spawned job: its own session, output to a log file through a reader thread."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        argv: tuple[str, ...],
        log_path: Path,
        log_file: IO[str],
        secret_values: list[str],
        on_line: Callable[[str], None] | None,
    ) -> None:
        self.popen = popen
        self.argv = argv
        self.orphan_grace_s = 1.0  # how long the guard gives the job to end its way (spawn sets it)
        self.pid = popen.pid
        self.log_path = log_path
        self.started_at = time.time()
        self.last_output = time.monotonic()  # when the job last printed a line (its start, before any)
        self._log = log_file
        self._redact = LineRedactor(secret_values)
        self._on_line = on_line
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_KEEP)
        self._callback_error: str | None = None
        self.log_error: str | None = None  # why the log file stopped (a full disk), if it did
        self._joined = False
        self._reader = threading.Thread(target=self._read, name=f"log-reader-{self.pid}", daemon=True)
        self._reader.start()

    # -- output

    def _read(self) -> None:
        assert self.popen.stdout is not None
        try:
            for raw in iter(self.popen.stdout.readline, b""):
                self.last_output = time.monotonic()
                line = self._redact(raw.decode("utf-8", errors="replace"))
                if not line:  # inside a private-key block
                    continue
                self._write_log(line)
                text = line.rstrip("\r\n")
                self._tail.append(text)
                if self._on_line is not None and self._callback_error is None:
                    try:
                        self._on_line(text)
                    except Exception as exc:  # a display bug must not stop the log
                        self._callback_error = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self._log.close()
            except OSError:  # the disk is full: what was flushed stays, log_error says why the rest is missing
                pass
            self.popen.stdout.close()

    def _write_log(self, line: str) -> None:
        """Append to the log file; on a disk error stop writing it but keep draining the pipe (a
        trainer blocked on a full pipe would hang) and keep the tail in memory."""
        if self.log_error is not None:
            return
        try:
            self._log.write(line)
            self._log.flush()
        except OSError as exc:
            self.log_error = f"{self.log_path}: {exc.strerror or exc}"
            self._tail.append(f"(golfrun: the log stops here: {self.log_error})")

    def last_lines(self, n: int = 20) -> list[str]:
        """The last `n` lines of output (already scrubbed)."""
        return list(self._tail)[-n:]

    # -- state

    def poll(self) -> int | None:
        """The exit code once the process has exited (and its output is in the log), else None."""
        code = self.popen.poll()
        if code is not None and not self._joined:
            # Output may still be in the pipe; a grandchild holding it open must not block us long.
            self._reader.join(timeout=5.0)
            self._joined = True
        return code

    def wait(self, timeout_s: float) -> int:
        """Wait for exit; TransportError naming the command if it outlives `timeout_s`."""
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise TransportError(f"still running after {timeout_s:g}s: {format_argv(self.argv)}") from None
        code = self.poll()
        assert code is not None
        return code

    def terminate(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM the job (the guard forwards it to every descendant), then SIGKILL the group and
        every descendant still there after `grace_s`.

        A second Ctrl-C or SIGTERM of golfrun while it waits here escalates to SIGKILL at once and
        is then re-raised: the job is never abandoned. Returns the exit code (negative: killed by
        that signal).
        """
        tree = descendants(self.pid)
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            if not self._wait_gone(tree, grace_s):
                self._kill_tree(tree)
        except (KeyboardInterrupt, SystemExit):
            self._kill_tree(tree)
            self._reap()
            raise
        self._reap()
        return self.poll()

    def _wait_gone(self, tree: set[tuple[int, int]], timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.popen.poll() is not None and not _group_alive(self.pid) and not _alive(tree):
                return True
            time.sleep(0.05)
        return False

    def _kill_tree(self, tree: set[tuple[int, int]]) -> None:
        """A second signal makes the guard end the job its way (for srun: end the step); then
        SIGKILL whatever is left."""
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._wait_gone(tree, self.orphan_grace_s + 1.0)
        tree |= descendants(self.pid)
        _killpg(self.pid, signal.SIGKILL)
        kill_processes(tree, signal.SIGKILL)

    def _reap(self) -> None:
        try:
            self.popen.wait(timeout=10.0)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
            pass


def guard_argv(argv: Sequence[str], orphan_signal: str = "KILL", orphan_grace_s: float = 1.0,
               orphan_note: str | Path | None = None) -> list[str]:
    """`argv` under the job guard, run by golfrun's own interpreter, watching this process."""
    note = ["--orphan-note", str(orphan_note)] if orphan_note else []
    return [sys.executable, str(GUARD), "--parent", str(os.getpid()), "--orphan-signal", orphan_signal,
            "--orphan-grace", f"{orphan_grace_s:g}", *note, "--", *argv]


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | Path | None,
    env: Mapping[str, str] | None,
    log_path: str | Path,
    on_line: Callable[[str], None] | None = None,
    orphan_signal: str = "KILL",
    orphan_grace_s: float = 1.0,
    orphan_note: str | Path | None = None,
) -> LocalProcess:
    """Start `argv` under the job guard in a new session; stdout+stderr merged into `log_path`
    (truncated first). The returned process is the guard's: its exit code is the job's.

    If golfrun dies, the guard sends `orphan_signal` to the job's whole tree and SIGKILL after
    `orphan_grace_s` (guard.py), then writes `orphan_note` (when given). The values of secret-named variables of the child's environment
    (golfrun.secrets) are replaced in every line before it is written or handed to `on_line`.
    """
    argv = _argv(argv)
    full_env = merged_env(env)
    program = shutil.which(argv[0], path=full_env.get("PATH"))
    if program is None or (os.sep in argv[0] and not os.access(argv[0], os.X_OK)):
        raise TransportError(f"cannot run {format_argv(argv)}: {argv[0]}: no such executable")
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed by the reader thread
    try:
        popen = subprocess.Popen(
            guard_argv(argv, orphan_signal, orphan_grace_s, orphan_note),
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        log_file.close()
        raise TransportError(f"cannot run {format_argv(argv)}: {exc}") from exc
    process = LocalProcess(popen, tuple(argv), log_path, log_file, secret_values_from_env(full_env), on_line)
    process.orphan_grace_s = orphan_grace_s
    return process


class LocalTransport:
    """`Transport` for this machine: run() never raises on a non-zero exit; put/get copy."""

    def run(
        self,
        argv: Sequence[str],
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> CompletedRun:
        return run(argv, cwd=cwd, env=env, timeout_s=timeout_s, check=False)

    def put(self, local: Path | str, remote: str) -> None:
        _copy(Path(local), Path(remote))

    def get(self, remote: str, local: Path | str) -> None:
        _copy(Path(remote), Path(local))


# --------------------------------------------------------------------------- process helpers


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if gone or not Linux.

    Recorded next to a pid so that a reused pid is never mistaken for the original process.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def descendants(pid: int) -> set[tuple[int, int]]:
    """(pid, start time) of every live descendant of `pid` (empty where /proc is missing)."""
    children: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for entry in _proc_pids():
        try:
            stat = (PROC / str(entry) / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            children[int(fields[1])].append((entry, int(fields[19])))
    found: set[tuple[int, int]] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def find_processes_with_env(name: str, value: str) -> set[tuple[int, int]]:
    """(pid, start time) of this user's live processes whose environment has `name=value`."""
    needle = f"{name}={value}".encode()
    found: set[tuple[int, int]] = set()
    for pid in _proc_pids():
        if pid == os.getpid():
            continue
        try:
            environ = (PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            start = process_start_time(pid)
            if start is not None:
                found.add((pid, start))
    return found


def kill_processes(procs: Iterable[tuple[int, int]], sig: int) -> None:
    """Send `sig` to each (pid, start time) still alive with that same start time."""
    for pid, start in procs:
        if process_start_time(pid) == start:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass


def terminate_processes(procs: set[tuple[int, int]], grace_s: float) -> None:
    """SIGTERM, wait up to `grace_s` for them to exit, SIGKILL the rest."""
    kill_processes(procs, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while _alive(procs) and time.monotonic() < end:
        time.sleep(0.05)
    kill_processes(procs, signal.SIGKILL)
    end = time.monotonic() + 5.0
    while _alive(procs) and time.monotonic() < end:
        time.sleep(0.05)


def _alive(procs: Iterable[tuple[int, int]]) -> bool:
    return any(process_start_time(pid) == start for pid, start in procs)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _proc_pids() -> list[int]:
    try:
        return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return []


def _argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, (str, bytes)) or not argv:
        raise TransportError(f"a command must be a non-empty argv list, got {argv!r}")
    return [os.fspath(a) for a in argv]


def _copy(src: Path, dst: Path) -> None:
    try:
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    except OSError as exc:
        raise TransportError(f"cannot copy {src} to {dst}: {exc}") from exc
