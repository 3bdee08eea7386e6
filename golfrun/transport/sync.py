"""Move code to a remote work folder and bring a campaign's runs folder back.

Push (default, `push_worktree`): a tar.gz of exactly the files git sees in the working tree —
tracked files as they are now (committed or not, binary or text) plus untracked files that are not
ignored — copied over SFTP and unpacked with `tar` on the other side. That is the same tree as
`git archive HEAD` with the uncommitted diff applied, without needing git, `git apply` or rsync on
the cluster, and binary-safe by construction. The commit and whether the tree was dirty are
written beside the code (`.golfrun-source.json`) for provenance. Outside a git checkout the given
fallback paths are packed instead.

Pull (`pull_tree`): an SFTP walk of the remote folder, skipping named folders (the dataset).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from golfrun.errors import TransportError

SOURCE_FILE = ".golfrun-source.json"
SKIP_PARTS = ("__pycache__", ".pytest_cache", ".git")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=60)


def worktree_files(repo: Path) -> list[str] | None:
    """Paths (relative, posix) git knows in the working tree, or None outside a git checkout."""
    r = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if r.returncode != 0:
        return None
    names = sorted({n.decode() for n in r.stdout.split(b"\0") if n})
    return [n for n in names if (repo / n).is_file() and not any(p in SKIP_PARTS for p in n.split("/"))]


def source_info(repo: Path) -> dict[str, Any]:
    head = _git(repo, "rev-parse", "HEAD")
    dirty = _git(repo, "status", "--porcelain")
    return {
        "commit": head.stdout.decode().strip() if head.returncode == 0 else "",
        "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None,
    }


def tree_digest(repo: Path) -> str:
    """sha256 over the names and bytes of what pack_worktree would pack (same tree, same digest):
    names a pushed copy, so jobs still queued keep the code they were submitted with."""
    repo = Path(repo).resolve()
    digest = hashlib.sha256()
    for name in worktree_files(repo) or []:
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256((repo / name).read_bytes()).digest())
    return digest.hexdigest()


def pack_worktree(repo: Path, fallback: Sequence[str] = ("golfrun", "pyproject.toml", "train_gpt.py")) -> bytes:
    """tar.gz of the working tree as git sees it (see the module doc)."""
    repo = Path(repo).resolve()
    names = worktree_files(repo)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        if names is None:
            for item in fallback:
                path = repo / item
                if path.exists():
                    tar.add(str(path), arcname=item, filter=_keep)
        else:
            for name in names:
                tar.add(str(repo / name), arcname=name, recursive=False)
        info = json.dumps(source_info(repo), indent=2).encode() + b"\n"
        ti = tarfile.TarInfo(SOURCE_FILE)
        ti.size, ti.mode = len(info), 0o644
        tar.addfile(ti, io.BytesIO(info))
    return buffer.getvalue()


def _keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if any(p in SKIP_PARTS for p in Path(info.name).parts):
        return None
    return info if (info.isfile() or info.isdir()) else None


def push_tar(transport: Any, data: bytes, remote_dir: str, replace: bool = True) -> None:
    """Unpack a tar.gz into remote_dir (emptied first when `replace`)."""
    parent = posixpath.dirname(remote_dir.rstrip("/")) or "/"
    remote_tar = posixpath.join(parent, f".{posixpath.basename(remote_dir.rstrip('/'))}.push.tar.gz")
    if replace:
        transport.run(["rm", "-rf", "--", remote_dir]).check()
    transport.run(["mkdir", "-p", "--", remote_dir]).check()
    with tempfile.TemporaryDirectory(prefix="golfrun-push-") as tmp:
        local = Path(tmp) / "push.tar.gz"
        local.write_bytes(data)
        transport.put(local, remote_tar)
    try:
        transport.run(["tar", "-xzf", remote_tar, "-C", remote_dir], timeout_s=600).check()
    finally:
        transport.run(["rm", "-f", "--", remote_tar])


def push_worktree(transport: Any, repo: Path, remote_dir: str) -> None:
    push_tar(transport, pack_worktree(repo), remote_dir)


def put_text(transport: Any, text: str, remote: str, mode: int = 0o644) -> None:
    with tempfile.TemporaryDirectory(prefix="golfrun-put-") as tmp:
        local = Path(tmp) / posixpath.basename(remote)
        local.write_text(text, encoding="utf-8")
        local.chmod(mode)
        transport.put(local, remote)


def pull_tree(transport: Any, remote_dir: str, local_dir: Path, exclude_dirs: Sequence[str] = ("data",)) -> list[str]:
    """Copy remote_dir into local_dir over SFTP (files overwritten, nothing deleted); returns the
    relative paths copied. Top-level folders named in `exclude_dirs` are left out."""
    sftp = transport.sftp()
    copied: list[str] = []

    def walk(rdir: str, ldir: Path, rel: str) -> None:
        try:
            entries = sftp.listdir_attr(rdir)
        except FileNotFoundError:
            raise TransportError(f"pull: remote folder {rdir} does not exist") from None
        ldir.mkdir(parents=True, exist_ok=True)
        for e in entries:
            mode = e.st_mode or 0
            name = e.filename
            r_path, l_path, r_rel = posixpath.join(rdir, name), ldir / name, posixpath.join(rel, name) if rel else name
            if stat.S_ISDIR(mode):
                if not rel and name in exclude_dirs:
                    continue
                walk(r_path, l_path, r_rel)
            elif stat.S_ISREG(mode):
                tmp = l_path.with_name(l_path.name + ".pulling")
                sftp.get(r_path, str(tmp))
                tmp.replace(l_path)
                copied.append(r_rel)

    walk(remote_dir, Path(local_dir), "")
    return copied
