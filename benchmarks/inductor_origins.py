"""Which ops an Inductor kernel of a profile computes: the comment Inductor writes above each kernel it defines in
a compiled graph's wrapper module (its Python code cache, TORCHINDUCTOR_CACHE_DIR/xx/c….py): the kernel's
file, the source nodes and ATen ops it fused and the graph fragment, and the sizes its source fixes (xnumel,
r0_numel). A profile names kernels only (`triton_red_fused_mul_sum_3`), and the same name means another fusion in
another graph, so each name is looked up in the wrapper that defines most of the profile's kernels.
profile_step.py adds them to each phase (`inductor_origins`)."""
from __future__ import annotations

import re
from pathlib import Path

DEFINITION = re.compile(r"^(\w+) = async_compile\.\w+\(", re.M)
NUMEL = re.compile(r"^\s*((?:x|y|z|r0_|r1_|r)numel) = (\d+)\s*$", re.M)
MAX_COMMENT_LINES = 40  # a graph fragment can list hundreds of nodes; its head says what the kernel computes
LARGEST = 8  # the largest Inductor kernels of a profiled phase that largest_origins looks up


def definitions(text: str) -> dict[str, dict]:
    """Each kernel a wrapper module defines: {name: {"origin": the comment lines just above its definition,
    "numels": the sizes its source fixes}}. Kernels without comments (Inductor's C++ ones) get an empty origin."""
    found = {}
    starts = [(m.group(1), m.start()) for m in DEFINITION.finditer(text)]
    for i, (name, at) in enumerate(starts):
        above = text[:at].splitlines()
        comment = []
        while above and above[-1].startswith("#"):
            comment.insert(0, above.pop())
        body = text[at:starts[i + 1][1] if i + 1 < len(starts) else len(text)]
        found[name] = {"origin": comment[:MAX_COMMENT_LINES],
                       "numels": {k: int(v) for k, v in NUMEL.findall(body)}}
    return found


def wrappers(root: Path) -> dict[Path, dict[str, dict]]:
    """The wrapper modules in Inductor's Python code cache under `root` (root/xx/*.py; the Triton kernels' own
    modules there define no kernel by async_compile) and what each defines."""
    found = {}
    for path in root.glob("*/*.py"):
        text = path.read_text(errors="replace")
        if "= async_compile." in text:
            found[path] = definitions(text)
    return found


def largest_origins(rows: list[tuple[str, float, int]], root: Path) -> dict:
    """kernel_origins of the LARGEST kernels of a phase's Inductor rows (name, ms, launches: profile_kinds.summarize),
    or {"error": ...} where the cache cannot be read: the profile itself is still worth writing."""
    names = [row[0] for row in sorted(rows, key=lambda row: -row[1])[:LARGEST]]
    try:
        return kernel_origins(root, names)
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}


def kernel_origins(root: Path, names: list[str]) -> dict[str, dict]:
    """For each of `names` that a wrapper under `root` defines: its definition in the wrapper defining most of
    `names` (the newest of equals), with that file's path below `root`. Names defined nowhere are left out."""
    parsed = wrappers(root)
    out = {}
    for name in names:
        holders = [path for path, defs in parsed.items() if name in defs]
        if holders:
            best = max(holders, key=lambda p: (sum(n in parsed[p] for n in names), p.stat().st_mtime))
            out[name] = {"file": str(best.relative_to(root)), **parsed[best][name]}
    return out
