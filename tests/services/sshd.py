"""A real OpenSSH server on 127.0.0.1 for tests: key-only login as the current user, generated host
key and client key, a known_hosts file naming the host key, all under one state dir."""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.services.common import (
    ServiceError,
    all_pids,
    free_port,
    pid_alive,
    read_pid,
    require_binaries,
    run_quiet,
    stop_pid,
    tail,
    wait_until,
)

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


@dataclass
class SshdServer:
    state_dir: Path
    setenv: dict[str, str] = field(default_factory=dict)  # sshd SetEnv: every session gets these
    sftp: bool = True
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port
    user: str = field(default_factory=getpass.getuser)
    started: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()

    # --------------------------------------------------------------------------- what tests use
    @property
    def key_path(self) -> Path:
        """The client's private key (OpenSSH format; paramiko and ssh read it)."""
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def host_key_pub(self) -> Path:
        return self.state_dir / "ssh_host_ed25519_key.pub"

    @property
    def target(self) -> str:
        """user@host:port, the form golfrun's --ssh takes."""
        return f"{self.user}@{self.host}:{self.port}"

    def ssh_argv(self) -> list[str]:
        """The ssh client argv (without the destination) with strict host-key checking."""
        return [
            "ssh", "-p", str(self.port), "-i", str(self.key_path), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        ]

    @property
    def rsync_rsh(self) -> str:
        """A value for rsync's -e / RSYNC_RSH."""
        return shlex.join(self.ssh_argv())

    def run(self, argv: list[str], timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
        """Run argv on the server through the ssh client (argv is quoted for the remote shell)."""
        return run_quiet([*self.ssh_argv(), f"{self.user}@{self.host}", shlex.join(argv)], timeout_s=timeout_s)

    def logs(self) -> str:
        return f"{self.state_dir / 'sshd.log'}:\n{tail(self.state_dir / 'sshd.log')}"

    # --------------------------------------------------------------------------- lifecycle
    def start(self, timeout_s: float = 30) -> "SshdServer":
        require_binaries(SSHD, "ssh", "ssh-keygen")
        if self.sftp and not os.access(SFTP_SERVER, os.X_OK):
            raise ServiceError(f"{SFTP_SERVER} missing (openssh-server incomplete)")
        s = self.state_dir
        s.mkdir(parents=True, exist_ok=True)
        os.chmod(s, 0o755)
        if not self.port:
            self.port = free_port()
        for name in ("ssh_host_ed25519_key", "id_ed25519"):
            if not (s / name).exists():
                r = run_quiet(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"golfrun-test-{name}", "-f", str(s / name)])
                if r.returncode != 0:
                    raise ServiceError(f"ssh-keygen failed: {r.stderr.strip()}")
        (s / "authorized_keys").write_text((s / "id_ed25519.pub").read_text())
        os.chmod(self.key_path, 0o600)
        host_key = " ".join(self.host_key_pub.read_text().split()[:2])
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_key}\n")
        if os.geteuid() == 0:
            # sshd refuses to start without its privilege separation directory
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        conf = [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"HostKey {s / 'ssh_host_ed25519_key'}",
            f"PidFile {s / 'sshd.pid'}",
            f"AuthorizedKeysFile {s / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # the state dir usually lies under /tmp (mode 1777), which StrictModes rejects
            "StrictModes no",
            f"AllowUsers {self.user}",
            "LogLevel VERBOSE",
            "MaxSessions 20",
            "MaxStartups 100:30:200",
            "ClientAliveInterval 30",
        ]
        if self.setenv:
            conf.append("SetEnv " + " ".join(f"{k}={v}" for k, v in self.setenv.items()))
        if self.sftp:
            conf.append(f"Subsystem sftp {SFTP_SERVER}")
        (s / "sshd_config").write_text("\n".join(conf) + "\n")
        r = run_quiet([SSHD, "-t", "-f", str(s / "sshd_config")])
        if r.returncode != 0:
            raise ServiceError(f"sshd -t rejected {s / 'sshd_config'}: {r.stderr.strip()}")
        self.started = True
        r = run_quiet([SSHD, "-f", str(s / "sshd_config"), "-E", str(s / "sshd.log")])
        if r.returncode != 0:
            raise ServiceError(f"sshd exited {r.returncode}: {r.stderr.strip()}\n{self.logs()}")
        wait_until(
            lambda: self.run(["true"], timeout_s=10).returncode == 0,
            timeout_s,
            f"ssh login to {self.target}",
            [s / "sshd.log"],
            0.1,
        )
        return self

    def stop(self) -> None:
        """Stop the listener and its per-connection children (found by parent PID)."""
        if not self.started:
            return
        pid = read_pid(self.state_dir / "sshd.pid")
        if pid and pid_alive(pid):
            for child in all_pids():
                if _ppid(child) == pid:
                    stop_pid(child, 3)
            stop_pid(pid, 5)
        self.started = False


def _ppid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None
