"""Download data: put the challenge data where the trainer reads it, in the competition layout
(<dir>/manifest.json, <dir>/datasets/fineweb10B_<variant>/fineweb_{train,val}_%06d.bin,
<dir>/tokenizers/…), with <dir> = data.dir or runs/<campaign>/data.

Sources:
  "synthetic"  — golfrun.data.synthetic.build_dataset (generated documents, a SentencePiece BPE
                 trained with the exporter's settings); idempotent.
  "hf:<repo>"  — a Hugging Face dataset repo laid out like the competition's (remote prefix
                 `datasets/`): the manifest first, then all val shards, the first
                 data.train_shards train shards and the tokenizer files. Expected sizes and
                 sha256 come from the Hub's file metadata (get_paths_info); free disk is checked
                 against what is still missing before anything is downloaded; a file already in
                 place with the right sha256 is kept (resumable); downloads land in the HF cache
                 and are hard-linked (or copied) into the layout, then hashed.
Rule: PASS iff the manifest is there, at least data.train_shards train shards and one val shard,
the tokenizer, every shard's header valid (magic, version, size), every downloaded file's sha256
equal to the Hub's, and the free-disk check. Any failure → KILL; an unreachable Hub → ERROR.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from golfrun.errors import CampaignError, DataError
from golfrun.fileio import copy_file_atomic, now_iso, sha256_file, write_json_atomic
from golfrun.stages import common
from golfrun.stages.context import StageContext
from golfrun.stages.spec import StageSpec
from golfrun.summary import Check, Summary


def key_figures(summary: Summary) -> str:
    d = summary.decision
    return f"{d.get('variant')}: {d.get('train_shards')} train / {d.get('val_shards')} val shards"


SPEC = StageSpec("download-data", 1, upstream=(),
                 config_sections=("data",), key_figures=key_figures)

VERIFIED_NAME = ".golfrun-verified.json"  # path → [size, mtime_ns, sha256] already hashed


def data_dir(ctx: StageContext) -> Path:
    return Path(ctx.campaign.data_dir(ctx.campaign_dir)).absolute()


def describe(ctx: StageContext) -> list[str]:
    d = ctx.campaign.data
    return [f"{d.source} → {data_dir(ctx)} (variant {d.variant}, {d.train_shards} train shards)"]


def run(ctx: StageContext) -> Summary:
    from golfrun.gates.checks import verdict_from

    started = now_iso()
    d = ctx.campaign.data
    source = str(d.source)
    root = data_dir(ctx)
    root.mkdir(parents=True, exist_ok=True)
    checks: list[Check] = []
    decision: dict[str, Any] = {"source": source, "data_dir": str(root), "variant": str(d.variant)}
    if source == "synthetic":
        _synthetic(ctx, root, checks, decision)
    elif source.startswith("hf:") and len(source) > 3:
        _huggingface(ctx, source[3:], root, checks, decision)
    else:
        raise CampaignError(f"data.source = {source!r}: expected 'synthetic' or 'hf:<owner>/<dataset repo>'")
    _check_layout(root, str(d.variant), int(d.train_shards), checks, decision)
    verdict, reasons = verdict_from(checks)
    return common.new_summary(ctx, verdict, started, checks=checks, decision=decision, reasons=reasons)


def _free_disk(root: Path, need_bytes: int, min_free_gb: float, checks: list[Check]) -> bool:
    free = shutil.disk_usage(root).free
    left_gb = (free - need_bytes) / 1e9
    ok = left_gb >= min_free_gb
    checks.append(Check("free_disk_gb_after", round(left_gb, 3), min_free_gb, ">=", ok,
                        f"{free / 1e9:.2f} GB free under {root}, {need_bytes / 1e9:.3f} GB still to download"))
    return ok


def _synthetic(ctx: StageContext, root: Path, checks: list[Check], decision: dict[str, Any]) -> None:
    from golfrun.data.layout import variant_vocab_size
    from golfrun.data.synthetic import build_dataset

    d = ctx.campaign.data
    s = d.synthetic
    vocab = int(s.vocab_size)
    if variant_vocab_size(str(d.variant)) != vocab:
        raise CampaignError(f"data.variant = {d.variant!r} but data.synthetic.vocab_size = {vocab}: they must agree (sp{vocab})")
    if not _free_disk(root, 0, float(d.min_free_disk_gb), checks):
        return
    info = build_dataset(root, vocab_size=vocab, train_docs=int(s.train_docs), val_docs=int(s.val_docs),
                         train_shards=int(d.train_shards), seed=int(s.seed), log=ctx.log)
    decision.update(vocab_size=info.vocab_size, train_tokens=info.train_tokens, val_tokens=info.val_tokens)


# ----------------------------------------------------------------------------------- Hugging Face


def _load_verified(root: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads((root / VERIFIED_NAME).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _local_sha_ok(path: Path, expected: str, algo: str, verified: dict[str, list[Any]]) -> bool:
    """Whether `path` holds the expected content; hashes once per (size, mtime)."""
    if not path.is_file():
        return False
    st = path.stat()
    known = verified.get(str(path))
    if known and known[0] == st.st_size and known[1] == st.st_mtime_ns and known[2] == expected:
        return True
    actual = _hash(path, algo)
    if actual == expected:
        verified[str(path)] = [st.st_size, st.st_mtime_ns, expected]
        return True
    return False


def _hash(path: Path, algo: str) -> str:
    if algo == "sha256":
        return sha256_file(path)
    from huggingface_hub.utils.sha import git_hash

    return git_hash(path.read_bytes())


def _link_or_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        copy_file_atomic(src, dest)


@dataclass(frozen=True)
class _Hub:
    """One Hub dataset repo as this stage reads it: where it is, and the two calls made to it."""

    repo: str
    endpoint: str | None  # read at call time (huggingface_hub fixes its URL template at import): a mirror or a test Hub
    prefix: str  # the export's folder inside the repo ("" = its root)
    revision: str | None

    def remote_path(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def fetch(self, remote: str) -> Path:
        """The file downloaded into the HF cache (resolved past the cache's links)."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError

        parent, _, name = remote.rpartition("/")
        try:
            return Path(hf_hub_download(self.repo, filename=name, subfolder=parent or None, repo_type="dataset",
                                        revision=self.revision, endpoint=self.endpoint)).resolve()
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise DataError(f"hf:{self.repo}: could not download {remote}: {exc}") from exc

    def paths_info(self, remotes: list[str]) -> dict[str, Any]:
        """remote path → the Hub's metadata (size, LFS sha256 or git blob id); every remote must be there."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError

        try:
            infos = {i.path: i for i in HfApi(endpoint=self.endpoint).get_paths_info(
                self.repo, remotes, repo_type="dataset", revision=self.revision)}
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise DataError(f"hf:{self.repo}: could not read file metadata: {exc}") from exc
        missing = [r for r in remotes if r not in infos]
        if missing:
            raise DataError(f"hf:{self.repo}: files named by the manifest are not in the repo: {missing[:5]}")
        return infos


class _Pending(NamedTuple):
    """A file to download: not in place, or not with the Hub's content."""

    remote: str
    local: Path
    expected: str  # the Hub's hash of it
    algo: str  # "sha256" (an LFS file) | "git-sha1" (a plain git blob)
    size: int


@dataclass(frozen=True)
class _Wanted:
    """What the manifest says to fetch for the variant: val shards, the first train shards, the tokenizer."""

    remotes: list[str]
    files_train: int  # train shards the repo has
    files_val: int


def _huggingface(ctx: StageContext, repo: str, root: Path, checks: list[Check], decision: dict[str, Any]) -> None:
    from huggingface_hub.utils import disable_progress_bars

    from golfrun.data import layout

    if not sys.stderr.isatty():
        disable_progress_bars()  # a log file or pipe would collect every redraw of the bars
    d = ctx.campaign.data
    hub = _Hub(repo, os.environ.get("HF_ENDPOINT") or None, str(d.remote_prefix or "").strip("/"),
               str(d.revision or "") or None)
    wanted = _wanted_files(hub, root, str(d.variant), int(d.train_shards))
    verified = _load_verified(root)
    todo = _pending(hub, wanted.remotes, root, verified)
    if not _free_disk(root, sum(t.size for t in todo), float(d.min_free_disk_gb), checks):
        return
    bad = _download(ctx, hub, todo, verified)
    write_json_atomic(root / VERIFIED_NAME, verified)
    total = len(wanted.remotes)
    checks.append(Check("hub_checksums", total - len(bad), total, "==", not bad,
                        "; ".join(bad[:3]) or f"{len(todo)} downloaded, {total - len(todo)} already in place, all match the Hub"))
    decision.update(repo=repo, vocab_size=layout.variant_vocab_size(str(d.variant)), downloaded=len(todo),
                    files_train_available=wanted.files_train, files_val=wanted.files_val)


def _wanted_files(hub: _Hub, root: Path, variant: str, want_train: int) -> _Wanted:
    """Fetch the manifest into the layout and list the remote files the variant needs."""
    from golfrun.data import layout

    manifest_remote = hub.remote_path(layout.MANIFEST_NAME)
    _link_or_copy(hub.fetch(manifest_remote), layout.manifest_path(root))
    manifest = layout.load_manifest(root)
    source = f"hf:{hub.repo}/{manifest_remote}"
    ds = layout.manifest_dataset(manifest, variant, source=source)
    stats = ds.get("stats") or {}
    files_train, files_val = int(stats.get("files_train", 0)), int(stats.get("files_val", 0))
    if want_train > files_train:
        raise CampaignError(f"data.train_shards = {want_train}, but hf:{hub.repo} has only {files_train} train shards for {variant}")
    tok = layout.manifest_tokenizer(manifest, str(ds.get("tokenizer_name")), source=source)
    ds_folder = layout.dataset_dir_name(variant)
    remotes = [hub.remote_path(f"datasets/{ds_folder}/{layout.shard_name('val', i)}") for i in range(files_val)]
    remotes += [hub.remote_path(f"datasets/{ds_folder}/{layout.shard_name('train', i)}") for i in range(want_train)]
    remotes += [hub.remote_path(str(tok[k])) for k in ("model_path", "vocab_path", "path") if tok.get(k)]
    return _Wanted(remotes, files_train, files_val)


def _pending(hub: _Hub, remotes: list[str], root: Path, verified: dict[str, list[Any]]) -> list[_Pending]:
    """The files not already in place with the Hub's content (the Hub's metadata gives the hash)."""
    from golfrun.data import layout

    infos = hub.paths_info(remotes)
    todo: list[_Pending] = []
    for remote in remotes:
        info = infos[remote]
        lfs = getattr(info, "lfs", None)  # the Hub's RepoFile: set for LFS files only
        expected, algo = (lfs.sha256, "sha256") if lfs is not None else (info.blob_id, "git-sha1")
        local = layout.local_path_for_remote(remote, root, hub.prefix)
        if not _local_sha_ok(local, expected, algo, verified):
            todo.append(_Pending(remote, local, expected, algo, int(info.size or 0)))
    return todo


def _download(ctx: StageContext, hub: _Hub, todo: list[_Pending], verified: dict[str, list[Any]]) -> list[str]:
    """Download each file, check its hash, link it into the layout; returns the mismatches."""
    bad = []
    for i, p in enumerate(todo, 1):
        ctx.log(f"download-data: {i}/{len(todo)} {p.remote} ({p.size / 1e6:.1f} MB)")
        cached = hub.fetch(p.remote)
        actual = _hash(cached, p.algo)
        if actual != p.expected:
            bad.append(f"{p.remote}: {p.algo} {actual} ≠ Hub {p.expected}")
            continue
        _link_or_copy(cached, p.local)
        st = p.local.stat()
        verified[str(p.local)] = [st.st_size, st.st_mtime_ns, p.expected]
    return bad


def _tokenizer_vocab_check(tok: Path, vocab: int) -> Check:
    """The tokenizer loads and has the variant's vocabulary: a file of the right name that is not
    a SentencePiece model (a failed download, random bytes) would only fail inside the trainer."""
    import sentencepiece as spm

    try:
        size = spm.SentencePieceProcessor(model_file=str(tok)).vocab_size()
    except (RuntimeError, OSError) as exc:
        return Check("tokenizer_vocab", f"does not load: {str(exc).splitlines()[0][:120]}", vocab, "==", False, str(tok))
    return Check("tokenizer_vocab", size, vocab, "==", size == vocab, f"{tok.name} vs the variant's VOCAB_SIZE")


def _check_layout(root: Path, variant: str, want_train: int, checks: list[Check], decision: dict[str, Any]) -> None:
    from golfrun.data import layout
    from golfrun.data.shards import check_shard

    checks.append(Check("manifest", str(layout.manifest_path(root)), "exists", "==", layout.manifest_path(root).is_file()))
    train = layout.train_files(root, variant)
    val = layout.val_files(root, variant)
    checks.append(Check("train_shards", len(train), want_train, ">=", len(train) >= want_train, str(layout.dataset_dir(root, variant))))
    checks.append(Check("val_shards", len(val), 1, ">=", len(val) >= 1, str(layout.dataset_dir(root, variant))))
    tok = layout.tokenizer_path(root, variant)
    checks.append(Check("tokenizer", str(tok), "exists", "==", tok.is_file(), "the trainer cannot score bytes without it"))
    if tok.is_file():
        checks.append(_tokenizer_vocab_check(tok, layout.variant_vocab_size(variant)))
    bad, tokens = [], {"train": 0, "val": 0}
    for split, files in (("train", train), ("val", val)):
        for f in files:
            try:
                tokens[split] += check_shard(f).num_tokens
            except DataError as exc:
                bad.append(str(exc))
    checks.append(Check("shard_headers", len(train) + len(val) - len(bad), len(train) + len(val), "==", not bad,
                        "; ".join(bad[:3]) or "magic 20240520, version 1, size = 1024 + 2·tokens for every shard"))
    decision.update(
        tokenizer_path=str(tok),
        train_shards=len(train),
        val_shards=len(val),
        train_tokens=tokens["train"],
        val_tokens=tokens["val"],
        vocab_size=decision.get("vocab_size") or layout.variant_vocab_size(variant),
    )
