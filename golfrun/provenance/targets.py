"""Where a preserved bundle goes, and the upload that proves it arrived intact.

Target grammar (`[preserve] targets`, `golfrun upload --to`):

    hf:<owner/repo>[@revision][/path]          Hugging Face model repo (the default repo type)
    hf-dataset:<owner/repo>[@revision][/path]  Hugging Face dataset repo
    rsync:[user@]host[:port]:<path>            rsync over ssh, host keys checked
    sftp:[user@]host[:port]:<path>             SFTP through paramiko, host keys checked
    dir:<path>                                 a folder (relative: in a campaign, to runs/<campaign>/;
                                               for `golfrun upload`, to the working folder)

The repo type is part of the scheme, never guessed: the seed pipeline once uploaded to a dataset
repo where a model repo was meant.

A bundle is the folder 05-preserve holds: the tarball, a README.md and SHA256SUMS listing both.
Every upload writes those three files and then reads each back from the target (Hub metadata and
a fresh download, rsync back into a temp folder, an SFTP read, a re-read of the copied file) and
hashes it against SHA256SUMS. Uploads are idempotent: a retry rewrites the same names with the
same bytes (the Hub skips unchanged files), so "run it again" is always a safe answer.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from golfrun.errors import ProvenanceError
from golfrun.provenance.tarball import SUMS_NAME, parse_sums, sha256_file

HF_SCHEMES = {"hf": "model", "hf-model": "model", "hf-dataset": "dataset"}
TARGET_FORMS = (
    "hf:<owner/repo>[@revision][/path]",
    "hf-dataset:<owner/repo>[@revision][/path]",
    "rsync:[user@]host[:port]:<path>",
    "sftp:[user@]host[:port]:<path>",
    "dir:<path>",
)

_HF = re.compile(r"(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[\w.-]+?)(?:@(?P<rev>[^/]+))?(?:/(?P<path>.+))?")
_REMOTE = re.compile(r"(?:(?P<user>[^@:/\s]+)@)?(?P<host>[^@:/\s]+)(?::(?P<port>\d+))?:(?P<path>.+)")


@dataclass(frozen=True)
class Target:
    kind: str  # "hf" | "rsync" | "sftp" | "dir"
    spec: str  # as written
    path: str  # path in the repo, on the remote host, or the folder
    repo_id: str = ""
    repo_type: str = "model"
    revision: str = "main"
    user: str = ""
    host: str = ""
    port: int = 22

    def __str__(self) -> str:
        return self.spec


def parse_target(spec: str) -> Target:
    scheme, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ProvenanceError(f"preserve target {spec!r}: expected one of {', '.join(TARGET_FORMS)}")
    if scheme in HF_SCHEMES:
        m = _HF.fullmatch(rest)
        if not m:
            raise ProvenanceError(f"preserve target {spec!r}: expected {scheme}:<owner/repo>[@revision][/path]")
        return Target(
            "hf", spec, (m["path"] or "").strip("/"), repo_id=f"{m['owner']}/{m['name']}",
            repo_type=HF_SCHEMES[scheme], revision=m["rev"] or "main",
        )
    if scheme in ("rsync", "sftp"):
        m = _REMOTE.fullmatch(rest)
        if not m:
            raise ProvenanceError(f"preserve target {spec!r}: expected {scheme}:[user@]host[:port]:<path>")
        return Target(scheme, spec, m["path"], user=m["user"] or "", host=m["host"], port=int(m["port"] or 22))
    if scheme == "dir":
        return Target("dir", spec, rest)
    raise ProvenanceError(f"preserve target {spec!r}: unknown scheme {scheme!r}; expected one of {', '.join(TARGET_FORMS)}")


@dataclass(frozen=True)
class UploadOptions:
    private: bool = True  # new Hub repos are private unless the campaign says otherwise
    ssh_key: str = ""  # private key file for rsync/sftp ("" = ssh's defaults / agent)
    known_hosts: str = ""  # known_hosts file ("" = ~/.ssh/known_hosts); never auto-accepted
    timeout_s: float = 1800.0


@dataclass
class Bundle:
    """The files of one preserved campaign: names in `folder`, each with its expected sha256."""

    folder: Path
    sums: dict[str, str]  # every file to upload (SHA256SUMS included) → sha256

    @property
    def names(self) -> list[str]:
        # SHA256SUMS last: a reader that finds it finds everything it lists already in place
        return sorted(n for n in self.sums if n != SUMS_NAME) + [SUMS_NAME]

    @classmethod
    def from_tarball(cls, tarball: Path | str) -> "Bundle":
        """The bundle around a tarball: its folder's SHA256SUMS names the other files. The local
        files are re-hashed first, so a corrupted local copy is never uploaded."""
        tarball = Path(tarball)
        folder = tarball.parent
        sums_path = folder / SUMS_NAME
        if not tarball.is_file():
            raise ProvenanceError(f"{tarball}: no such tarball")
        if not sums_path.is_file():
            raise ProvenanceError(f"{sums_path}: missing; it lists the files to upload beside {tarball.name}")
        listed = parse_sums(sums_path.read_text(), str(sums_path))
        if tarball.name not in listed:
            raise ProvenanceError(f"{sums_path} does not list {tarball.name}")
        for name, digest in listed.items():
            if "/" in name or not (folder / name).is_file():
                raise ProvenanceError(f"{sums_path} lists {name!r}, which is not a file in {folder}")
            if sha256_file(folder / name) != digest:
                raise ProvenanceError(f"{folder / name}: sha256 differs from {sums_path}; the local copy changed")
        return cls(folder, {**listed, SUMS_NAME: sha256_file(sums_path)})


@dataclass
class UploadResult:
    target: str
    ok: bool
    location: str = ""  # URL or path where the files now are
    verified: dict[str, str] = field(default_factory=dict)  # name → sha256 read back
    commit: str = ""  # Hub commit sha
    notes: list[str] = field(default_factory=list)
    error: str = ""
    retry: str = ""  # the command that retries this upload

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items()}


def retry_command(tarball: Path | str, target: Target, options: UploadOptions) -> str:
    argv = ["golfrun", "upload", str(tarball), "--to", target.spec]
    if target.kind == "hf" and not options.private:
        argv.append("--public")
    if options.ssh_key and target.kind in ("rsync", "sftp"):
        argv += ["--ssh-key", options.ssh_key]
    if options.known_hosts and target.kind in ("rsync", "sftp"):
        argv += ["--known-hosts", options.known_hosts]
    return shlex.join(argv)


def upload(bundle: Bundle, target: Target, options: UploadOptions = UploadOptions(), tarball_name: str = "") -> UploadResult:
    """Upload and verify; never raises for a failed target (the result says what failed and how to
    retry), so one bad target does not stop the others."""
    tarball = bundle.folder / (tarball_name or next(n for n in bundle.names if n.endswith(".tar.gz")))
    result = UploadResult(target.spec, ok=False, retry=retry_command(tarball, target, options))
    try:
        if target.kind == "dir":
            _upload_dir(bundle, target, result)
        elif target.kind == "hf":
            from golfrun.provenance import hub

            hub.upload(bundle, target, options, result)
        elif target.kind == "rsync":
            from golfrun.provenance import remote

            remote.upload_rsync(bundle, target, options, result)
        elif target.kind == "sftp":
            from golfrun.provenance import remote

            remote.upload_sftp(bundle, target, options, result)
        else:  # parse_target never makes one
            raise ProvenanceError(f"unknown target kind {target.kind!r}")
        check_verified(bundle, result)
        result.ok = True
    except Exception as exc:  # noqa: BLE001 - any failure of one target is reported, not raised
        from golfrun.secrets import redact_text, secret_values_from_env

        result.error = redact_text(f"{type(exc).__name__}: {exc}" if not isinstance(exc, ProvenanceError) else str(exc),
                                   secret_values_from_env(os.environ))
    return result


def check_verified(bundle: Bundle, result: UploadResult) -> None:
    """Every file of the bundle was read back from the target with the expected sha256."""
    bad = [f"{n} (read back {result.verified.get(n, 'nothing')[:16]}…, expected {h[:16]}…)"
           for n, h in sorted(bundle.sums.items()) if result.verified.get(n) != h]
    if bad:
        raise ProvenanceError(f"{result.target}: verification failed for " + "; ".join(bad))


def _upload_dir(bundle: Bundle, target: Target, result: UploadResult) -> None:
    dest = Path(target.path).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in bundle.names:
            tmp = dest / f".{name}.partial"
            shutil.copyfile(bundle.folder / name, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, dest / name)
    except OSError as exc:
        raise ProvenanceError(f"{target.spec}: cannot copy into {dest}: {exc}") from exc
    for name in bundle.names:
        result.verified[name] = sha256_file(dest / name)
    result.location = str(dest.resolve())
