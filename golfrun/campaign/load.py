"""Campaign TOML (a file or a preset) + `--set` overrides → a validated, frozen `Campaign`.

Rules (docs/campaign.md says the same for users):
- `spec` is a path to a TOML file, or a preset name (`tiny`, `pr1610`); None means `tiny`. An
  existing file wins over a preset of the same name.
- Every key is checked: an unknown key is an error naming the file, the dotted key and the valid
  keys of its table; a wrong type names the key, the expected type and the value.
- Relative paths (`trainer`, `data.dir`) resolve against the campaign file's folder; for presets,
  against the repository root (the folder holding the `golfrun` package), so a preset's trainer is
  the repository's `train_gpt.py`. Relative paths given with `--set` resolve against the current
  directory.
- `--set a.b=value`: the value is TOML (`0.01`, `true`, `[0, 1]`, `"text"`). For string keys (and
  entries of environment tables) the value is taken literally unless it is a quoted TOML string, so
  `--set name=exp1` and `--set trainer_env.NUM_LAYERS=8` work without quotes. A key inside a table
  of free keys is set with one more component: `--set trainer_env.SEED_X=3`.
- Environment tables (`trainer_env`, `gate_a.env`, variants' `env`, `backend.runpod.env`) are str →
  str; integers, floats and booleans are turned into strings (true → "1", false → "0"). A
  secret-looking name (TOKEN, KEY, SECRET, PASSWORD …) with a value is refused: campaign files are
  copied into runs/, so secrets come from the environment (`backend.runpod.forward_env`).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from golfrun.campaign import schema
from golfrun.errors import CampaignError
from golfrun.secrets import is_secret_name
from golfrun.trainer.env_names import declared_env

DEFAULT_PRESET = "tiny"
# The ablation's baseline jobs (golfrun/stages/ablation.py): a variant may not take their names.
RESERVED_VARIANT_NAMES = ("baseline", "baseline-quantized")
# The repository root: the folder holding the golfrun package (and, in a checkout, train_gpt.py).
REPO_ROOT = Path(__file__).resolve().parents[2]
_UNION_TYPES = (typing.Union, types.UnionType)


@dataclass(frozen=True)
class Campaign(schema.CampaignFields):
    """A resolved campaign. Attributes mirror the TOML tables (`campaign.gate_a.bpb_tolerance`)."""

    source: str = field(default="", compare=False, metadata={"internal": True})  # file path or "preset:<name>"

    def to_dict(self) -> dict[str, Any]:
        """TOML-compatible plain data (paths as strings), without `source`."""
        return _to_plain(self)

    def to_toml(self) -> str:
        """The campaign as a TOML document that `load_campaign` reads back to an equal Campaign."""
        return _emit_toml(self.to_dict(), header=f"resolved campaign {self.name!r} (from {self.source or 'code'})")

    def section(self, name: str) -> dict[str, Any]:
        """A table as plain data, for fingerprints: "gate_a", "backend.slurm", or a root key ("trainer")."""
        value: Any = self.to_dict()
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                raise CampaignError(f"no campaign section {name!r}; sections: {', '.join(self.to_dict())}")
            value = value[part]
        return value if isinstance(value, dict) else {name: value}

    def variant(self, name: str) -> schema.Variant:
        for v in self.ablation.variants:
            if v.name == name:
                return v
        raise CampaignError(f"campaign {self.name!r} has no ablation variant {name!r}; "
                            f"variants: {', '.join(v.name for v in self.ablation.variants) or '(none)'}")

    def variant_mode(self, variant: schema.Variant) -> str:
        """The mode a variant runs in: its own, else ablation.mode."""
        return variant.mode or self.ablation.mode

    def data_dir(self, campaign_dir: Path) -> Path:
        """Where the dataset lives: data.dir, or <runs>/<campaign>/data when that is empty."""
        return Path(self.data.dir) if self.data.dir else Path(campaign_dir) / "data"


# ---------------------------------------------------------------------------------------------
# presets


def preset_names() -> list[str]:
    folder = resources.files("golfrun.campaign") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def preset_text(name: str) -> str:
    """The preset's TOML, as `golfrun init --preset NAME` writes it."""
    if name not in preset_names():
        raise CampaignError(f"unknown preset {name!r}; presets: {', '.join(preset_names())}")
    return (resources.files("golfrun.campaign") / "presets" / f"{name}.toml").read_text(encoding="utf-8")


def preset_text_for(name: str, out_dir: Path) -> str:
    """The preset's TOML for a file written into `out_dir`: its trainer path rewritten so that it
    still names the repository's trainer from there (relative paths are the file's folder's)."""
    text = preset_text(name)
    trainer = REPO_ROOT / "train_gpt.py"
    rel = os.path.relpath(trainer, Path(out_dir).resolve())
    return re.sub(r'(?m)^trainer = "train_gpt.py"', f"trainer = {json.dumps(rel)}", text, count=1)


# ---------------------------------------------------------------------------------------------
# loading


def load_campaign(spec: str | Path | None, overrides: Sequence[str] = ()) -> Campaign:
    """Load a campaign file or preset, apply `--set` overrides, validate, resolve paths."""
    spec = DEFAULT_PRESET if spec is None else str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        source = str(path)
        base_dir = path.resolve().parent
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark from a Windows editor is fine
        except (OSError, UnicodeDecodeError) as exc:
            raise CampaignError(f"{source}: cannot read campaign file ({exc})") from exc
    elif spec in preset_names():
        source, base_dir, text = f"preset:{spec}", REPO_ROOT, preset_text(spec)
    elif spec.endswith(".toml") or "/" in spec or path.exists():
        raise CampaignError(f"{spec}: campaign file not found (or not a file)")
    else:
        raise CampaignError(f"{spec!r} is neither a campaign file nor a preset; presets: {', '.join(preset_names())}")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{source}: invalid TOML ({exc})") from exc
    for text_override in overrides:
        _apply_override(raw, text_override)
    return build_campaign(raw, source=source, base_dir=base_dir)


def check_runnable(c: Campaign) -> None:
    """What a campaign needs before any command plans or runs it (the CLI checks it on load; the
    pure loader does not, so a partial file can still be read and printed): the trainer exists and
    reads every variable the campaign sets in its name families (golfrun/trainer/env_names.py: a
    typo would cost a whole run with a default instead), and the ablation has variants."""
    source = c.source or c.name
    if not c.ablation.variants:
        raise CampaignError(f"{source}: ablation.variants is empty: give at least one [[ablation.variants]] "
                            f"(gate-b confirms the variant the ablation promotes)")
    if c.data.dir and Path(c.data.dir).exists() and not Path(c.data.dir).is_dir():
        raise CampaignError(f"{source}: data.dir: {c.data.dir} is a file, not a folder")
    trainer = Path(c.trainer)
    if not trainer.is_file():
        raise CampaignError(f"{source}: trainer: {trainer} does not exist (or is not a file); "
                            f"set trainer to the script to run, relative to the campaign file's folder")
    try:
        declared = declared_env(trainer.read_text(encoding="utf-8", errors="replace"))
    except OSError as exc:
        raise CampaignError(f"{source}: trainer: cannot read {trainer} ({exc})") from exc
    if declared is None:
        return
    tables = [("trainer_env", c.trainer_env), ("gate_a.env", c.gate_a.env)]
    tables += [(f"ablation.variants[{i}].env", v.env) for i, v in enumerate(c.ablation.variants)]
    for where, env in tables:
        for name in env:
            problem = declared.unknown(name)
            if problem:
                raise CampaignError(f"{source}: {where}.{name}: {problem}")


def build_campaign(raw: Mapping[str, Any], *, source: str, base_dir: Path) -> Campaign:
    """Validate plain TOML data into a Campaign (`source` names it in errors)."""
    values = _build_fields(schema.CampaignFields, raw, "", source, base_dir)
    campaign = Campaign(**values, source=source)
    _check_consistency(campaign, source)
    return campaign


def _apply_override(raw: dict[str, Any], text: str) -> None:
    where = f"--set {text}"
    if "=" not in text:
        raise CampaignError(f"{where}: expected section.key=value")
    dotted, value_text = text.split("=", 1)
    dotted = dotted.strip()
    parts = dotted.split(".")
    if not dotted or any(not p for p in parts):
        raise CampaignError(f"{where}: expected section.key=value, got key {dotted!r}")
    cls: type = schema.CampaignFields
    hints = _hints(cls)
    for i, part in enumerate(parts):
        names = [f.name for f in fields(cls) if not f.metadata.get("internal")]
        if part not in names:
            table = ".".join(parts[:i])
            raise CampaignError(f"{where}: unknown key {dotted!r}; {_valid_keys_text(cls, table, part)}")
        f = next(f for f in fields(cls) if f.name == part)
        tp = hints[part]
        last = i == len(parts) - 1
        if f.metadata.get("section"):
            if last:
                first = fields(tp)[0].name
                raise CampaignError(f"{where}: {dotted!r} is a table; set one of its keys, e.g. {dotted}.{first}=…")
            cls, hints = tp, _hints(tp)
            continue
        if last:
            value = _parse_value(value_text, tp, where)
            _convert(tp, value, f.metadata, where, dotted, Path.cwd())  # errors name the override
            if f.metadata.get("path") and isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                value = str((Path.cwd() / value).resolve())
            _set_in(raw, parts, value, where)
            return
        if typing.get_origin(tp) is dict and i == len(parts) - 2:
            entry = parts[-1]
            value_type = typing.get_args(tp)[1]
            value = _parse_value(value_text, value_type, where)
            table = dict(_get_in(raw, parts[:-1], where) or {})
            table[entry] = value
            _convert(tp, table, f.metadata, where, ".".join(parts[:-1]), Path.cwd())
            _set_in(raw, parts, value, where)
            return
        raise CampaignError(f"{where}: {'.'.join(parts[: i + 1])!r} is not a table; cannot set {dotted!r}")


def _parse_value(text: str, tp: Any, where: str) -> Any:
    stripped = text.strip()
    # String keys take the text literally unless it is a quoted TOML string; a Slurm time entry
    # (str | int) reads digits as minutes and anything else as text.
    literal = tp in (str, Path) or (tp == (str | int) and not stripped.isdigit())
    try:
        doc = tomllib.loads(f"v = {stripped}")
    except tomllib.TOMLDecodeError as exc:
        if literal:
            return text
        raise CampaignError(f"{where}: {stripped!r} is not a TOML value ({exc}); "
                            f"strings need quotes, lists brackets: 'key=\"text\"', 'key=[1, 2]'") from exc
    if set(doc) != {"v"}:
        if literal:
            return text
        raise CampaignError(f"{where}: {stripped!r} is not a single TOML value")
    value = doc["v"]
    if literal and not isinstance(value, str):
        return text
    return value


def _get_in(raw: dict[str, Any], parts: list[str], where: str) -> Any:
    node: Any = raw
    for part in parts:
        if not isinstance(node, dict):
            raise CampaignError(f"{where}: the campaign's {'.'.join(parts)!r} is not a table")
        node = node.get(part)
        if node is None:
            return None
    return node


def _set_in(raw: dict[str, Any], parts: list[str], value: Any, where: str) -> None:
    node = raw
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise CampaignError(f"{where}: the campaign's {'.'.join(parts[: i + 1])!r} is not a table")
        node = nxt
    node[parts[-1]] = value


# ---------------------------------------------------------------------------------------------
# validation of one table


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(schema))


def _valid_keys_text(cls: type, table: str, wrong: str) -> str:
    names = [f.name for f in fields(cls) if not f.metadata.get("internal")]
    where = f"[{table}]" if table else "the top level"
    close = difflib.get_close_matches(wrong, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"valid keys in {where}: {', '.join(names)}{hint}"


def _build_fields(cls: type, data: Any, prefix: str, source: str, base_dir: Path) -> dict[str, Any]:
    table = prefix[:-1]
    if not isinstance(data, Mapping):
        raise CampaignError(f"{source}: {table or 'campaign'}: expected a table, got {_show(data)}")
    names = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    for k in data:
        if k not in names:
            raise CampaignError(f"{source}: unknown key {prefix + k!r}; {_valid_keys_text(cls, table, k)}")
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for name, f in names.items():
        if name not in data:
            continue
        tp = hints[name]
        if f.metadata.get("section"):
            out[name] = tp(**_build_fields(tp, data[name], f"{prefix}{name}.", source, base_dir))
        else:
            out[name] = _convert(tp, data[name], f.metadata, source, prefix + name, base_dir)
    return out


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path (string)"}


def _describe(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return _TYPE_NAMES[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        inner = args[0]
        return "a list of tables" if is_dataclass(inner) else f"a list of {_describe(inner).split(' ', 1)[1]}s"
    if origin is dict:
        value_types = typing.get_args(args[1]) or (args[1],)
        return "a table of " + " or ".join(_describe(a).split(" ", 1)[1] + "s" for a in value_types)
    if origin in _UNION_TYPES:
        return " or ".join(_describe(a) for a in args)
    return str(tp)


def _show(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "float", str: "string", list: "list", dict: "table"}.get(type(value), type(value).__name__)
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


def _wrong(where: str, tp: Any, value: Any) -> CampaignError:
    return CampaignError(f"{where}: expected {_describe(tp)}, got {_show(value)}")


def _convert(tp: Any, value: Any, meta: Mapping[str, Any], source: str, dotted: str, base_dir: Path) -> Any:
    """Check `value` against the type and rules of one key; return the typed value. Errors read
    "<source>: <dotted key>: …"."""
    where = f"{source}: {dotted}"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong(where, tp, value)
        out: Any = value
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(where, tp, value)
        out = value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong(where, tp, value)
        out = float(value)
        if not math.isfinite(out):
            raise CampaignError(f"{where}: {value!r} is not a finite number")
    elif tp is str:
        if not isinstance(value, str):
            raise _wrong(where, tp, value)
        out = value
        if meta.get("path") and value and not Path(value).expanduser().is_absolute():
            out = str((base_dir / Path(value).expanduser()).resolve())
        elif meta.get("path") and value:
            out = str(Path(value).expanduser())
    elif tp is Path:
        if not isinstance(value, (str, Path)) or not str(value):
            raise _wrong(where, tp, value)
        p = Path(value).expanduser()
        out = p if p.is_absolute() else (base_dir / p).resolve()
    elif origin is list and args and is_dataclass(args[0]):
        if not isinstance(value, list):
            raise _wrong(where, tp, value)
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise CampaignError(f"{where}[{i}]: expected a table, got {_show(item)}")
            out.append(args[0](**_build_fields(args[0], item, f"{dotted}[{i}].", source, base_dir)))
    elif origin is list:
        if not isinstance(value, list):
            raise _wrong(where, tp, value)
        out = [_convert(args[0], item, {}, source, f"{dotted}[{i}]", base_dir) for i, item in enumerate(value)]
    elif origin is dict:
        if not isinstance(value, Mapping):
            raise _wrong(where, tp, value)
        value_type = args[1]
        out = {}
        for k, v in value.items():
            if value_type is str:  # an environment table
                if isinstance(v, bool):
                    v = "1" if v else "0"
                elif isinstance(v, (int, float)):
                    v = str(v)
                if is_secret_name(k) and v != "":
                    raise CampaignError(
                        f"{where}.{k}: looks like a secret; campaign files are copied into runs/ and "
                        f"summaries, so pass it through the environment instead"
                        + (" (backend.runpod.forward_env)" if "runpod" in where else "")
                    )
            out[k] = _convert(value_type, v, {}, source, f"{dotted}.{k}", base_dir)
    elif origin in _UNION_TYPES:
        for alt in args:
            try:
                out = _convert(alt, value, {}, source, dotted, base_dir)
                break
            except CampaignError:
                continue
        else:
            raise _wrong(where, tp, value)
    else:  # pragma: no cover - a schema declaration error
        raise TypeError(f"unsupported schema type {tp!r} at {where}")
    _check_rules(out, meta, where)
    return out


def _check_rules(value: Any, meta: Mapping[str, Any], where: str) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise CampaignError(f"{where}: {value!r} is not one of {', '.join(repr(c) for c in choices)}")
    for rule, ok, word in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"), ("le", lambda a, b: a <= b, "<=")):
        if rule in meta and not ok(value, meta[rule]):
            raise CampaignError(f"{where}: must be {word} {meta[rule]}, got {value!r}")
    pattern = meta.get("pattern")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise CampaignError(f"{where}: {value!r} is not valid ({meta['doc'].split(';')[0]})")
    item_pattern = meta.get("item_pattern")
    if item_pattern is not None:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, item in items:
            if isinstance(item, str) and not re.fullmatch(item_pattern, item):
                label = f".{k}" if isinstance(value, dict) else f"[{k}]"
                raise CampaignError(f"{where}{label}: {item!r} is not valid ({meta['doc'].split(';')[0]})")
    allowed = meta.get("keys")
    if allowed is not None:
        for k in value:
            if k not in allowed:
                raise CampaignError(f"{where}: unknown key {k!r}; valid keys: {', '.join(allowed)}")
    keys_pattern = meta.get("keys_pattern")
    if keys_pattern is not None:
        for k in value:
            if not re.fullmatch(keys_pattern, k):
                raise CampaignError(f"{where}: {k!r} is not a valid environment variable name")


def _check_consistency(c: Campaign, source: str) -> None:
    """Rules that involve more than one key."""
    ref = c.reference
    if len(set(ref.seeds)) != len(ref.seeds):
        raise CampaignError(f"{source}: reference.seeds has duplicates: {ref.seeds}")
    for name in ("val_loss", "val_bpb", "artifact_bytes"):
        values = getattr(ref, name)
        if values and len(values) != len(ref.seeds):
            raise CampaignError(f"{source}: reference.{name} has {len(values)} values but reference.seeds has "
                                f"{len(ref.seeds)} ({ref.seeds}); give one value per seed, in that order")
    if ref.val_bpb and c.gate_a.seed not in ref.seeds:
        raise CampaignError(f"{source}: gate_a.seed {c.gate_a.seed} has no reference value; reference.seeds: {ref.seeds}")
    if c.ablation.promote_delta_bpb > c.ablation.hold_delta_bpb:
        raise CampaignError(f"{source}: ablation.promote_delta_bpb ({c.ablation.promote_delta_bpb}) must be <= "
                            f"ablation.hold_delta_bpb ({c.ablation.hold_delta_bpb}); deltas are variant − baseline, "
                            f"negative = better")
    for where, seeds in (("gate_a.seed", [c.gate_a.seed]), ("gate_b.seeds", c.gate_b.seeds), ("reference.seeds", ref.seeds)):
        bad = [s for s in seeds if not 0 <= s < 2**32]
        if bad:
            raise CampaignError(f"{source}: {where}: seed {bad[0]} is out of range; the trainer takes 0 <= SEED < 2**32")
    names = [v.name for v in c.ablation.variants]
    if any(not n for n in names):
        raise CampaignError(f"{source}: every [[ablation.variants]] needs a name")
    reserved = sorted(set(names) & set(RESERVED_VARIANT_NAMES))
    if reserved:
        raise CampaignError(f"{source}: ablation variant name {reserved[0]!r} is reserved for the baseline job; "
                            f"rename the variant")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CampaignError(f"{source}: duplicate ablation variant names: {', '.join(dupes)}")
    if not c.gate_b.seeds or len(set(c.gate_b.seeds)) != len(c.gate_b.seeds):
        raise CampaignError(f"{source}: gate_b.seeds must be a non-empty list of distinct seeds, got {c.gate_b.seeds}")
    _check_gate_b(c.gate_b, source)
    fr = list(c.ablation.halving_fractions)
    if any(not 0 < f < 1 for f in fr) or fr != sorted(set(fr)):
        raise CampaignError(f"{source}: ablation.halving_fractions = {fr}: fractions of the validation documents, "
                            "increasing, each strictly between 0 and 1 (the full set comes last by itself)")
    steps = list(c.ablation.abort_at_steps)
    if any(n <= 0 for n in steps) or steps != sorted(set(steps)):
        raise CampaignError(f"{source}: ablation.abort_at_steps = {steps}: training steps at which to check trained "
                            "variants, increasing, each > 0 ([] = no early abort)")
    rp = c.backend.runpod
    if 0 < rp.volume_gb < 10:
        raise CampaignError(f"{source}: backend.runpod.volume_gb {rp.volume_gb}: RunPod needs at least 10 (or 0 for none)")
    if rp.volume_gb and rp.network_volume_id:
        raise CampaignError(f"{source}: backend.runpod.volume_gb and backend.runpod.network_volume_id exclude each other")
    if "PUBLIC_KEY" in rp.env:
        raise CampaignError(f"{source}: backend.runpod.env.PUBLIC_KEY is set by golfrun (the run's SSH key); remove it")
    vocab = int(c.data.variant[2:]) if c.data.variant.startswith("sp") else 260
    if c.data.source == "synthetic":
        if c.data.variant != f"sp{c.data.synthetic.vocab_size}":
            raise CampaignError(f"{source}: data.variant {c.data.variant!r} does not match data.synthetic.vocab_size "
                                f"{c.data.synthetic.vocab_size} (expected 'sp{c.data.synthetic.vocab_size}')")
    env_vocab = c.trainer_env.get("VOCAB_SIZE")
    if env_vocab is not None and env_vocab != str(vocab):
        raise CampaignError(f"{source}: trainer_env.VOCAB_SIZE {env_vocab!r} does not match data.variant "
                            f"{c.data.variant!r} (vocabulary {vocab})")


# ---------------------------------------------------------------------------------------------
# output


def _to_plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj) if not f.metadata.get("internal")}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, list):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else json.dumps(k, ensure_ascii=False)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}" if v else "{}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _emit_toml(data: dict[str, Any], header: str = "") -> str:
    lines = [f"# {header}"] if header else []
    _emit_table(data, [], lines, schema.CampaignFields)
    return "\n".join(lines).strip() + "\n"


def _emit_table(data: dict[str, Any], path: list[str], lines: list[str], cls: type) -> None:
    hints = _hints(cls)
    by_name = {f.name: f for f in fields(cls)}
    tables: list[tuple[str, Any]] = []
    for k, v in data.items():
        f = by_name[k]
        tp = hints[k]
        if f.metadata.get("section"):
            tables.append((k, v))
        elif not path and typing.get_origin(tp) is dict:
            tables.append((k, v))  # top-level free tables ([trainer_env]) read better as tables
        elif typing.get_origin(tp) is list and typing.get_args(tp) and is_dataclass(typing.get_args(tp)[0]):
            tables.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for k, v in tables:
        f, tp = by_name[k], hints[k]
        dotted = ".".join(_toml_key(p) for p in [*path, k])
        if f.metadata.get("section"):
            lines += ["", f"[{dotted}]"]
            _emit_table(v, [*path, k], lines, tp)
        elif typing.get_origin(tp) is dict:
            lines += ["", f"[{dotted}]"]
            lines += [f"{_toml_key(ek)} = {_toml_value(ev)}" for ek, ev in v.items()]
        else:
            item_cls = typing.get_args(tp)[0]
            for item in v:
                lines += ["", f"[[{dotted}]]"]
                _emit_table(item, [*path, k], lines, item_cls)


def _check_gate_b(g: Any, source: str) -> None:
    """The gate_b keys that depend on one another (the sequential design and the rule profiles)."""
    if g.max_seeds > len(g.seeds):
        raise CampaignError(f"{source}: gate_b.max_seeds = {g.max_seeds} but gate_b.seeds lists {len(g.seeds)}: "
                            "pre-register at least max_seeds seeds")
    if g.wave_size > 0 and not g.require_record:
        raise CampaignError(f"{source}: gate_b.wave_size = {g.wave_size} (sequential) stops on the rule's test: "
                            "set gate_b.require_record = true, or wave_size = 0")
    if g.wave_size > 0 and (g.max_seeds or len(g.seeds)) < 2:
        raise CampaignError(f"{source}: a sequential gate-b needs at least 2 seeds")
    if g.rule == "target" and g.target_val_loss <= 0:
        raise CampaignError(f"{source}: gate_b.rule = \"target\" needs gate_b.target_val_loss (the mean val_loss to beat)")
    if bool(g.extra_reference_val_loss) != bool(g.extra_reference_label.strip()):
        raise CampaignError(f"{source}: gate_b.extra_reference_val_loss and gate_b.extra_reference_label go together "
                            "(pooled seeds are labelled with where they come from)")
