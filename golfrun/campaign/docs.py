"""The key reference of docs/campaign.md, generated from the schema so the two cannot drift.

    python -m golfrun.campaign.docs            # print the reference
    python -m golfrun.campaign.docs --write docs/campaign.md   # refresh the generated block
"""

from __future__ import annotations

import sys
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any

from golfrun.campaign import schema
from golfrun.campaign.load import _hints, _to_plain, _toml_value

BEGIN = "<!-- BEGIN GENERATED KEY REFERENCE (python -m golfrun.campaign.docs --write docs/campaign.md) -->"
END = "<!-- END GENERATED KEY REFERENCE -->"


def _type_name(tp: Any) -> str:
    simple = {str: "string", int: "integer", float: "float", bool: "bool", Path: "path"}
    if tp in simple:
        return simple[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return "array of tables" if is_dataclass(args[0]) else f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"table of {_type_name(args[1])}"
    return " or ".join(_type_name(a) for a in args)


def _rules(meta: dict[str, Any]) -> str:
    out = []
    if "choices" in meta:
        out.append("one of " + ", ".join(f"`{_toml_value(c)}`" for c in meta["choices"]))
    for rule, word in (("ge", "≥"), ("gt", ">"), ("le", "≤")):
        if rule in meta:
            out.append(f"{word} {meta[rule]}")
    if "keys" in meta:
        out.append("keys: " + ", ".join(f"`{k}`" for k in meta["keys"]))
    return "; ".join(out)


def _default(value: Any, tp: Any) -> str:
    plain = _to_plain(value)
    if isinstance(plain, Path):
        plain = str(plain)
    return f"`{_toml_value(plain)}`"


def render_reference() -> str:
    """Markdown: one table per TOML table, one row per key (type, default, meaning)."""
    lines: list[str] = []

    def table(cls: type, name: str, doc: str) -> None:
        hints = _hints(cls)
        header = f"[{name}]" if name else "top level"
        lines.extend(["", f"### `{header}`" if name else f"### {header}", ""])
        if doc:
            lines.extend([doc[0].upper() + doc[1:] + ".", ""])
        lines.extend(["| key | type | default | meaning |", "|---|---|---|---|"])
        subsections = []
        for f in fields(cls):
            if f.metadata.get("internal"):
                continue
            tp = hints[f.name]
            if f.metadata.get("section"):
                subsections.append((tp, f"{name}.{f.name}" if name else f.name, f.metadata["doc"]))
                continue
            default = f.default if f.default_factory is MISSING else f.default_factory()
            meaning = f.metadata["doc"].replace("|", "\\|")
            rules = _rules(dict(f.metadata))
            if rules:
                meaning += f" ({rules})"
            default_text = _default(default, tp).replace("|", "\\|")
            lines.append(f"| `{f.name}` | {_type_name(tp)} | {default_text} | {meaning} |")
            origin, args = typing.get_origin(tp), typing.get_args(tp)
            if origin is list and args and is_dataclass(args[0]):
                subsections.append((args[0], f"[{name}.{f.name}]", f.metadata["doc"]))
        for sub_cls, sub_name, sub_doc in subsections:
            table(sub_cls, sub_name, sub_doc)

    table(schema.CampaignFields, "", "")
    return "\n".join(lines).strip() + "\n"


def refresh(path: Path) -> bool:
    """Replace the generated block of `path`; True if the file changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:start] + "\n\n" + render_reference() + "\n" + text[end:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        print("updated" if refresh(Path(sys.argv[2])) else "up to date")
    else:
        sys.stdout.write(render_reference())
