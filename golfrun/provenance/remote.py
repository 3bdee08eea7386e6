"""Upload a bundle over SSH: rsync (the `rsync` and `ssh` binaries) or SFTP (paramiko through
golfrun/transport/ssh.py). Host keys are always checked (StrictHostKeyChecking=yes; paramiko's
RejectPolicy): preserving never trusts a host it has not been told about.

Each upload is followed by a read-back that does not trust the writer: rsync copies the files back
into an empty temp folder (so nothing is skipped as "already there") and SFTP reads them back;
both are hashed against SHA256SUMS by the caller.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path

from golfrun.errors import ProvenanceError, TransportError
from golfrun.provenance.tarball import sha256_file
from golfrun.provenance.upload_base import Bundle, Target, UploadOptions, UploadResult
from golfrun.transport import local


def rsync_rsh(target: Target, options: UploadOptions) -> str:
    """The `-e` value: rsync splits it into words itself (it is never given to a shell)."""
    argv = ["ssh", "-p", str(target.port), "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=15"]
    if options.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={Path(options.known_hosts).expanduser()}"]
    if options.ssh_key:
        argv += ["-i", str(Path(options.ssh_key).expanduser()), "-o", "IdentitiesOnly=yes"]
    return shlex.join(argv)


def _remote(target: Target, path: str) -> str:
    return f"{target.user + '@' if target.user else ''}{target.host}:{path}"


def upload_rsync(bundle: Bundle, target: Target, options: UploadOptions, result: UploadResult) -> None:
    rsh = rsync_rsh(target, options)
    dest = target.path.rstrip("/") + "/"
    sources = [str(bundle.folder / n) for n in bundle.names]
    # --mkpath creates the destination folder; --checksum makes a retry compare contents, not times
    try:
        local.run(["rsync", "--mkpath", "--checksum", "--times", "--partial", "-e", rsh, *sources,
                   _remote(target, dest)], timeout_s=options.timeout_s)
        with tempfile.TemporaryDirectory(prefix="golfrun-rsync-verify-") as back:
            for name in bundle.names:
                local.run(["rsync", "-e", rsh, _remote(target, dest + name), str(Path(back) / name)],
                          timeout_s=options.timeout_s)
                result.verified[name] = sha256_file(Path(back) / name)
    except TransportError as exc:
        raise ProvenanceError(f"{target.spec}: {exc}") from None
    result.location = _remote(target, dest)


def upload_sftp(bundle: Bundle, target: Target, options: UploadOptions, result: UploadResult) -> None:
    from golfrun.transport.ssh import SshTarget, SshTransport

    ssh = SshTransport(
        SshTarget(target.host, target.user or None, target.port),
        key_path=options.ssh_key or None,
        known_hosts=options.known_hosts or None,
        accept_new_host_key=False,
        connect_deadline_s=min(30.0, options.timeout_s),
    )
    try:
        with ssh, tempfile.TemporaryDirectory(prefix="golfrun-sftp-verify-") as back:
            for name in bundle.names:
                ssh.put(bundle.folder / name, posixpath.join(target.path, name))
            for name in bundle.names:
                ssh.get(posixpath.join(target.path, name), Path(back) / name)
                result.verified[name] = sha256_file(Path(back) / name)
    except TransportError as exc:
        raise ProvenanceError(f"{target.spec}: {exc}") from None
    result.location = _remote(target, target.path)


_HOST_PATH = re.compile(r"(?:(?P<user>[^@:/\s]+)@)?(?P<host>[^@:/\s]+)(?::(?P<port>\d+))?:(?P<path>.+)")


class SshUploadTarget:
    """`rsync:[user@]host[:port]:<path>` and `sftp:…`: host keys checked, never auto-accepted."""

    def __init__(self, scheme: str, upload: Callable[[Bundle, Target, UploadOptions, UploadResult], None]) -> None:
        self.scheme = scheme
        self.form = f"{scheme}:[user@]host[:port]:<path>"
        self._upload = upload

    def parse(self, spec: str, scheme: str, rest: str) -> Target:
        m = _HOST_PATH.fullmatch(rest)
        if not m:
            raise ProvenanceError(f"preserve target {spec!r}: expected {self.form}")
        return Target(self.scheme, spec, m["path"], user=m["user"] or "", host=m["host"], port=int(m["port"] or 22))

    def upload(self, bundle: Bundle, target: Target, options: UploadOptions, result: UploadResult) -> None:
        self._upload(bundle, target, options, result)

    def retry_args(self, target: Target, options: UploadOptions) -> list[str]:
        args = ["--ssh-key", options.ssh_key] if options.ssh_key else []
        return args + (["--known-hosts", options.known_hosts] if options.known_hosts else [])


RSYNC = SshUploadTarget("rsync", upload_rsync)
SFTP = SshUploadTarget("sftp", upload_sftp)
