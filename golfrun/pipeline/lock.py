"""One golfrun process per campaign: an fcntl lock on runs/<campaign>/.lock.

The lock file holds the holder's pid, host and start time, so the error names who holds it.
fcntl locks die with their process, so a lock left by a killed process (SIGKILL, power loss)
is free again at once; the file's stale content is simply overwritten by the next holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from golfrun.errors import LockError, UsageError

LOCK_NAME = ".lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flock(fd: int, mode: int, wait_s: float) -> None:
    """flock without blocking, retried until `wait_s` has passed; BlockingIOError then."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


class CampaignLock:
    """`with CampaignLock(campaign_dir):` — raises LockError if another live process holds it.

    `shared=True` is how jobs of one Slurm array (`golfrun STAGE --job-index`) hold it: together,
    each also holding its job's own exclusive lock (`job_lock`), but never beside an exclusive
    holder (run-all, a stage command). A shared holder leaves the file's content alone.
    """

    def __init__(self, campaign_dir: Path, command: str = "", shared: bool = False, name: str = LOCK_NAME,
                 wait_s: float = 0.0) -> None:
        self.path = Path(campaign_dir) / name
        self.command = command
        self.shared = shared
        self.wait_s = wait_s  # Slurm jobs wait this long (a job that submitted them may still hold it)
        self._fd: int | None = None

    def holder(self) -> dict[str, object]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # the first write under the runs folder: say which folder, not a traceback
            raise UsageError(f"{self.path.parent}: cannot create the campaign folder or its lock "
                             f"({exc.strerror or exc}); choose a writable --runs-dir") from exc
        try:
            _flock(fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX, self.wait_s)
        except BlockingIOError:
            os.close(fd)
            info = self.holder()
            pid = info.get("pid")
            host = info.get("host", "?")
            if not info:
                raise LockError(f"{self.path}: campaign is locked by golfrun jobs that hold it together "
                                "(`--job-index`, Slurm array tasks); wait for them to finish") from None
            # On a shared filesystem the holder may live on another host; flock still tells.
            alive = "" if host != socket.gethostname() or not isinstance(pid, int) or _pid_alive(pid) else " (dead)"
            raise LockError(
                f"{self.path}: campaign is locked by pid {pid}{alive} on {host} "
                f"since {info.get('since', '?')} ({info.get('command', '')}); wait for it to finish"
            ) from None
        self._fd = fd
        if self.shared:
            return
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": self.command}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(holder).encode())
            os.fsync(fd)
        except OSError:  # a full disk: the flock holds all the same; only the holder's name is lost
            pass

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if not self.shared:
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "CampaignLock":
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def job_lock(stage_dir: Path, job_name: str, command: str = "", wait_s: float = 0.0) -> CampaignLock:
    """The exclusive lock of one job folder, beside it (`jobs/.<name>.lock`: the folder itself is
    deleted and recreated by a rerun, a lock inside it would not hold)."""
    return CampaignLock(Path(stage_dir) / "jobs", command=command, name=f".{job_name}.lock", wait_s=wait_s)
