"""The ratios a kernel session is read by, as a Markdown table: each configuration's tokens/s against its references
(the record's kernels on the same documents and with the same microbatches a step, and the record's own script
there) and, for the pending candidate, against the configuration it changes. kernel_session.py prints it at the end of every call; run it on a session's
-configs.json, with another session's -configs.json (earlier or later) for references the session lacks
(marked †).

Usage: python3 benchmarks/session_table.py CONFIGS.json [OTHER-CONFIGS.json]"""
from __future__ import annotations

import json
import sys
from pathlib import Path

RATES = ("tokens_per_s_preloop", "tokens_per_s_loop", "tokens_per_s_all")
HEADER = "| run | steps | tokens/s before looping | with looping | whole run | peak MiB | compile s | first step s |"
# what a reference must share with the run it is compared with: the documents (FineWeb-length) and the step (one
# microbatch), named in this order (`default-long-1mb`)
VARIANTS = ("-long", "-1mb")


def split(name: str) -> tuple[str, str]:
    """(configuration, variants): `next-long` -> (`next`, `-long`), `default-long-1mb` -> (`default`,
    `-long-1mb`), `default` -> (`default`, ``)."""
    variant = ""
    for v in reversed(VARIANTS):
        if name.endswith(v):
            name, variant = name[:-len(v)], v + variant
    return name, variant


def references(name: str) -> list[str]:
    """The configurations `name` is read against, in order: the record's kernels on its documents and step, the
    record's own script there (`record`, `record-long`: the issue's yardstick), then for a candidate (`next`)
    the configuration it changes. The references themselves are read
    against the record's kernels on the main data (`baseline-long` against `baseline`: what the documents cost)."""
    core, v = split(name)
    if core.endswith(("-equiv", "-noise")):
        return [] if core == "baseline-equiv" else ["baseline-equiv"]
    if core == "baseline":
        return ["baseline"] if v else []
    if core == "record":  # the record's own script against its kernels in our trainer
        return [f"baseline{v}"]
    refs = [f"baseline{v}", f"record{v}"]
    return [*refs, f"default{v}"] if core == "next" else refs


def _ratios(run: dict, key: str, refs: list[tuple[str, dict, bool]]) -> str:
    if run.get(key) is None:
        return "-"
    parts = [f"{run[key] / ref[key]:.3f}× {name}{'†' if other else ''}" for name, ref, other in refs
             if ref.get(key)]
    return f"{run[key]:,.0f}" + (f" ({', '.join(parts)})" if parts else "")


def _number(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _row(name: str, run: dict, refs: list[tuple[str, dict, bool]]) -> str:
    cells = [name, _number(run.get("iterations"), "d"), *(_ratios(run, key, refs) for key in RATES),
             _number(run.get("peak_mem_mib"), "d"), _number(run.get("compile_s"), ".1f"),
             _number(run.get("time_to_first_step_s"), ".1f")]
    return "| " + " | ".join(cells) + " |"


def render(configs: dict[str, dict], other: dict[str, dict] | None = None) -> str:
    """The table: a row per configuration of `configs` (a kernel session's -configs.json), those read against
    nothing first, each group in the file's order. A reference missing from `configs` is taken from `other`,
    another session's, marked †, and gets a row of its own at the end."""
    other = other or {}
    lines = [HEADER, "| --- " * HEADER.count(" | ") + "| --- |"]
    from_other: dict[str, dict] = {}
    for name in sorted(configs, key=lambda n: bool(references(n))):
        refs = []
        for ref in references(name):
            if ref in configs:
                refs.append((ref, configs[ref], False))
            elif ref in other:
                refs.append((ref, other[ref], True))
                from_other[ref] = other[ref]
        lines.append(_row(name, configs[name], refs))
    lines += [_row(f"{name}†", run, []) for name, run in from_other.items()]
    if from_other:
        lines += ["", "† from the other session's configurations: another machine, so a ratio across sessions"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        raise SystemExit(__doc__.rsplit("\n\n", 1)[-1])
    configs = json.loads(Path(argv[1]).read_text())
    other = json.loads(Path(argv[2]).read_text()) if len(argv) == 3 else None
    sys.stdout.write(render(configs, other))


if __name__ == "__main__":
    main(sys.argv)
