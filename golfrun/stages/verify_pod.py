"""Verify pod: is this machine the one the campaign expects, before any money is spent?

Checks, each with observed vs limit (the verify_pod section; an empty limit means "any"):
  gpu_count (exact; 0 = a CPU machine is fine), gpu_name (a substring of every GPU's name),
  torch_version and cuda_version (prefixes), attention_backend (e.g. "fa3": its module
  imports), required_packages (each importable, with its version), free disk under the
  campaign folder ≥ min_free_disk_gb, the trainer file present (its sha256 recorded), and the
  git commit pin (git_pin = "exact": HEAD is the commit; "ancestor": the commit is in HEAD's
  history) of the repository holding the trainer.
Rule: PASS iff every check passes; any failure → KILL (nothing downstream runs).
It runs on every `run-all` (never from cache): it is about the machine, not the campaign.

The facts come from a probe run by the interpreter that runs the trainer (backend.local.python,
default the one running golfrun), so torch is never imported into golfrun itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from golfrun.errors import GolfrunError
from golfrun.stages import common
from golfrun.stages.context import StageContext
from golfrun.summary import Check, Summary

# The machine can change under an unchanged campaign (a new pod, a full disk): never from cache.
# Its fingerprint stays the same, so what depends on it is still served from cache.
ALWAYS_RUN = True

# Runs in the trainer's interpreter: prints one JSON line of facts. Must not fail on a CPU box.
PROBE = r"""
import importlib, importlib.metadata as md, importlib.util, json, sys
packages = json.loads(sys.argv[1])
want_torch = sys.argv[2] == "1"
facts = {"python": sys.version.split()[0], "packages": {}, "gpus": [], "torch": None, "cuda": None, "attention": []}
for name in packages:
    spec = importlib.util.find_spec(name)
    version = None
    if spec is not None:
        for dist in (name, name.replace("_", "-"), "python-" + name):
            try:
                version = md.version(dist); break
            except md.PackageNotFoundError:
                pass
    facts["packages"][name] = {"importable": spec is not None, "version": version}
try:
    if not want_torch:
        raise ImportError("not asked for: no torch check in verify_pod")
    import torch
    facts["torch"] = torch.__version__
    facts["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
except Exception as exc:
    facts["torch_error"] = repr(exc)
for name, module in (("fa3", "flash_attn_interface"), ("fa2", "flash_attn")):
    try:
        importlib.import_module(module)
        facts["attention"].append(name)
    except Exception:
        pass
facts["attention"].append("sdpa")
print(json.dumps(facts))
"""


def _section(ctx: StageContext) -> Any:
    return ctx.campaign.verify_pod


def trainer_python(ctx: StageContext) -> str:
    local = getattr(getattr(ctx.campaign, "backend", None), "local", None)
    python = getattr(local, "python", "") if local is not None else ""
    return python or sys.executable


def probe(python: str, packages: list[str], want_torch: bool, timeout_s: float = 300.0) -> dict[str, Any]:
    argv = [python, "-c", PROBE, json.dumps(packages), "1" if want_torch else "0"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GolfrunError(f"verify-pod: could not run the probe with {python}: {exc}") from exc
    if done.returncode != 0:
        raise GolfrunError(f"verify-pod: the probe failed under {python} (exit {done.returncode}): "
                           f"{done.stderr.strip().splitlines()[-1:] }")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60, check=False)


def git_checks(trainer: Path, pin: str, how: str) -> list[Check]:
    if not pin:
        return []
    if how not in ("exact", "ancestor"):
        return [Check("git_commit", how, "exact|ancestor", "in", False, "verify_pod.git_pin must be 'exact' or 'ancestor'")]
    head = _git(trainer.parent, "rev-parse", "HEAD")
    if head.returncode != 0:
        return [Check("git_commit", None, pin, how, False, f"{trainer.parent} is not a git checkout: {head.stderr.strip()}")]
    head_sha = head.stdout.strip()
    if how == "exact":
        full = _git(trainer.parent, "rev-parse", "--verify", f"{pin}^{{commit}}").stdout.strip() or pin
        return [Check("git_commit", head_sha, full, "==", head_sha == full, "HEAD must be exactly the pinned commit")]
    anc = _git(trainer.parent, "merge-base", "--is-ancestor", pin, "HEAD")
    detail = "the pinned commit must be in HEAD's history"
    if anc.returncode not in (0, 1):
        detail += f" ({anc.stderr.strip() or 'unknown commit'})"
    return [Check("git_commit", head_sha, pin, "ancestor-of", anc.returncode == 0, detail)]


def run(ctx: StageContext) -> Summary:
    from golfrun.gates.checks import verdict_from

    started = common.now_iso()
    v = _section(ctx)
    packages = [str(p) for p in (v.required_packages or [])]
    trainer = common.trainer_file(ctx)
    python = trainer_python(ctx)
    # torch's import is slow: only when something about it is checked (it is, in every real campaign)
    want_torch = "torch" in packages or bool(v.gpu_count or v.gpu_name or v.torch_version or v.cuda_version)
    facts = probe(python, packages, want_torch)
    checks: list[Check] = []

    gpus = facts.get("gpus") or []
    want = int(v.gpu_count)
    if want == 0:
        checks.append(Check("gpu_count", len(gpus), 0, "any", True, "gpu_count = 0: a CPU machine is fine"))
    else:
        checks.append(Check("gpu_count", len(gpus), want, "==", len(gpus) == want, f"GPUs seen: {gpus}"))
    if v.gpu_name:
        ok = bool(gpus) and all(v.gpu_name in g for g in gpus)
        checks.append(Check("gpu_name", gpus, v.gpu_name, "contains", ok, "every GPU's name must contain it"))
    torch_v = facts.get("torch")
    if v.torch_version:
        checks.append(Check("torch_version", torch_v, v.torch_version, "startswith",
                            bool(torch_v) and str(torch_v).startswith(v.torch_version), facts.get("torch_error", "")))
    if v.cuda_version:
        cuda = facts.get("cuda")
        checks.append(Check("cuda_version", cuda, v.cuda_version, "startswith",
                            bool(cuda) and str(cuda).startswith(v.cuda_version), "torch.version.cuda"))
    if v.attention_backend:
        have = facts.get("attention") or []
        checks.append(Check("attention_backend", have, v.attention_backend, "in", v.attention_backend in have,
                            "fa3 = flash_attn_interface importable, fa2 = flash_attn, sdpa = always"))
    for name, info in (facts.get("packages") or {}).items():
        checks.append(Check(f"package:{name}", info.get("version") or ("importable" if info.get("importable") else "missing"),
                            "importable", "==", bool(info.get("importable")), f"import {name} under {python}"))
    ctx.campaign_dir.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(ctx.campaign_dir).free / 1e9
    checks.append(Check("free_disk_gb", round(free_gb, 2), float(v.min_free_disk_gb), ">=",
                        free_gb >= float(v.min_free_disk_gb), f"free space under {ctx.campaign_dir}"))
    present = trainer.is_file()
    checks.append(Check("trainer", str(trainer), "exists", "==", present,
                        f"sha256 {ctx.trainer_sha256}" if present else "the campaign's trainer file is missing"))
    checks.extend(git_checks(trainer, str(v.git_commit or ""), str(v.git_pin or "ancestor")))

    verdict, reasons = verdict_from(checks)
    decision = {"python": python, "facts": facts, "trainer": str(trainer), "trainer_sha256": ctx.trainer_sha256}
    return common.new_summary(ctx, verdict, started, checks=checks, decision=decision, reasons=reasons)


def describe(ctx: StageContext) -> list[str]:
    v = _section(ctx)
    return [f"probe {trainer_python(ctx)}: GPUs (want {v.gpu_count or 'any'}), torch {v.torch_version or 'any'}, "
            f"CUDA {v.cuda_version or 'any'}, attention {v.attention_backend or 'any'}, packages {list(v.required_packages or [])}, "
            f"≥ {v.min_free_disk_gb} GB free, trainer {common.trainer_file(ctx)}, git pin {v.git_commit or 'none'}"]
