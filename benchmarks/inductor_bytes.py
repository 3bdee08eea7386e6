"""How far Inductor's kernels are from the GPU's memory bandwidth: the ceiling on what hand-written versions of the
same kernels could save.

With TORCHINDUCTOR_BENCHMARK_KERNEL=1 Inductor writes into each generated Triton kernel's source, beside its name,
its own estimate of the bytes the kernel reads and writes (`'kernel_num_gb'` in `inductor_meta`, one line of the
kernel's decorator; torch/_inductor/codegen/triton.py). profile_step.py joins those with the profiled time of each
kernel: the achieved bandwidth, and the time the same bytes would take at the bandwidth of a plain device copy.
The sum of those floors bounds what faster kernels doing the same work could save; fusing kernels so that fewer
bytes move is beyond that bound. Pure functions; the reading of the cache folder is the only I/O.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

_META = re.compile(r"inductor_meta=\{.*\}")
_NAME = re.compile(r"'kernel_name': '(\w+)'")
_GB = re.compile(r"'kernel_num_gb': ([0-9.eE+-]+)")


def kernel_gb(sources: list[str]) -> dict[str, set[float]]:
    """Kernel name -> the GB estimates found for it. One name may stand for kernels of several graphs (Inductor
    numbers kernels per graph), so a name with two different estimates cannot be joined and is left out later."""
    found: dict[str, set[float]] = defaultdict(set)
    for source in sources:
        for line in source.splitlines():
            if not (meta := _META.search(line)):
                continue
            name, gb = _NAME.search(meta.group(0)), _GB.search(meta.group(0))
            if name and gb:
                found[name.group(1)].add(float(gb.group(1)))
    return dict(found)


def read_cache(cache_dir: Path) -> dict[str, set[float]]:
    """kernel_gb over every generated source in an Inductor cache folder (sources without an estimate add nothing)."""
    texts = []
    for path in sorted(cache_dir.rglob("*.py")):
        text = path.read_text(errors="replace")
        if "kernel_num_gb" in text:
            texts.append(text)
    return kernel_gb(texts)


def bandwidth(rows: list[tuple[str, float, int]], gb: dict[str, set[float]], copy_gb_per_s: float,
              top: int = 20) -> dict:
    """rows: (kernel name, profiled ms, launches) of Inductor's kernels in one step. What they take, the time their
    bytes would take at copy bandwidth (floor_ms), and the kernels furthest above their floor."""
    matched, unmatched = [], []
    for name, ms, count in rows:
        estimates = gb.get(name, set())
        if len(estimates) == 1:
            total_gb = next(iter(estimates)) * count
            matched.append((name, ms, total_gb, 1000 * total_gb / copy_gb_per_s))
        else:
            unmatched.append((name, ms, "ambiguous" if estimates else "no estimate"))
    ms_matched = sum(m[1] for m in matched)
    gb_matched = sum(m[2] for m in matched)
    excess = sorted(matched, key=lambda m: m[3] - m[1])[:top]
    return {
        "copy_gb_per_s": round(copy_gb_per_s, 1),
        "matched": {"kernels": len(matched), "ms": round(ms_matched, 2), "gb": round(gb_matched, 3),
                    "floor_ms": round(sum(m[3] for m in matched), 2),
                    "gb_per_s": round(gb_matched / (ms_matched / 1000), 1) if ms_matched else None},
        "unmatched": {"kernels": len(unmatched), "ms": round(sum(u[1] for u in unmatched), 2),
                      "largest": [[round(ms, 2), why, name] for name, ms, why in sorted(
                          unmatched, key=lambda u: -u[1])[:5]]},
        # ms, floor ms, achieved GB/s, name
        "furthest_above_floor": [[round(ms, 2), round(floor, 2), round(g / (ms / 1000), 1), name]
                                 for name, ms, g, floor in excess],
    }
