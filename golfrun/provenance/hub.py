"""Upload a bundle to the Hugging Face Hub with the real `huggingface_hub` client, then prove it.

One commit holds the tarball, README.md (the model card) and SHA256SUMS. Verification, pinned to
that commit: the Hub's own metadata (`get_paths_info`: the LFS sha256, or the git blob sha1 for a
regular file) must match, and each file is downloaded again into a fresh cache and hashed, because
the client checks only the size of what it downloads.

The endpoint and token are read from the environment at call time (`HF_ENDPOINT`, `HF_TOKEN`),
not from huggingface_hub's import-time constants, so a changed environment is honoured.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from golfrun.errors import ProvenanceError
from golfrun.provenance.tarball import sha256_file
from golfrun.provenance.upload_base import Bundle, Target, UploadOptions, UploadResult


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def upload(bundle: Bundle, target: Target, options: UploadOptions, result: UploadResult) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
    from huggingface_hub.utils.sha import git_hash

    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # stage logs are line-oriented; tqdm bars would garble them
    endpoint, token = _endpoint(), _token()
    api = HfApi(endpoint=endpoint, token=token)
    in_repo = {name: f"{target.path}/{name}" if target.path else name for name in bundle.names}

    api.create_repo(target.repo_id, repo_type=target.repo_type, private=options.private, exist_ok=True)
    info = api.repo_info(target.repo_id, repo_type=target.repo_type, revision=target.revision)
    if options.private and not getattr(info, "private", True):
        result.notes.append(f"{target.repo_id} already existed and is public; its visibility was left as it is")

    ops = [CommitOperationAdd(path_in_repo=in_repo[n], path_or_fileobj=str(bundle.folder / n)) for n in bundle.names]
    commit = api.create_commit(
        target.repo_id, ops, repo_type=target.repo_type, revision=target.revision,
        commit_message=f"golfrun preserve: {', '.join(bundle.names)}",
    )
    result.commit = commit.oid
    prefix = "" if target.repo_type == "model" else f"{target.repo_type}s/"
    result.location = f"{endpoint}/{prefix}{target.repo_id}/tree/{commit.oid}" + (f"/{target.path}" if target.path else "")

    # 1. the Hub's metadata of this exact commit
    entries = {e.path: e for e in api.get_paths_info(target.repo_id, list(in_repo.values()),
                                                     repo_type=target.repo_type, revision=commit.oid)}
    for name, path in in_repo.items():
        entry = entries.get(path)
        if entry is None:
            raise ProvenanceError(f"{target.spec}: {path} is missing from commit {commit.oid}")
        local = bundle.folder / name
        lfs = getattr(entry, "lfs", None)
        if lfs is not None:
            if lfs.sha256 != bundle.sums[name]:
                raise ProvenanceError(f"{target.spec}: the Hub's sha256 of {path} is {lfs.sha256}, expected {bundle.sums[name]}")
        elif entry.blob_id != git_hash(local.read_bytes()):
            raise ProvenanceError(f"{target.spec}: the Hub's git blob id of {path} differs from the local file")

    # 2. the bytes themselves, downloaded again into a cache nothing else shares
    with tempfile.TemporaryDirectory(prefix="golfrun-hf-verify-") as cache:
        for name, path in in_repo.items():
            got = hf_hub_download(
                target.repo_id, path, repo_type=target.repo_type, revision=commit.oid,
                cache_dir=cache, endpoint=endpoint, token=token,
            )
            result.verified[name] = sha256_file(Path(got))


_REPO = re.compile(r"(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<name>[\w.-]+?)(?:@(?P<rev>[^/]+))?(?:/(?P<path>.+))?")


class HubTarget:
    """`hf:` (a model repo) and `hf-dataset:`. The repo type is part of the scheme, never guessed:
    the seed pipeline once uploaded to a dataset repo where a model repo was meant."""

    def __init__(self, repo_type: str, scheme: str) -> None:
        self.repo_type = repo_type
        self.form = f"{scheme}:<owner/repo>[@revision][/path]"

    def parse(self, spec: str, scheme: str, rest: str) -> Target:
        m = _REPO.fullmatch(rest)
        if not m:
            raise ProvenanceError(f"preserve target {spec!r}: expected {scheme}:<owner/repo>[@revision][/path]")
        return Target("hf", spec, (m["path"] or "").strip("/"), repo_id=f"{m['owner']}/{m['name']}",
                      repo_type=self.repo_type, revision=m["rev"] or "main")

    def upload(self, bundle: Bundle, target: Target, options: UploadOptions, result: UploadResult) -> None:
        upload(bundle, target, options, result)

    def retry_args(self, target: Target, options: UploadOptions) -> list[str]:
        return [] if options.private else ["--public"]


HF_MODEL = HubTarget("model", "hf")
HF_DATASET = HubTarget("dataset", "hf-dataset")
