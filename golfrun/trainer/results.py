"""What a trainer job produced, seen from golfrun (DESIGN contract 1, "Out").

Two sources give the same `TrainerResult`:
- `$ARTIFACT_DIR/results.json` (schema `golfrun.trainer-results/1`), written by our `train_gpt.py`;
- the record's log lines (trainer-facts §8.1, and the naive baseline's §8.2), for a trainer that
  writes no results.json, such as an upstream record script.

`load_results(job_dir)` prefers results.json and falls back to the logs. A result is *usable* only
when it has a final score: a log cut off mid-run (a crash) is never mistaken for a finished run.
Stdlib only: golfrun's status paths import this and must stay light.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from golfrun.errors import TrainerResultError

RESULTS_SCHEMA = "golfrun.trainer-results/1"
RESULTS_FILE = "results.json"
MODES = ("train", "eval_only", "eval_only_quantized")
SOURCES = ("results.json", "log")

# Final-score labels in order of preference (the first one present is the score that counts).
TTT_LABELS = ("quantized_ttt_phased", "quantized_ttt_lora")
FINAL_LABEL_PREFERENCE = (
    *TTT_LABELS,
    "diagnostic quantized",
    "final_int8_zlib_roundtrip_exact",
    "final_int8_zlib_roundtrip",
)
TAIL_LINES = 20


@dataclass
class EvalScore:
    label: str
    val_loss: float  # nats per token
    val_bpb: float
    eval_time_ms: float | None = None

    @classmethod
    def from_dict(cls, data: Any, where: str = "eval") -> "EvalScore":
        if not isinstance(data, Mapping):
            raise TrainerResultError(f"{where}: expected an object, got {type(data).__name__}")
        return cls(
            label=_req(data, "label", str, where),
            val_loss=float(_req(data, "val_loss", (int, float), where)),
            val_bpb=float(_req(data, "val_bpb", (int, float), where)),
            eval_time_ms=_opt_float(data, "eval_time_ms", where),
        )


@dataclass
class ArtifactInfo:
    """The compressed submission artifact. A size that was not reported is None, never 0."""

    path: str | None = None
    model_bytes: int | None = None  # the quantized+compressed model file
    code_bytes: int | None = None  # code bytes as the trainer counts them
    total_bytes: int | None = None  # what the 16,000,000-byte cap applies to
    compressor: str | None = None  # "brotli", "zlib", …

    @classmethod
    def from_dict(cls, data: Any, where: str = "artifact") -> "ArtifactInfo":
        if not isinstance(data, Mapping):
            raise TrainerResultError(f"{where}: expected an object, got {type(data).__name__}")
        return cls(
            path=_opt(data, "path", str, where),
            model_bytes=_opt_int(data, "model_bytes", where),
            code_bytes=_opt_int(data, "code_bytes", where),
            total_bytes=_opt_int(data, "total_bytes", where),
            compressor=_opt(data, "compressor", str, where),
        )


@dataclass
class TrainerResult:
    run_id: str | None = None
    seed: int | None = None
    mode: str = "train"  # train | eval_only | eval_only_quantized
    steps: int | None = None
    train_time_ms: float | None = None
    stopped_early: bool = False
    tokens_per_s: float | None = None
    peak_mem_mib: float | None = None
    model_params: int | None = None
    evals: list[EvalScore] = field(default_factory=list)
    final: EvalScore | None = None
    artifact: ArtifactInfo | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    world_size: int | None = None
    device: str | None = None
    source: str = "results.json"  # results.json | log
    # keys of results.json this version does not know (e.g. the trainer's tokens_per_s_loop), kept as is
    extra: dict[str, Any] = field(default_factory=dict)

    def eval(self, label: str) -> EvalScore | None:
        """The last evaluation with this label, or None."""
        for score in reversed(self.evals):
            if score.label == label:
                return score
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {"schema": RESULTS_SCHEMA, **data, **{k: v for k, v in extra.items() if k not in data}}

    @classmethod
    def from_dict(cls, data: Any, where: str = RESULTS_FILE) -> "TrainerResult":
        """Validate and build; every error names `where` and the key."""
        if not isinstance(data, Mapping):
            raise TrainerResultError(f"{where}: expected a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if schema != RESULTS_SCHEMA:
            raise TrainerResultError(f"{where}: unknown schema {schema!r} (expected {RESULTS_SCHEMA!r})")
        mode = _opt(data, "mode", str, where) or "train"
        if mode not in MODES:
            raise TrainerResultError(f"{where}: mode {mode!r} is not one of {', '.join(MODES)}")
        source = _opt(data, "source", str, where) or "results.json"
        if source not in SOURCES:
            raise TrainerResultError(f"{where}: source {source!r} is not one of {', '.join(SOURCES)}")
        evals_raw = data.get("evals") or []
        if not isinstance(evals_raw, list):
            raise TrainerResultError(f"{where}: key 'evals' must be a list")
        final_raw = data.get("final")
        artifact_raw = data.get("artifact")
        seed = data.get("seed")
        return cls(
            run_id=None if data.get("run_id") is None else str(data["run_id"]),
            seed=None if seed is None else _as_int(seed, "seed", where),
            mode=mode,
            steps=_opt_int(data, "steps", where),
            train_time_ms=_opt_float(data, "train_time_ms", where),
            stopped_early=bool(data.get("stopped_early", False)),
            tokens_per_s=_opt_float(data, "tokens_per_s", where),
            peak_mem_mib=_opt_float(data, "peak_mem_mib", where),
            model_params=_opt_int(data, "model_params", where),
            evals=[EvalScore.from_dict(e, f"{where}: evals[{i}]") for i, e in enumerate(evals_raw)],
            final=None if final_raw is None else EvalScore.from_dict(final_raw, f"{where}: final"),
            artifact=None if artifact_raw is None else ArtifactInfo.from_dict(artifact_raw, f"{where}: artifact"),
            hyperparameters=dict(_opt(data, "hyperparameters", dict, where) or {}),
            versions=dict(_opt(data, "versions", dict, where) or {}),
            world_size=_opt_int(data, "world_size", where),
            device=_opt(data, "device", str, where),
            source=source,
            extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
        )


_KNOWN_KEYS = {"schema", *TrainerResult.__dataclass_fields__} - {"extra"}


# --------------------------------------------------------------------------- loading


def load_results(job_dir: Path | str, log_names: Sequence[str] = ()) -> TrainerResult:
    """The result of the trainer job in `job_dir`.

    `results.json` wins when present (malformed or of an unknown schema → TrainerResultError naming
    it; never silently replaced by the log). Otherwise the logs are parsed, in this order:
    `log_names` if given, else every `*.txt` in the folder (the trainer's `<RUN_ID>.txt`) and then
    `job.log`. The first log with a final score wins; none → TrainerResultError quoting the
    last lines of the most informative log.
    """
    job_dir = Path(job_dir)
    results_path = job_dir / RESULTS_FILE
    if results_path.is_file():
        return read_results_json(results_path)

    candidates = [job_dir / n for n in log_names] if log_names else _default_logs(job_dir)
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        names = ", ".join(p.name for p in candidates) or "*.txt, job.log"
        raise TrainerResultError(f"{job_dir}: no {RESULTS_FILE} and no trainer log ({names})")

    texts: dict[Path, str] = {}
    for path in existing:
        texts[path] = path.read_text(encoding="utf-8", errors="replace")
        result = parse_record_log(texts[path])
        if result.final is not None:
            if result.artifact is not None and result.artifact.path is not None:
                local = job_dir / Path(result.artifact.path).name
                if local.is_file():
                    result.artifact.path = str(local)
            return result
    # quote the longest log: the trainer's own file may be empty when it crashed at import
    best_path = max(existing, key=lambda p: len(texts[p]))
    tail = "\n".join(texts[best_path].rstrip("\n").splitlines()[-TAIL_LINES:])
    raise TrainerResultError(
        f"{job_dir}: no {RESULTS_FILE} and no final score in {best_path.name}; its last lines:\n{tail}"
    )


def read_results_json(path: Path | str) -> TrainerResult:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainerResultError(f"{path}: not readable JSON ({exc})") from exc
    try:
        return TrainerResult.from_dict(data, where=str(path))
    except (TypeError, ValueError) as exc:
        raise TrainerResultError(f"{path}: {exc}") from exc


def log_tail(path: Path | str, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines of a text file ("" if missing)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _default_logs(job_dir: Path) -> list[Path]:
    txt = sorted(job_dir.glob("*.txt"), key=lambda p: (-p.stat().st_mtime, p.name)) if job_dir.is_dir() else []
    return [*txt, job_dir / "job.log"]


# --------------------------------------------------------------------------- the log parser

_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
# Console captures put "<epoch seconds>.<ms> " in front of each line (trainer-facts §0).
_EPOCH_PREFIX = re.compile(r"^\d{9,11}(?:\.\d+)?\s")

_RE = {
    "model_params": re.compile(r"^model_params:\s*(\d+)$"),
    # record: "{step}/{it} val_loss: x val_bpb: y"
    "val": re.compile(rf"^(\d+)/(\d+) val_loss: ({_NUM}) val_bpb: ({_NUM})$"),
    # record: "{step}/{it} train_loss: x train_time: 1.2m tok/s: 123"
    "train": re.compile(rf"^(\d+)/(\d+) train_loss: ({_NUM}) train_time: ({_NUM})m tok/s: ({_NUM})$"),
    # baseline: "step:s/N val_loss:x val_bpb:y train_time:Nms step_avg:…"
    "base_val": re.compile(rf"^step:(\d+)/(\d+) val_loss:({_NUM}) val_bpb:({_NUM}) train_time:({_NUM})ms"),
    "base_train": re.compile(rf"^step:(\d+)/(\d+) train_loss:({_NUM}) train_time:({_NUM})ms"),
    # both: "stopping_early: wallclock_cap train_time: Nms step: s/N" (baseline without the spaces)
    "stop": re.compile(r"^stopping_early: wallclock_cap train_time:\s?(\d+)ms step:\s?(\d+)/(\d+)"),
    "peak": re.compile(r"^peak memory allocated: (\d+) MiB"),
    # "{label} val_loss:x val_bpb:y[ eval_time:Nms]" — diagnostics, TTT finals, baseline finals
    "score": re.compile(rf"^([A-Za-z_][\w+\-. ]*?) val_loss:({_NUM}) val_bpb:({_NUM})(?: eval_time:({_NUM})ms)?$"),
    "serialized_raw": re.compile(r"^Serialized model: (\d+) bytes"),
    "code_compressed": re.compile(r"^Code size \(compressed\): (\d+) bytes"),
    "code_base": re.compile(r"^Code size: (\d+) bytes"),
    "serialized_q": re.compile(r"^Serialized model (?:quantized|int\d+)\+(\w+): (\d+) bytes"),
    "total_q": re.compile(r"^Total submission size (?:quantized|int\d+)\+(\w+): (\d+) bytes"),
    "hparam": re.compile(r"^  ([A-Za-z_]\w*): ?(.*)$"),
    "base_seed": re.compile(r"^seed:(\d+)$"),
    "base_world": re.compile(r"^world_size:(\d+) grad_accum_steps:(\d+)"),
    "base_batch": re.compile(r"^train_batch_tokens:(\d+) "),
    "eval_only_full": re.compile(r"^eval_only:loading checkpoint from "),
    "eval_only_quant": re.compile(r"^eval_only:using quantized checkpoint from "),
}
# Lines that show TTT began: without its final line the run did not finish (a crash in TTT must
# not fall back to the quantized diagnostic as if that were the score).
_TTT_STARTED = ("ttt_lora:warming up compile", "beginning TTT eval timer", "ttt_phased:", "ttt_lora:DEBUG BYPASS")
_ARTIFACT_NAMES = {"int": "final_model.int8.ptz", "quantized": "final_model.int6.ptz"}


def strip_prefix(line: str) -> str:
    """A log line without its trailing newline and without a console capture's epoch prefix."""
    line = line.rstrip("\r\n")
    return _EPOCH_PREFIX.sub("", line, count=1)


def parse_record_log(text: str) -> TrainerResult:
    """Everything the record's (§8.1) or the naive baseline's (§8.2) log lines say.

    Pure. Never raises on odd lines: unknown lines are ignored, a missing figure stays None.
    `final` is None when the log has no final score (truncated / crashed run). Hyperparameter
    names are upper-cased, as the environment variables (and results.json) name them.
    """
    r = TrainerResult(source="log")
    hparams: dict[str, Any] = {}
    in_hparams = False
    artifact: dict[str, Any] = {}
    last_step: int | None = None
    last_train_min: float | None = None
    base_train_ms: float | None = None
    base_batch_tokens: int | None = None
    ttt_started = False
    eval_only_full = eval_only_quant = False

    for raw in text.splitlines():
        line = strip_prefix(raw)
        if in_hparams:
            m = _RE["hparam"].match(line)
            if m:
                hparams[m.group(1).upper()] = _literal(m.group(2))
                continue
            in_hparams = False
        if line == "Hyperparameters:":
            in_hparams = True
            continue
        if not line:
            continue
        if line.startswith(_TTT_STARTED):
            ttt_started = True
        if m := _RE["model_params"].match(line):
            r.model_params = int(m.group(1))
        elif m := _RE["val"].match(line):
            last_step = _max(last_step, int(m.group(1)))
        elif m := _RE["train"].match(line):
            last_step = _max(last_step, int(m.group(1)))
            last_train_min = float(m.group(4))
            r.tokens_per_s = float(m.group(5))
        elif m := _RE["base_val"].match(line):
            last_step = _max(last_step, int(m.group(1)))
            base_train_ms = float(m.group(5))
        elif m := _RE["base_train"].match(line):
            last_step = _max(last_step, int(m.group(1)))
            base_train_ms = float(m.group(4))
        elif m := _RE["stop"].match(line):
            r.stopped_early = True
            r.train_time_ms = float(m.group(1))
            last_step = _max(last_step, int(m.group(2)))
        elif m := _RE["peak"].match(line):
            r.peak_mem_mib = float(m.group(1))
        elif m := _RE["serialized_raw"].match(line):
            artifact["raw_model_bytes"] = int(m.group(1))
        elif m := _RE["code_compressed"].match(line):
            artifact["code_bytes"] = int(m.group(1))
        elif m := _RE["code_base"].match(line):
            artifact["code_bytes"] = int(m.group(1))
        elif m := _RE["serialized_q"].match(line):
            artifact["compressor"] = m.group(1)
            artifact["model_bytes"] = int(m.group(2))
            artifact["scheme"] = "int" if line.startswith("Serialized model int") else "quantized"
        elif m := _RE["total_q"].match(line):
            artifact["compressor"] = m.group(1)
            artifact["total_bytes"] = int(m.group(2))
            artifact.setdefault("scheme", "int" if line.startswith("Total submission size int") else "quantized")
        elif m := _RE["score"].match(line):
            r.evals.append(EvalScore(m.group(1), float(m.group(2)), float(m.group(3)), _float_or_none(m.group(4))))
        elif m := _RE["base_seed"].match(line):
            hparams.setdefault("SEED", int(m.group(1)))
        elif m := _RE["base_world"].match(line):
            hparams.setdefault("WORLD_SIZE", int(m.group(1)))
        elif m := _RE["base_batch"].match(line):
            base_batch_tokens = int(m.group(1))
        elif _RE["eval_only_full"].match(line):
            eval_only_full = True
        elif _RE["eval_only_quant"].match(line):
            eval_only_quant = True

    r.hyperparameters = hparams
    r.steps = last_step
    if r.train_time_ms is None:
        if base_train_ms is not None:
            r.train_time_ms = base_train_ms
        elif last_train_min is not None:
            r.train_time_ms = last_train_min * 60_000.0  # only to 0.1 min: the log has no better
    if r.tokens_per_s is None and base_batch_tokens and last_step and r.train_time_ms:
        r.tokens_per_s = base_batch_tokens * last_step / (r.train_time_ms / 1000.0)
    r.mode = "eval_only" if eval_only_full else "eval_only_quantized" if eval_only_quant else "train"
    if r.mode != "train":
        r.steps, r.tokens_per_s, r.train_time_ms = None, None, None
    r.run_id = None if hparams.get("RUN_ID") in (None, "") else str(hparams["RUN_ID"])
    r.seed = _int_or_none(hparams.get("SEED"))
    r.world_size = _int_or_none(hparams.get("WORLD_SIZE"))
    r.final = _final_score(r.evals, ttt_started)
    if {"model_bytes", "total_bytes", "code_bytes"} & artifact.keys():
        r.artifact = ArtifactInfo(
            path=_ARTIFACT_NAMES[artifact.get("scheme", "quantized")] if "compressor" in artifact else None,
            model_bytes=artifact.get("model_bytes"),
            code_bytes=artifact.get("code_bytes"),
            total_bytes=artifact.get("total_bytes"),
            compressor=artifact.get("compressor"),
        )
    return r


def _final_score(evals: Iterable[EvalScore], ttt_started: bool) -> EvalScore | None:
    by_label = {e.label: e for e in evals}
    for label in FINAL_LABEL_PREFERENCE:
        if label in by_label:
            if ttt_started and label not in TTT_LABELS:
                return None  # TTT began and never printed its score: the run did not finish
            score = by_label[label]
            if score.eval_time_ms is None and label.endswith("_exact"):
                # the baseline prints its eval time only on the rounded line
                rounded = by_label.get(label.removesuffix("_exact"))
                if rounded is not None:
                    score = EvalScore(score.label, score.val_loss, score.val_bpb, rounded.eval_time_ms)
            return score
    return None


# --------------------------------------------------------------------------- small helpers


def _literal(value: str) -> Any:
    """A hyperparameter value as printed by Python's str(): int, float, bool, None or the string."""
    value = value.strip()
    if value in ("True", "False"):
        return value == "True"
    if value == "None":
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _max(a: int | None, b: int) -> int:
    return b if a is None else max(a, b)


def _float_or_none(value: str | None) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _as_int(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TrainerResultError(f"{where}: key {key!r} must be an integer, got {value!r}")
    try:
        return int(value)
    except ValueError as exc:
        raise TrainerResultError(f"{where}: key {key!r} must be an integer, got {value!r}") from exc


def _req(data: Mapping[str, Any], key: str, types: Any, where: str) -> Any:
    if key not in data or data[key] is None:
        raise TrainerResultError(f"{where}: missing key {key!r}")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise TrainerResultError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
    return value


def _opt(data: Mapping[str, Any], key: str, types: Any, where: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, types):
        raise TrainerResultError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
    return value


def _opt_int(data: Mapping[str, Any], key: str, where: str) -> int | None:
    value = _opt(data, key, (int, float), where)
    if value is None:
        return None
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise TrainerResultError(f"{where}: key {key!r} must be an integer, got {value!r}")
    return int(value)


def _opt_float(data: Mapping[str, Any], key: str, where: str) -> float | None:
    value = _opt(data, key, (int, float), where)
    if isinstance(value, bool):
        raise TrainerResultError(f"{where}: key {key!r} must be a number, got {value!r}")
    return None if value is None else float(value)
