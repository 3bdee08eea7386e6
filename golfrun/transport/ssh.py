"""SSH transport (paramiko): commands and file copies on another machine.

Host keys are checked against a known_hosts file; an unknown key is an error unless the user asked
to accept it (`accept_new_host_key=True`, which records it in that file). A changed key is always an
error. Commands are argv lists, each word quoted for the remote shell; nothing is pasted into a
shell line unquoted. Files move over SFTP.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import socket
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from golfrun.errors import TransportError
from golfrun.transport.base import CompletedRun, format_argv

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int = 22

    @classmethod
    def parse(cls, spec: str) -> "SshTarget":
        """`user@host[:port]`, `host`, or `user@[v6addr]:port`."""
        text = spec.strip()
        user = None
        if "@" in text:
            user, _, text = text.rpartition("@")
            if not user:
                raise TransportError(f"ssh target {spec!r}: empty user before '@'")
        port = 22
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise TransportError(f"ssh target {spec!r}: expected ':PORT' after ']'")
                port = _port(spec, rest[1:])
        elif text.count(":") == 1:
            host, _, p = text.partition(":")
            port = _port(spec, p)
        else:
            host = text
        if not host or any(c.isspace() for c in host):
            raise TransportError(f"ssh target {spec!r}: expected user@host[:port]")
        return cls(host=host, user=user, port=port)

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}"


def _port(spec: str, text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise TransportError(f"ssh target {spec!r}: port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise TransportError(f"ssh target {spec!r}: port {port} out of range")
    return port


def remote_command(argv: Sequence[str], cwd: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The command line the remote shell gets: every word quoted; `cd` and `env` only as argv too."""
    if not argv:
        raise TransportError("empty command")
    words = [str(a) for a in argv]
    if env:
        words = ["env", *[f"{k}={v}" for k, v in env.items()], *words]
    line = shlex.join(words)
    if cwd:
        line = f"cd -- {shlex.quote(cwd)} && {line}"
    return line


# errors worth retrying while connecting: the server not yet listening, a dropped banner,
# a reset; never authentication or host-key failures
_TRANSIENT = (socket.timeout, ConnectionError, EOFError, paramiko.ssh_exception.NoValidConnectionsError)


class SshTransport:
    """One SSH connection, opened lazily and reopened when it drops."""

    def __init__(
        self,
        target: SshTarget | str,
        key_path: str | Path | None = None,
        known_hosts: str | Path | None = None,
        accept_new_host_key: bool = False,
        connect_timeout_s: float = 15.0,
        connect_deadline_s: float = 60.0,
        keepalive_s: int = 30,
    ) -> None:
        self.target = SshTarget.parse(target) if isinstance(target, str) else target
        self.key_path = str(Path(key_path).expanduser()) if key_path else None
        self.known_hosts = Path(known_hosts or DEFAULT_KNOWN_HOSTS).expanduser()
        self.accept_new_host_key = accept_new_host_key
        self.connect_timeout_s = connect_timeout_s
        self.connect_deadline_s = connect_deadline_s
        self.keepalive_s = keepalive_s
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # ------------------------------------------------------------------ connection
    def __enter__(self) -> "SshTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _client_ready(self) -> paramiko.SSHClient:
        client = self._client
        if client is not None:
            tr = client.get_transport()
            if tr is not None and tr.is_active():
                return client
            self.close()
        self._client = self._connect()
        return self._client

    def _connect(self) -> paramiko.SSHClient:
        where = f"ssh {self.target}"
        if not self.known_hosts.exists():
            if not self.accept_new_host_key:
                raise TransportError(
                    f"{where}: known_hosts file {self.known_hosts} does not exist; add the host's key "
                    "to it (ssh-keyscan, after checking the fingerprint) or pass --accept-new-host-key"
                )
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            self.known_hosts.touch(mode=0o600)
        end = time.monotonic() + self.connect_deadline_s
        delay = 0.5
        last: Exception | None = None
        while True:
            client = paramiko.SSHClient()
            client.load_host_keys(str(self.known_hosts))  # also where AutoAddPolicy saves
            client.set_missing_host_key_policy(
                paramiko.AutoAddPolicy() if self.accept_new_host_key else paramiko.RejectPolicy()
            )
            try:
                client.connect(
                    self.target.host,
                    port=self.target.port,
                    username=self.target.user,
                    key_filename=self.key_path,
                    look_for_keys=self.key_path is None,
                    allow_agent=self.key_path is None,
                    timeout=self.connect_timeout_s,
                    banner_timeout=self.connect_timeout_s,
                    auth_timeout=self.connect_timeout_s,
                )
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise TransportError(
                    f"{where}: the host key CHANGED ({exc.key.get_name()} {exc.key.get_fingerprint().hex()}, "
                    f"known_hosts {self.known_hosts} has another); refusing to connect"
                ) from None
            except paramiko.AuthenticationException as exc:
                client.close()
                key = self.key_path or "the agent / default keys"
                raise TransportError(f"{where}: authentication failed with {key}: {exc}") from None
            except paramiko.SSHException as exc:
                client.close()
                if "not found in known_hosts" in str(exc):
                    raise TransportError(
                        f"{where}: host key not in {self.known_hosts}; add it (ssh-keyscan -p {self.target.port} "
                        f"{self.target.host}, after checking the fingerprint) or pass --accept-new-host-key"
                    ) from None
                last = exc  # banner / protocol errors: the server may still be starting
            except (*_TRANSIENT, OSError) as exc:
                client.close()
                last = exc
            else:
                tr = client.get_transport()
                if tr is not None and self.keepalive_s:
                    tr.set_keepalive(self.keepalive_s)
                return client
            if time.monotonic() + delay > end:
                raise TransportError(
                    f"{where}: could not connect within {self.connect_deadline_s:.0f}s: {type(last).__name__}: {last}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ commands
    def run(
        self,
        argv: Sequence[str],
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
        stdin: bytes | None = None,
    ) -> CompletedRun:
        line = remote_command(argv, cwd, env)
        shown = tuple(str(a) for a in argv)
        client = self._client_ready()
        tr = client.get_transport()
        assert tr is not None
        try:
            chan = tr.open_session(timeout=self.connect_timeout_s)
        except (paramiko.SSHException, EOFError, OSError):
            # the connection went stale between calls: one fresh try
            self.close()
            tr = self._client_ready().get_transport()
            assert tr is not None
            chan = tr.open_session(timeout=self.connect_timeout_s)
        end = time.monotonic() + timeout_s
        out, err = bytearray(), bytearray()
        try:
            chan.settimeout(1.0)
            chan.exec_command(line)
            if stdin is not None:
                chan.sendall(stdin)
            chan.shutdown_write()  # EOF on the remote stdin, else commands reading it never end
            while True:
                busy = False
                if chan.recv_ready():
                    out += chan.recv(1 << 16)
                    busy = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                    busy = True
                if not busy:
                    if chan.exit_status_ready() and chan.eof_received:
                        break
                    if time.monotonic() > end:
                        raise TransportError(
                            f"ssh {self.target}: command did not finish within {timeout_s:.0f}s: {format_argv(shown)}"
                        )
                    time.sleep(0.01)
            while chan.recv_ready():
                out += chan.recv(1 << 16)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
            code = chan.recv_exit_status()
        except (paramiko.SSHException, socket.error, EOFError) as exc:
            raise TransportError(f"ssh {self.target}: connection lost running {format_argv(shown)}: {exc}") from None
        finally:
            chan.close()
        return CompletedRun(code, out.decode(errors="replace"), err.decode(errors="replace"), shown)

    # ------------------------------------------------------------------ files
    def _sftp_ready(self) -> paramiko.SFTPClient:
        client = self._client_ready()
        if self._sftp is None or self._sftp.get_channel() is None or self._sftp.get_channel().closed:
            try:
                self._sftp = client.open_sftp()
            except paramiko.SSHException as exc:
                raise TransportError(f"ssh {self.target}: SFTP unavailable ({exc}); the server needs an sftp subsystem") from None
        return self._sftp

    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP client (opened on first use), for folder walks."""
        return self._sftp_ready()

    def makedirs(self, remote: str) -> None:
        sftp = self._sftp_ready()
        parts: list[str] = []
        path = remote.rstrip("/") or "/"
        while path not in ("", "/"):
            try:
                if stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                    break
                raise TransportError(f"ssh {self.target}: {path} exists and is not a folder")
            except FileNotFoundError:
                parts.append(path)
                path = posixpath.dirname(path)
        for p in reversed(parts):
            sftp.mkdir(p)

    def put(self, local: Path | str, remote: str) -> None:
        src = Path(local)
        if not src.exists():
            raise TransportError(f"put: local path {src} does not exist")
        sftp = self._sftp_ready()
        try:
            if src.is_dir():
                self.makedirs(remote)
                for root, dirs, files in os.walk(src):
                    rel = Path(root).relative_to(src).as_posix()
                    rdir = remote if rel == "." else posixpath.join(remote, rel)
                    for d in dirs:
                        self.makedirs(posixpath.join(rdir, d))
                    for f in files:
                        lp = Path(root) / f
                        sftp.put(str(lp), posixpath.join(rdir, f))
                        sftp.chmod(posixpath.join(rdir, f), lp.stat().st_mode & 0o777)
            else:
                self.makedirs(posixpath.dirname(remote) or ".")
                sftp.put(str(src), remote)
                sftp.chmod(remote, src.stat().st_mode & 0o777)
        except OSError as exc:
            raise TransportError(f"ssh {self.target}: put {src} → {remote} failed: {exc}") from None

    def get(self, remote: str, local: Path | str) -> None:
        sftp = self._sftp_ready()
        dst = Path(local)
        try:
            st = sftp.stat(remote)
        except FileNotFoundError:
            raise TransportError(f"ssh {self.target}: get: remote path {remote} does not exist") from None
        try:
            if stat.S_ISDIR(st.st_mode or 0):
                self._get_dir(sftp, remote, dst)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                sftp.get(remote, str(dst))
                os.chmod(dst, (st.st_mode or 0o644) & 0o777)
        except OSError as exc:
            raise TransportError(f"ssh {self.target}: get {remote} → {dst} failed: {exc}") from None

    def _get_dir(self, sftp: paramiko.SFTPClient, remote: str, dst: Path) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for entry in sftp.listdir_attr(remote):
            rp = posixpath.join(remote, entry.filename)
            mode = entry.st_mode or 0
            if stat.S_ISDIR(mode):
                self._get_dir(sftp, rp, dst / entry.filename)
            elif stat.S_ISREG(mode):
                sftp.get(rp, str(dst / entry.filename))
                os.chmod(dst / entry.filename, mode & 0o777)
            # links and special files are not copied: runs/ holds plain files
