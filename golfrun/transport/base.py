"""The transport contract: how a backend reaches a machine (local subprocesses or SSH).

Kept tiny on purpose. Commands are argv lists, never shell strings; every call has a deadline.
`golfrun/transport/local.py` and `golfrun/transport/ssh.py` implement `Transport`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from golfrun.errors import TransportError


@dataclass(frozen=True)
class CompletedRun:
    returncode: int
    stdout: str
    stderr: str
    argv: tuple[str, ...] = ()  # what ran, for messages

    def check(self) -> "CompletedRun":
        """Self, or TransportError naming the command, its exit code and its output's tail."""
        if self.returncode != 0:
            tail = "\n".join((self.stderr or self.stdout).rstrip().splitlines()[-10:])
            raise TransportError(f"command failed (exit {self.returncode}): {format_argv(self.argv)}\n{tail}".rstrip())
        return self


def format_argv(argv: Sequence[str]) -> str:
    """A command for messages, quoted as a shell would need (never executed as one)."""
    return shlex.join(str(a) for a in argv)


class Transport(Protocol):
    def run(
        self,
        argv: Sequence[str],
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> CompletedRun:
        """Run a command to completion. A non-zero exit is returned (see CompletedRun.check);
        a timeout or a command that cannot start raises TransportError naming it."""
        ...

    def put(self, local: Path | str, remote: str) -> None:
        """Copy a file or folder from this machine to `remote` (a path on the target machine)."""
        ...

    def get(self, remote: str, local: Path | str) -> None:
        """Copy a file or folder from the target machine to `local`."""
        ...
