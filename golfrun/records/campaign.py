"""The campaign file `golfrun init --from-record PATH` writes (pure rendering of a RecordFolder).

Every value comes from the folder. A key that cannot be inferred is written as a string starting
with UNRESOLVED and a comment saying why: the campaign loader rejects it (naming the key), so the
campaign never runs on a guess.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

from golfrun.records.folder import RecordFolder

UNRESOLVED = "UNRESOLVED"
# Where each variant's export lives and its full train set (shared/reference/submission-format.md §4).
DATA_REPOS = {"sp1024": "willdepueoai/parameter-golf", "byte260": "willdepueoai/parameter-golf",
              "sp4096": "kevclark/parameter-golf", "sp8192": "kevclark/parameter-golf"}
FULL_TRAIN_SHARDS = {"sp1024": 80, "sp4096": 143, "sp8192": 128, "byte260": 476}
_KNOWN_VARIANT = re.compile(r"sp\d+|byte260")


def campaign_name(rec: RecordFolder) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", rec.path.name).strip("-")
    return name or "record"


def _toml(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _key(lines: list[str], rec: RecordFolder, dotted: str, key: str, value: object, comment: str = "") -> None:
    """One `key = value` line, or its UNRESOLVED marker when the folder did not show it."""
    why = rec.unresolved.get(dotted)
    if why is not None:
        lines.append(f"# {UNRESOLVED} {dotted}: {why}")
        lines.append(f"{key} = {_toml(f'{UNRESOLVED}: {why}')}")
        return
    lines.append(f"{key} = {_toml(value)}" + (f"  # {comment}" if comment else ""))


def _data_section(rec: RecordFolder) -> list[str]:
    if rec.variant is not None and not _KNOWN_VARIANT.fullmatch(rec.variant):
        rec.unresolved["data.variant"] = (f"the logs name the variant {rec.variant!r}, which golfrun's downloader "
                                          "does not know (sp<V> or byte260); download it yourself and set data.dir")
    if rec.variant in DATA_REPOS:
        source, src_note = f"hf:{DATA_REPOS[rec.variant]}", "the repository that publishes this variant"
    else:
        rec.unresolved.setdefault("data.source", "no known repository publishes this data variant" if rec.variant
                                  else "follows data.variant, which the folder does not show")
        source, src_note = "", ""
    if rec.train_shards is not None:
        shards, note = rec.train_shards, "as the logs print train_shards"
    elif rec.variant in FULL_TRAIN_SHARDS:
        shards, note = FULL_TRAIN_SHARDS[rec.variant], "the variant's full train set; the logs print no count"
    else:
        rec.unresolved.setdefault("data.train_shards", "the logs print no train_shards count")
        shards, note = 0, ""
    lines = ["", "[data]"]
    _key(lines, rec, "data.source", "source", source, src_note)
    _key(lines, rec, "data.variant", "variant", rec.variant or "", "from the logs")
    _key(lines, rec, "data.train_shards", "train_shards", shards, note)
    return lines


def _reference_section(rec: RecordFolder) -> list[str]:
    runs = rec.runs
    finals = [r.result.final for r in runs]
    name = str(rec.submission.get("name") or rec.path.name)
    lines = ["", "[reference]", f"name = {_toml(name)}", f"seeds = {_toml([r.seed for r in runs])}",
             f"val_loss = {_toml([f.val_loss for f in finals if f])}  # from the logs",
             f"val_bpb = {_toml([f.val_bpb for f in finals if f])}"]
    sizes = [r.result.artifact.total_bytes if r.result.artifact else None for r in runs]
    if all(s is not None for s in sizes):
        lines.append(f"artifact_bytes = {_toml(sizes)}")
    else:
        lines.append("# artifact_bytes: not every log prints its total submission size")
    return lines


def render_campaign(rec: RecordFolder, out_dir: Path, today: str | None = None) -> str:
    """The campaign TOML for `rec`, its trainer path relative to `out_dir` (the file's folder)."""
    today = today or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    trainer = os.path.relpath(rec.trainer, Path(out_dir).resolve())
    data = _data_section(rec)  # first: it may add unresolved keys the header lists
    formats = sorted({r.result.log_format or "?" for r in rec.runs})
    head = [f"# Campaign from the records folder {rec.path.name} (golfrun init --from-record, {today}).",
            f"# Logs read: {', '.join(f'{r.log.relative_to(rec.path)} (seed {r.seed})' for r in rec.runs)}; "
            f"score format: {', '.join(formats)}."]
    head += [f"# logs vs submission.json: {d}" for d in rec.differences] or ["# logs and submission.json agree."]
    head += [f"# not read: {u}" for u in rec.unreadable] + [f"# note: {n}" for n in rec.notes]
    if rec.unresolved:
        head.append(f"# {len(rec.unresolved)} key(s) marked {UNRESOLVED} below could not be inferred; "
                    "the campaign does not load until you set them.")
    lines = head + ["", f"name = {_toml(campaign_name(rec))}", f"trainer = {_toml(trainer)}  # the record's own script"]
    lines += ["", "[trainer_env]  # the README's run command"]
    if "trainer_env" in rec.unresolved:
        lines.append(f"# {UNRESOLVED} trainer_env: {rec.unresolved['trainer_env']}")
    lines += [f"{k} = {_toml(v)}" for k, v in sorted(rec.env.items())]
    lines += ["", "[backend.local]"]
    _key(lines, rec, "backend.local.nproc_per_node", "nproc_per_node", rec.nproc or 1, "the README's torchrun")
    if rec.nproc is not None and rec.nproc > 1:
        lines += ["", "[verify_pod]", f"gpu_count = {rec.nproc}"]
    lines += data + _reference_section(rec)
    lines += ["", "[gate_a]", f"seed = {rec.runs[0].seed}"]
    return "\n".join(lines) + "\n"
