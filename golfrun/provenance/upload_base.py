"""What every upload target shares: the parsed `Target`, the `Bundle` it receives, the options,
the `UploadResult`, and the `TargetKind` protocol each kind implements (golfrun/provenance/
targets.py holds the registry). Plain types: a target module imports this, never targets.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from golfrun.errors import ProvenanceError
from golfrun.provenance.tarball import SUMS_NAME, parse_sums, sha256_file


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


class TargetKind(Protocol):
    """One kind of upload target (a line in targets.KINDS)."""

    form: str  # the grammar, for messages: "dir:<path>"

    def parse(self, spec: str, scheme: str, rest: str) -> Target:
        """`spec` = "<scheme>:<rest>" as written; a malformed one is a ProvenanceError naming it."""
        ...

    def upload(self, bundle: Bundle, target: Target, options: UploadOptions, result: UploadResult) -> None:
        """Write the bundle's files and read each back into `result.verified` (name → sha256)."""
        ...

    def retry_args(self, target: Target, options: UploadOptions) -> list[str]:
        """`golfrun upload` options that this target's retry needs."""
        ...


def check_verified(bundle: Bundle, result: UploadResult) -> None:
    """Every file of the bundle was read back from the target with the expected sha256."""
    bad = [f"{n} (read back {result.verified.get(n, 'nothing')[:16]}…, expected {h[:16]}…)"
           for n, h in sorted(bundle.sums.items()) if result.verified.get(n) != h]
    if bad:
        raise ProvenanceError(f"{result.target}: verification failed for " + "; ".join(bad))
