"""One records folder, read: per-seed results from its logs, checked against submission.json, the
README's run command and the data variant. Pure reading; nothing here guesses: a figure the folder
does not show stays None and `RecordFolder.unresolved` says why.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golfrun.errors import CampaignError, TrainerResultError
from golfrun.trainer.results import TrainerResult, parse_record_log

# Per-run environment the records' loops set themselves; never part of the campaign's trainer_env.
PER_RUN_ENV = {"SEED", "RUN_ID"}
# Data paths older scripts read instead of DATA_DIR (the naive baseline's DATA_PATH, TOKENIZER_PATH).
RELATIVE_DATA_ENV = {"DATA_PATH", "TOKENIZER_PATH"}
LOG_GLOBS = ("train_seed*.log", "train*.log", "logs/*.txt", "logs/*.log", "*.log", "*.txt")
NOT_LOGS = {"requirements.txt", "README.md"}
_SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)|^train(\d+)$")
_DATASET = re.compile(r"fineweb10B_([A-Za-z0-9_]+)")
_TOKENIZER = re.compile(r"fineweb_(\d+)_bpe\.model")
_LAUNCH = re.compile(r"(?:torchrun|python3?)\b[^\n]*?\btrain_gpt\.py")
_NPROC = re.compile(r"--nproc[_-]per[_-]node[= ](\d+)")
_ENV_WORD = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$", re.S)
TOLERANCE = 1e-8  # a log's score and submission.json's agree when within this (both print 8 decimals)


@dataclass
class SeedRun:
    seed: int
    log: Path
    result: TrainerResult


@dataclass
class RecordFolder:
    path: Path
    trainer: Path
    submission: dict[str, Any]
    runs: list[SeedRun]
    env: dict[str, str] = field(default_factory=dict)  # from the README's run command
    nproc: int | None = None
    variant: str | None = None
    train_shards: int | None = None
    differences: list[str] = field(default_factory=list)  # logs against submission.json
    unreadable: list[str] = field(default_factory=list)  # logs that gave no score, and why
    unresolved: dict[str, str] = field(default_factory=dict)  # campaign key → why it is not inferred
    notes: list[str] = field(default_factory=list)


def read_record_folder(path: Path | str) -> RecordFolder:
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise CampaignError(f"--from-record {path}: not a folder")
    trainer = folder / "train_gpt.py"
    if not trainer.is_file():
        raise CampaignError(f"--from-record {folder}: no train_gpt.py (a records folder holds the script it ran)")
    rec = RecordFolder(folder, trainer, _submission(folder), [])
    texts = _read_logs(rec)
    if not rec.runs:
        raise CampaignError(f"--from-record {folder}: no log with a final score "
                            f"({'; '.join(rec.unreadable) or 'no *.log / logs/*.txt at all'})")
    rec.runs.sort(key=lambda r: _run_order(rec.submission, r.seed))
    rec.differences = compare_with_submission(rec.runs, rec.submission)
    _read_run_command(rec, folder / "README.md")
    _read_variant(rec, texts)
    return rec


def _submission(folder: Path) -> dict[str, Any]:
    path = folder / "submission.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CampaignError(f"{path}: not readable JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


def log_files(folder: Path) -> list[Path]:
    seen: list[Path] = []
    for pattern in LOG_GLOBS:
        for p in sorted(folder.glob(pattern)):
            if p.is_file() and p.name not in NOT_LOGS and p not in seen:
                seen.append(p)
    return seen


def _read_logs(rec: RecordFolder) -> list[str]:
    texts = []
    for log in log_files(rec.path):
        text = log.read_text(encoding="utf-8", errors="replace")
        try:
            result = parse_record_log(text)
        except TrainerResultError as exc:
            rec.unreadable.append(f"{log.name}: {str(exc).splitlines()[0]}")
            continue
        if result.final is None:
            rec.unreadable.append(f"{log.name}: no final score")
            continue
        texts.append(text)
        seed = result.seed if result.seed is not None else _seed_from_name(log)
        if seed is None:
            rec.unreadable.append(f"{log.name}: the log names no seed (no SEED / seed: line, no seed in the file name)")
            continue
        if any(r.seed == seed for r in rec.runs):
            rec.notes.append(f"{log.name}: a second log of seed {seed}; the first one is used")
            continue
        rec.runs.append(SeedRun(seed, log, result))
    return texts


def _run_order(submission: dict[str, Any], seed: int) -> tuple[int, int]:
    """submission.json's `seeds` order (the run order records list), then the others by seed."""
    listed = submission.get("seeds")
    order = [s for s in listed if isinstance(s, int)] if isinstance(listed, list) else []
    return (order.index(seed), 0) if seed in order else (len(order), seed)


def _seed_from_name(log: Path) -> int | None:
    m = _SEED_IN_NAME.search(log.stem)
    return None if m is None else int(m.group(1) or m.group(2))


def compare_with_submission(runs: list[SeedRun], submission: dict[str, Any]) -> list[str]:
    """Each difference between the logs' per-seed figures and submission.json's, in words."""
    per_seed = submission.get("seed_results")
    out: list[str] = []
    if not isinstance(per_seed, dict):
        if submission:
            out.append("submission.json has no seed_results; only its mean val_bpb is compared")
        mean = submission.get("val_bpb")
        if isinstance(mean, (int, float)) and runs:
            got = sum(r.result.final.val_bpb for r in runs if r.result.final) / len(runs)
            if abs(got - mean) > 5e-5:
                out.append(f"mean val_bpb: logs {got:.8f}, submission.json {mean:.8f}")
        return out
    logged = {r.seed: r for r in runs}
    for key in sorted(set(per_seed) - {str(s) for s in logged}):
        out.append(f"seed {key}: in submission.json, but no log of it")
    for seed, run in sorted(logged.items()):
        entry = per_seed.get(str(seed))
        if not isinstance(entry, dict):
            out.append(f"seed {seed}: a log, but not in submission.json's seed_results")
            continue
        final, art = run.result.final, run.result.artifact
        logs = {"val_bpb": final.val_bpb if final else None, "val_loss": final.val_loss if final else None,
                "artifact_bytes": art.total_bytes if art else None}
        for key, value in logs.items():
            claimed = entry.get(key)
            if value is None or not isinstance(claimed, (int, float)):
                continue
            if abs(value - claimed) > (0 if key == "artifact_bytes" else TOLERANCE):
                out.append(f"seed {seed} {key}: log {value} ({run.log.name}), submission.json {claimed}")
    return out


def _read_run_command(rec: RecordFolder, readme: Path) -> None:
    """The trainer environment and GPU count of the README's launch line (the last one that runs
    train_gpt.py with torchrun or python, line continuations joined)."""
    text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    joined = re.sub(r"\\\s*\n\s*", " ", text)
    launches = [m for m in _LAUNCH.finditer(joined)]
    if not launches:
        why = "README.md has no torchrun/python train_gpt.py command" if text else "the folder has no README.md"
        rec.unresolved["trainer_env"] = why + "; add the record's environment by hand"
        rec.unresolved["backend.local.nproc_per_node"] = why + "; set the GPU count the record used"
        return
    launch = launches[-1]
    line_start = joined.rfind("\n", 0, launch.start()) + 1
    line_end = joined.find("\n", launch.end())
    line = joined[line_start:launch.end()]
    env = _env_words(line, rec)
    for m in re.finditer(r"(?m)^\s*export\s+([A-Z_][A-Z0-9_]*)=(\S+)", joined[:line_start]):
        env.setdefault(m.group(1), m.group(2).strip("\"'"))
    rec.env = {k: v for k, v in env.items() if k not in PER_RUN_ENV}
    for key in sorted(k for k, v in rec.env.items() if k in RELATIVE_DATA_ENV and not v.startswith("/")):
        rec.notes.append(f"README: {key}={rec.env[key]} is relative to the folder the record ran in; golfrun passes "
                         f"DATA_DIR (the downloaded data, data.dir) — point {key} into it if the script reads {key}")
    nproc = _NPROC.search(joined[line_start:line_end if line_end > 0 else None])
    if nproc:
        rec.nproc = int(nproc.group(1))
    elif "torchrun" in line:
        rec.unresolved["backend.local.nproc_per_node"] = f"the README's torchrun line names no --nproc_per_node: {line.strip()!r}"
    else:
        rec.nproc = 1


def _env_words(line: str, rec: RecordFolder) -> dict[str, str]:
    try:
        words = shlex.split(line, comments=False)
    except ValueError:
        words = line.split()
    env: dict[str, str] = {}
    for word in words:
        m = _ENV_WORD.match(word)
        if not m:
            continue
        key, value = m.groups()
        if "$" in value and key not in PER_RUN_ENV:
            rec.notes.append(f"README: {key}={value} refers to a shell variable; left out of trainer_env")
            continue
        env[key] = value
    return env


def _read_variant(rec: RecordFolder, texts: list[str]) -> None:
    """The data variant the logs name: a dataset folder fineweb10B_<variant>, else the tokenizer
    file fineweb_<V>_bpe.model, else VOCAB_SIZE; the logs' train_shards count when they print it."""
    joined = "\n".join(texts) + "\n" + json.dumps(rec.env)
    found = {m.group(1) for m in _DATASET.finditer(joined)}
    if not found:
        found = {f"sp{m.group(1)}" for m in _TOKENIZER.finditer(joined)}
    if not found:
        vocab = {r.result.hyperparameters.get("VOCAB_SIZE") for r in rec.runs} - {None}
        found = {f"sp{v}" for v in vocab if isinstance(v, int)}
    if len(found) == 1:
        rec.variant = found.pop()
    elif found:
        rec.unresolved["data.variant"] = f"the logs name several datasets ({', '.join(sorted(found))}); choose one"
    else:
        rec.unresolved["data.variant"] = ("no log names a dataset (fineweb10B_<variant>), a tokenizer "
                                          "(fineweb_<V>_bpe.model) or VOCAB_SIZE; set the variant the record used")
    shards = {int(m.group(1)) for m in re.finditer(r"train_shards:\s?(\d+)", joined)}
    if len(shards) == 1:
        rec.train_shards = shards.pop()
