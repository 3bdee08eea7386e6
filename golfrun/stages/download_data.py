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
from pathlib import Path
from typing import Any

from golfrun.errors import CampaignError, DataError
from golfrun.fileio import copy_file_atomic, now_iso, sha256_file, write_json_atomic
from golfrun.stages import common
from golfrun.stages.context import StageContext
from golfrun.stages.spec import StageSpec
from golfrun.summary import Check, Summary

SPEC = StageSpec("download-data", 1, upstream=(),
                 config_sections=("data",))

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


def _huggingface(ctx: StageContext, repo: str, root: Path, checks: list[Check], decision: dict[str, Any]) -> None:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import disable_progress_bars

    from golfrun.data import layout

    if not sys.stderr.isatty():
        disable_progress_bars()  # a log file or pipe would collect every redraw of the bars

    d = ctx.campaign.data
    variant = str(d.variant)
    want_train = int(d.train_shards)
    # Read at call time (huggingface_hub fixes its URL template at import): a mirror or a test Hub.
    endpoint = os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint)
    prefix = str(d.remote_prefix or "").strip("/")
    revision = str(d.revision or "") or None

    def remote_path(rel: str) -> str:
        return f"{prefix}/{rel}" if prefix else rel

    def fetch(remote: str) -> Path:
        parent, _, name = remote.rpartition("/")
        try:
            return Path(hf_hub_download(repo, filename=name, subfolder=parent or None, repo_type="dataset",
                                        revision=revision, endpoint=endpoint)).resolve()
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise DataError(f"hf:{repo}: could not download {remote}: {exc}") from exc

    manifest_remote = remote_path(layout.MANIFEST_NAME)
    manifest_file = fetch(manifest_remote)
    _link_or_copy(manifest_file, layout.manifest_path(root))
    manifest = layout.load_manifest(root)
    ds = layout.manifest_dataset(manifest, variant, source=f"hf:{repo}/{manifest_remote}")
    stats = ds.get("stats") or {}
    files_train, files_val = int(stats.get("files_train", 0)), int(stats.get("files_val", 0))
    if want_train > files_train:
        raise CampaignError(f"data.train_shards = {want_train}, but hf:{repo} has only {files_train} train shards for {variant}")
    tok = layout.manifest_tokenizer(manifest, str(ds.get("tokenizer_name")), source=f"hf:{repo}/{manifest_remote}")
    ds_folder = layout.dataset_dir_name(variant)
    remotes = [remote_path(f"datasets/{ds_folder}/{layout.shard_name('val', i)}") for i in range(files_val)]
    remotes += [remote_path(f"datasets/{ds_folder}/{layout.shard_name('train', i)}") for i in range(want_train)]
    remotes += [remote_path(str(tok[k])) for k in ("model_path", "vocab_path", "path") if tok.get(k)]

    try:
        infos = {i.path: i for i in api.get_paths_info(repo, remotes, repo_type="dataset", revision=revision)}
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise DataError(f"hf:{repo}: could not read file metadata: {exc}") from exc
    missing = [r for r in remotes if r not in infos]
    if missing:
        raise DataError(f"hf:{repo}: files named by the manifest are not in the repo: {missing[:5]}")

    verified = _load_verified(root)
    todo: list[tuple[str, Path, str, str, int]] = []
    for remote in remotes:
        info = infos[remote]
        lfs = getattr(info, "lfs", None)
        expected, algo = (lfs.sha256, "sha256") if lfs is not None else (info.blob_id, "git-sha1")
        local = layout.local_path_for_remote(remote, root, prefix)
        if not _local_sha_ok(local, expected, algo, verified):
            todo.append((remote, local, expected, algo, int(info.size or 0)))
    need = sum(t[4] for t in todo)
    if not _free_disk(root, need, float(d.min_free_disk_gb), checks):
        return
    bad = []
    for i, (remote, local, expected, algo, size) in enumerate(todo, 1):
        ctx.log(f"download-data: {i}/{len(todo)} {remote} ({size / 1e6:.1f} MB)")
        cached = fetch(remote)
        actual = _hash(cached, algo)
        if actual != expected:
            bad.append(f"{remote}: {algo} {actual} ≠ Hub {expected}")
            continue
        _link_or_copy(cached, local)
        st = local.stat()
        verified[str(local)] = [st.st_size, st.st_mtime_ns, expected]
    write_json_atomic(root / VERIFIED_NAME, verified)
    checks.append(Check("hub_checksums", len(remotes) - len(bad), len(remotes), "==", not bad,
                        "; ".join(bad[:3]) or f"{len(todo)} downloaded, {len(remotes) - len(todo)} already in place, all match the Hub"))
    decision.update(repo=repo, vocab_size=layout.variant_vocab_size(variant), downloaded=len(todo),
                    files_train_available=files_train, files_val=files_val)


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
