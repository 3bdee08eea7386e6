"""The preflight benchmark seen from golfrun: run golfrun/preflight_probe.py in the trainer's
interpreter (torch only there), then hold its figures to golfrun/preflight_expected.py.

`checks(result, min_fraction)` is pure: one check per figure (the slowest GPU for the matrix
multiply), each `observed >= min_fraction × expected` for the GPU model and form factor the
preflight saw; a figure that could not be measured here is a passing check that says why (a CPU
machine, one GPU, no data yet); a GPU model without expected figures is a warning, never a pass
that pretends to know. A broken attention kernel is a failure whatever the hardware.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from golfrun.errors import TransportError
from golfrun.machine import MachineError, form_factor, gpu_model
from golfrun.preflight_expected import Expected, expected_for
from golfrun.summary import Check

SCRIPT = Path(__file__).resolve().parent / "preflight_probe.py"
TIMEOUT_S = 600.0


def run(python: str, *, data_dir: str = "", attention: str = "auto", gpus: int = 0,
        env: dict[str, str] | None = None, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """The preflight's JSON under `python`; MachineError when it cannot run or prints no JSON."""
    from golfrun.transport import local

    argv = [python, str(SCRIPT), "--data-dir", data_dir, "--attention", attention or "auto", "--gpus", str(gpus)]
    try:
        r = local.run(argv, env=env, timeout_s=timeout_s, check=False)
    except TransportError as exc:
        raise MachineError(f"preflight: {exc}") from exc
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        raise MachineError(f"preflight failed under {python} (exit {r.returncode}): {tail[0][-500:]}")
    try:
        return dict(json.loads(r.stdout.strip().splitlines()[-1]))
    except (json.JSONDecodeError, IndexError, TypeError, ValueError) as exc:
        raise MachineError(f"preflight under {python} printed no JSON: {r.stdout[-300:]!r}") from exc


def _floor(name: str, observed: float, expected: float, fraction: float, detail: str) -> Check:
    limit = round(fraction * expected, 1)
    return Check(f"preflight:{name}", observed, limit, ">=", observed >= limit,
                 f"{detail}; expected {expected:g} × min_perf_fraction {fraction:g}")


def _gpu_checks(result: dict[str, Any], exp: Expected | None, label: str, fraction: float) -> list[Check]:
    gpus = result.get("gpus") or []
    if exp is None:
        return [Check("preflight:expected", label, "a row of golfrun/preflight_expected.py", "in", False,
                      f"no expected figures for {label}: measured only ({_figures(result)})", severity="warn")]
    slowest = min(gpus, key=lambda g: g["matmul_bf16_tflops"])
    per_gpu = ", ".join(f"GPU{g['index']} {g['matmul_bf16_tflops']:g}" for g in gpus)
    out = [_floor("matmul_bf16_tflops", slowest["matmul_bf16_tflops"], exp.matmul_bf16_tflops, fraction,
                  f"slowest of {len(gpus)} {label} (TFLOP/s: {per_gpu}; datasheet peak {exp.matmul_peak_tflops:g})")]
    if result.get("h2d_gbs") is not None:
        out.append(_floor("h2d_gbs", float(result["h2d_gbs"]), exp.h2d_gbs, fraction, "pinned host-to-device copy, GB/s"))
    reduce = result.get("allreduce") or {}
    if reduce.get("busbw_gbs") is not None:
        if exp.allreduce_busbw_gbs is None:
            out.append(Check("preflight:allreduce_busbw_gbs", reduce["busbw_gbs"], None, "measured", True,
                             f"no NVLink figure for {label}: measured only"))
        else:
            out.append(_floor("allreduce_busbw_gbs", float(reduce["busbw_gbs"]), exp.allreduce_busbw_gbs, fraction,
                              f"NCCL all-reduce of {reduce.get('mib')} MiB across {reduce.get('gpus')} GPUs, bus GB/s"))
    return out


def _figures(result: dict[str, Any]) -> str:
    gpus = result.get("gpus") or []
    parts = [f"matmul {[g['matmul_bf16_tflops'] for g in gpus]} TFLOP/s"] if gpus else []
    if result.get("h2d_gbs") is not None:
        parts.append(f"h2d {result['h2d_gbs']} GB/s")
    if (result.get("allreduce") or {}).get("busbw_gbs") is not None:
        parts.append(f"all-reduce {result['allreduce']['busbw_gbs']} GB/s")
    return ", ".join(parts) or "no GPU figures"


def checks(result: dict[str, Any], min_fraction: float) -> list[Check]:
    """The preflight's figures against the expected table (see the module's docstring)."""
    out: list[Check] = []
    gpus = result.get("gpus") or []
    if gpus:
        name = str(gpus[0].get("name") or "")
        label = f"{gpu_model(name)} {form_factor(name)}"
        out += _gpu_checks(result, expected_for(gpu_model(name), form_factor(name)), label, min_fraction)
    for figure, why in sorted((result.get("skipped") or {}).items()):
        out.append(Check(f"preflight:{figure}", "skipped", None, "skipped", True, why))
    att = result.get("attention") or {}
    out.append(Check("preflight:attention", att.get("kernel"), "forward+backward finite", "==", bool(att.get("ok")),
                     att.get("error") or f"{att.get('kernel')} forward+backward in {att.get('ms')} ms"))
    disk = result.get("disk") or {}
    if disk.get("mb_s") is not None:
        out.append(Check("preflight:disk_read_mb_s", disk["mb_s"], None, "measured", True,
                         f"read {disk.get('bytes')} bytes of {disk.get('files')} files under {disk.get('path')}"))
    return out


def render(result: dict[str, Any], found: list[Check]) -> str:
    """Human lines for `golfrun preflight`."""
    lines = [f"preflight ({result.get('device')}, torch {result.get('torch')}, {result.get('seconds')} s)"]
    for c in found:
        mark = "ok  " if c.passed else ("WARN" if c.severity == "warn" else "FAIL")
        limit = "" if c.limit is None or c.op in ("skipped", "measured") else f" (limit {c.op} {c.limit})"
        lines.append(f"  {mark} {c.name.removeprefix('preflight:')}: {c.observed}{limit} — {c.detail}")
    return "\n".join(lines)
