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
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from golfrun.errors import TrainerResultError
from golfrun.trainer.logformats import (
    ARTIFACT_LINE,
    EVAL_STARTED,
    NUM,
    ScoreLine,
    artifact_name,
    match_score,
    strip_prefix,
)

RESULTS_SCHEMA = "golfrun.trainer-results/1"
RESULTS_FILE = "results.json"
MODES = ("train", "eval_only", "eval_only_quantized")
SOURCES = ("results.json", "log")
TAIL_LINES = 20


@dataclass
class ChunkSums:
    """VAL_CHUNKS (docs/trainer.md): an evaluation's NLL (nats), scored targets and bytes summed over chunks of
    the validation documents, in stream order. Two evaluations of the same documents have the same chunks, so
    they can be compared chunk by chunk (the paired halving rule, golfrun/stages/halving.py)."""

    nll: list[float]
    targets: list[int]
    bytes: list[int]

    @classmethod
    def from_dict(cls, data: Any, where: str = "chunks") -> "ChunkSums":
        if not isinstance(data, Mapping):
            raise TrainerResultError(f"{where}: expected an object, got {type(data).__name__}")
        lists = {k: _req(data, k, list, where) for k in ("nll", "targets", "bytes")}
        if len({len(v) for v in lists.values()}) != 1:
            raise TrainerResultError(f"{where}: nll, targets and bytes must have one entry per chunk "
                                     f"(got {', '.join(f'{k} {len(v)}' for k, v in lists.items())})")
        nll = [math.nan if v is None else _number(v, f"nll[{i}]", where) for i, v in enumerate(lists["nll"])]
        counts = {k: [_as_int(v, f"{k}[{i}]", where) for i, v in enumerate(lists[k])] for k in ("targets", "bytes")}
        if any(v < 0 for c in counts.values() for v in c):
            raise TrainerResultError(f"{where}: targets and bytes must be >= 0")
        return cls(nll=nll, targets=counts["targets"], bytes=counts["bytes"])

    def bpb(self) -> list[float | None]:
        """Bits per byte of each chunk; None where the evaluation scored none of its bytes."""
        return [n / (math.log(2) * b) if b > 0 else None for n, b in zip(self.nll, self.bytes)]


@dataclass
class EvalScore:
    label: str
    val_loss: float  # nats per token
    val_bpb: float
    eval_time_ms: float | None = None
    # the TTT evaluation's own figures as the trainer wrote them (warmup_s, graphs_compiled_in_timer, …)
    ttt: dict[str, Any] | None = None
    chunks: ChunkSums | None = None  # VAL_CHUNKS: the score summed per chunk of documents

    @classmethod
    def from_dict(cls, data: Any, where: str = "eval") -> "EvalScore":
        if not isinstance(data, Mapping):
            raise TrainerResultError(f"{where}: expected an object, got {type(data).__name__}")
        return cls(
            label=_req(data, "label", str, where),
            val_loss=_score(data, "val_loss", where),
            val_bpb=_score(data, "val_bpb", where),
            eval_time_ms=_opt_float(data, "eval_time_ms", where),
            ttt=dict(data["ttt"]) if isinstance(data.get("ttt"), Mapping) else None,
            chunks=None if data.get("chunks") is None else ChunkSums.from_dict(data["chunks"], f"{where}: chunks"),
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
    log_format: str | None = None  # the logformats row of the final score, when read from a log
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
            log_format=_opt(data, "log_format", str, where),
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

    candidates = [job_dir / n for n in log_names] if log_names else trainer_logs(job_dir)
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        names = ", ".join(p.name for p in candidates) or "*.txt, job.log"
        raise TrainerResultError(f"{job_dir}: no {RESULTS_FILE} and no trainer log ({names})")

    texts: dict[Path, str] = {}
    for path in existing:
        texts[path] = path.read_text(encoding="utf-8", errors="replace")
        try:
            result = parse_record_log(texts[path])
        except TrainerResultError as exc:
            raise TrainerResultError(f"{path}: {exc}") from exc
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


def trainer_logs(job_dir: Path) -> list[Path]:
    """A job folder's logs, most telling first: the trainer's `<RUN_ID>.txt` files (newest first), then job.log."""
    txt = sorted(job_dir.glob("*.txt"), key=lambda p: (-p.stat().st_mtime, p.name)) if job_dir.is_dir() else []
    return [*txt, job_dir / "job.log"]


# --------------------------------------------------------------------------- the log parser

_NUM = NUM
# One rule per kind of non-score line; each handler records what its line says in the _LogState.
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
    "serialized_raw": re.compile(r"^Serialized model: (\d+) bytes"),
    "code_compressed": re.compile(r"^Code size \(compressed\): (\d+) bytes"),
    "code_base": re.compile(r"^Code size: (\d+) bytes"),
    "artifact": ARTIFACT_LINE,
    "base_seed": re.compile(r"^seed:(\d+)$"),
    "base_world": re.compile(r"^world_size:(\d+) grad_accum_steps:(\d+)"),
    "base_batch": re.compile(r"^train_batch_tokens:(\d+) "),
    "eval_only_full": re.compile(r"^eval_only:loading checkpoint from "),
    "eval_only_quant": re.compile(r"^eval_only:using quantized checkpoint from "),
}
_HPARAM = re.compile(r"^  ([A-Za-z_]\w*): ?(.*)$")
SCORE_QUOTE_LINES = 5


@dataclass
class _LogState:
    """What the lines read so far say; turned into a TrainerResult by _finish."""

    r: TrainerResult = field(default_factory=lambda: TrainerResult(source="log"))
    hparams: dict[str, Any] = field(default_factory=dict)
    artifact: dict[str, Any] = field(default_factory=dict)
    scores: list[ScoreLine] = field(default_factory=list)  # every score-like line, in order
    last_step: int | None = None
    last_train_min: float | None = None
    base_train_ms: float | None = None
    base_batch_tokens: int | None = None
    eval_started_at: int = -1  # index into `scores` when the last evaluation began
    mode: str = "train"

    def step(self, value: str) -> None:
        self.last_step = _max(self.last_step, int(value))


def _on_val(s: _LogState, m: re.Match[str]) -> None:
    s.step(m.group(1))


def _on_train(s: _LogState, m: re.Match[str]) -> None:
    s.step(m.group(1))
    s.last_train_min = float(m.group(4))
    s.r.tokens_per_s = float(m.group(5))


def _on_base_val(s: _LogState, m: re.Match[str]) -> None:
    s.step(m.group(1))
    s.base_train_ms = float(m.group(5))


def _on_base_train(s: _LogState, m: re.Match[str]) -> None:
    s.step(m.group(1))
    s.base_train_ms = float(m.group(4))


def _on_stop(s: _LogState, m: re.Match[str]) -> None:
    s.r.stopped_early = True
    s.r.train_time_ms = float(m.group(1))
    s.step(m.group(2))


def _on_artifact(s: _LogState, m: re.Match[str]) -> None:
    kind, scheme, compressor, size = m.groups()
    s.artifact["compressor"] = compressor
    s.artifact.setdefault("scheme", scheme)
    s.artifact["model_bytes" if kind == "Serialized model" else "total_bytes"] = int(size)


def _on_model_params(s: _LogState, m: re.Match[str]) -> None:
    s.r.model_params = int(m.group(1))


def _on_peak(s: _LogState, m: re.Match[str]) -> None:
    s.r.peak_mem_mib = float(m.group(1))


def _on_raw_model(s: _LogState, m: re.Match[str]) -> None:
    s.artifact["raw_model_bytes"] = int(m.group(1))


def _on_code(s: _LogState, m: re.Match[str]) -> None:
    s.artifact["code_bytes"] = int(m.group(1))


def _on_base_seed(s: _LogState, m: re.Match[str]) -> None:
    s.hparams.setdefault("SEED", int(m.group(1)))


def _on_base_world(s: _LogState, m: re.Match[str]) -> None:
    s.hparams.setdefault("WORLD_SIZE", int(m.group(1)))


def _on_base_batch(s: _LogState, m: re.Match[str]) -> None:
    s.base_batch_tokens = int(m.group(1))


def _on_eval_only(s: _LogState, m: re.Match[str]) -> None:
    s.mode = "eval_only"


def _on_eval_only_quantized(s: _LogState, m: re.Match[str]) -> None:
    s.mode = "eval_only_quantized"


# One row per kind of line: the first rule whose pattern matches handles it.
_RULES: tuple[tuple[str, Callable[[_LogState, re.Match[str]], None]], ...] = (
    ("model_params", _on_model_params),
    ("val", _on_val),
    ("train", _on_train),
    ("base_val", _on_base_val),
    ("base_train", _on_base_train),
    ("stop", _on_stop),
    ("peak", _on_peak),
    ("serialized_raw", _on_raw_model),
    ("code_compressed", _on_code),
    ("code_base", _on_code),
    ("artifact", _on_artifact),
    ("base_seed", _on_base_seed),
    ("base_world", _on_base_world),
    ("base_batch", _on_base_batch),
    ("eval_only_full", _on_eval_only),
    ("eval_only_quant", _on_eval_only_quantized),
)


def parse_record_log(text: str) -> TrainerResult:
    """Everything a record script's log lines say (trainer-facts §8.1, the naive baseline's §8.2 and
    the score formats of golfrun/trainer/logformats.py).

    Pure. Lines of no interest are ignored and a missing figure stays None. `final` is the LAST
    reported score (logformats role "score"), None when the log has none or an evaluation began after
    it and never reported (a truncated / crashed run). `log_format` names the final's format.
    Hyperparameter names are upper-cased, as the environment variables (and results.json) name them.
    Raises TrainerResultError when a score-like line of no known format comes after the last known
    score: it may be the real score, so no earlier one is taken in its place.
    """
    s = _LogState()
    in_hparams = False
    for raw in text.splitlines():
        line = strip_prefix(raw)
        if in_hparams:
            m = _HPARAM.match(line)
            if m:
                s.hparams[m.group(1).upper()] = _literal(m.group(2))
                continue
            in_hparams = False
        if line == "Hyperparameters:":
            in_hparams = True
        elif line:
            _read_line(s, line)
    return _finish(s)


def _read_line(s: _LogState, line: str) -> None:
    if line.startswith(EVAL_STARTED):
        s.eval_started_at = len(s.scores)
    for name, handler in _RULES:
        m = _RE[name].match(line)
        if m:
            handler(s, m)
            return
    score = match_score(line)
    if score is not None:
        s.scores.append(score)


def _finish(s: _LogState) -> TrainerResult:
    r, hparams = s.r, s.hparams
    r.hyperparameters = hparams
    r.steps = s.last_step
    if r.train_time_ms is None:
        if s.base_train_ms is not None:
            r.train_time_ms = s.base_train_ms
        elif s.last_train_min is not None:
            r.train_time_ms = s.last_train_min * 60_000.0  # only to 0.1 min: the log has no better
    if r.tokens_per_s is None and s.base_batch_tokens and s.last_step and r.train_time_ms:
        r.tokens_per_s = s.base_batch_tokens * s.last_step / (r.train_time_ms / 1000.0)
    r.mode = s.mode
    if r.mode != "train":
        r.steps, r.tokens_per_s, r.train_time_ms = None, None, None
    r.run_id = None if hparams.get("RUN_ID") in (None, "") else str(hparams["RUN_ID"])
    r.seed = _int_or_none(hparams.get("SEED"))
    r.world_size = _int_or_none(hparams.get("WORLD_SIZE"))
    r.evals = [EvalScore(x.label, x.val_loss, x.val_bpb, x.eval_time_ms) for x in s.scores if x.format is not None]
    r.final, r.log_format = _final_score(s.scores, s.eval_started_at)
    r.artifact = _artifact(s.artifact)
    return r


def _final_score(scores: list[ScoreLine], eval_started_at: int) -> tuple[EvalScore | None, str | None]:
    """The last reported score, with the eval time of its rounded twin when the exact line has none."""
    last = max((i for i, x in enumerate(scores) if x.format is not None and x.format.role == "score"), default=-1)
    unknown = [x for x in scores[last + 1:] if x.format is None]
    if unknown:
        quoted = "\n".join(x.text for x in scores[-SCORE_QUOTE_LINES:])
        raise TrainerResultError(
            f"unknown final-score format {unknown[-1].label!r} (golfrun/trainer/logformats.py lists the known "
            f"ones); the log's last score-like lines:\n{quoted}")
    if last < 0 or eval_started_at > last:
        return None, None  # no score, or an evaluation began after it and never reported: not finished
    score = scores[last]
    eval_ms = score.eval_time_ms
    if eval_ms is None and score.label.endswith("_exact"):
        # the baseline and the sliding-window scripts print the eval time only on the rounded line
        twin = score.label.removesuffix("_exact")
        eval_ms = next((x.eval_time_ms for x in reversed(scores[:last]) if x.label == twin), None)
    assert score.format is not None
    return EvalScore(score.label, score.val_loss, score.val_bpb, eval_ms), score.format.name


def _artifact(found: Mapping[str, Any]) -> ArtifactInfo | None:
    if not {"model_bytes", "total_bytes", "code_bytes"} & found.keys():
        return None
    return ArtifactInfo(
        path=artifact_name(found["scheme"]) if "compressor" in found else None,
        model_bytes=found.get("model_bytes"),
        code_bytes=found.get("code_bytes"),
        total_bytes=found.get("total_bytes"),
        compressor=found.get("compressor"),
    )


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


def _number(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TrainerResultError(f"{where}: key {key!r} must be a number, got {value!r}")
    return float(value)


def _req(data: Mapping[str, Any], key: str, types: Any, where: str) -> Any:
    if key not in data or data[key] is None:
        raise TrainerResultError(f"{where}: missing key {key!r}")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise TrainerResultError(f"{where}: key {key!r} has the wrong type ({type(value).__name__})")
    return value


def _score(data: Mapping[str, Any], key: str, where: str) -> float:
    """A score of an evaluation. The trainer writes a non-finite score (a diverged run) as null, since
    JSON has no NaN: a present null is read back as NaN, so the check on it fails as "not a number"."""
    if key in data and data[key] is None:
        return math.nan
    return float(_req(data, key, (int, float), where))


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
