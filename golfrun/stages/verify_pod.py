"""Verify pod: is this machine the one the campaign expects, before any money is spent?

Checks, each with observed vs limit (the verify_pod section; an empty limit means "any"):
  gpu_count (exact; 0 = a CPU machine is fine), gpu_name (a substring of every GPU's name),
  gpu_form_factor (SXM | PCIe | NVL),
  torch_version and cuda_version (prefixes), attention_backend (e.g. "fa3": its module
  imports), required_packages (each importable, with its version), free disk under the
  campaign folder ≥ min_free_disk_gb, the trainer file present (its sha256 recorded), and the
  git commit pin (git_pin = "exact": HEAD is the commit; "ancestor": the commit is in HEAD's
  history) of the repository holding the trainer.
Then the preflight benchmark (golfrun/preflight.py; verify_pod.preflight: "auto" = on a GPU machine):
bf16 matmul TFLOP/s per GPU, NCCL all-reduce bus bandwidth, host-to-device copy, the attention
kernel's forward+backward, the data folder's read speed, each held to min_perf_fraction × the
figure golfrun/preflight_expected.py keeps for the GPU model; its figures go to `decision.preflight`.
Rule: PASS iff every check passes; any failure → KILL (nothing downstream runs).
It runs on every `run-all` (never from cache): it is about the machine, not the campaign.

The facts come from golfrun/machine.py, the one machine probe: the interpreter that runs the
trainer (backend.local.python, default the one running golfrun) runs golfrun/machine_probe.py, so
torch is never imported into golfrun itself; nvidia-smi gives the GPUs' names, memory, driver and
interconnect. The machine's fingerprint goes to `decision.machine` and to
`runs/<campaign>/machine.json`, whose hardware key is part of every job's cache key.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from golfrun import machine, preflight
from golfrun.campaign.schema import VerifyPod
from golfrun.fileio import now_iso
from golfrun.stages import common
from golfrun.stages.context import StageContext
from golfrun.stages.spec import StageSpec
from golfrun.summary import Check, Summary


def key_figures(summary: Summary) -> str:
    facts = summary.decision.get("facts") or {}
    gpus = facts.get("gpus") or []
    return f"{len(gpus)} GPU(s), torch {facts.get('torch') or '-'}, {sum(c.passed for c in summary.checks)}/{len(summary.checks)} checks"


# always_run: the machine can change under an unchanged campaign (a new pod, a full disk), so it is
# never served from cache. Its fingerprint stays the same, so what depends on it still is.
SPEC = StageSpec("verify-pod", 0, upstream=(), config_sections=("verify_pod",),
                 uses_trainer=True, needs_gpus=True, always_run=True, key_figures=key_figures)


def _section(ctx: StageContext) -> VerifyPod:
    return ctx.campaign.verify_pod


def trainer_python(ctx: StageContext) -> str:
    return ctx.campaign.backend.local.python or sys.executable


def git_checks(trainer: Path, pin: str, how: str) -> list[Check]:
    if not pin:
        return []
    if how not in ("exact", "ancestor"):
        return [Check("git_commit", how, "exact|ancestor", "in", False, "verify_pod.git_pin must be 'exact' or 'ancestor'")]
    rc, head_sha, err = machine.git(trainer.parent, "rev-parse", "HEAD")
    if rc != 0:
        return [Check("git_commit", None, pin, how, False, f"{trainer.parent} is not a git checkout: {err}")]
    if how == "exact":
        full = machine.git(trainer.parent, "rev-parse", "--verify", f"{pin}^{{commit}}")[1] or pin
        return [Check("git_commit", head_sha, full, "==", head_sha == full, "HEAD must be exactly the pinned commit")]
    rc, _, err = machine.git(trainer.parent, "merge-base", "--is-ancestor", pin, "HEAD")
    detail = "the pinned commit must be in HEAD's history"
    if rc not in (0, 1):
        detail += f" ({err or 'unknown commit'})"
    return [Check("git_commit", head_sha, pin, "ancestor-of", rc == 0, detail)]


def preflight_wanted(v: VerifyPod) -> bool:
    """verify_pod.preflight: "auto" measures a GPU machine only (a CPU run has nothing to hold it to)."""
    return v.preflight == "on" or (v.preflight == "auto" and v.gpu_count > 0)


def machine_checks(v: VerifyPod, m: machine.Machine, python: str) -> list[Check]:
    """The machine's facts against the verify_pod section (an empty limit means "any")."""
    facts, fp = m.facts, m.fingerprint
    gpus = m.gpu_names()
    checks: list[Check] = []
    want = int(v.gpu_count)
    if want == 0:
        checks.append(Check("gpu_count", len(gpus), 0, "any", True, "gpu_count = 0: a CPU machine is fine"))
    else:
        checks.append(Check("gpu_count", len(gpus), want, "==", len(gpus) == want, f"GPUs seen: {gpus}"))
    if v.gpu_name:
        ok = bool(gpus) and all(v.gpu_name in g for g in gpus)
        checks.append(Check("gpu_name", gpus, v.gpu_name, "contains", ok, "every GPU's name must contain it"))
    if v.gpu_form_factor:
        checks.append(Check("gpu_form_factor", fp.form_factor or "none", v.gpu_form_factor, "==",
                            fp.form_factor == v.gpu_form_factor, f"from the name {fp.gpu_name!r} and nvidia-smi"))
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
                            "fa3 = flash_attn_interface importable, fa2 = flash_attn, varlen = torch's varlen_attn, "
                            "sdpa = always"))
    for name, info in (facts.get("packages") or {}).items():
        checks.append(Check(f"package:{name}", info.get("version") or ("importable" if info.get("importable") else "missing"),
                            "importable", "==", bool(info.get("importable")), f"import {name} under {python}"))
    return checks


def run(ctx: StageContext) -> Summary:
    from golfrun.gates.checks import verdict_from

    started = now_iso()
    v = _section(ctx)
    packages = [str(p) for p in (v.required_packages or [])]
    trainer = common.trainer_file(ctx)
    python = trainer_python(ctx)
    # torch's import is slow: only when something about it is checked (it is, in every real campaign)
    want_torch = "torch" in packages or bool(v.gpu_count or v.gpu_name or v.gpu_form_factor or v.torch_version
                                             or v.cuda_version or v.attention_backend)
    m = machine.probe(python, packages=packages, torch="yes" if want_torch else "no", git_folder=trainer.parent)
    ctx.campaign_dir.mkdir(parents=True, exist_ok=True)
    machine.write_machine(ctx.campaign_dir, m.fingerprint)  # the job caches' hardware key
    checks = machine_checks(v, m, python)
    free_gb = shutil.disk_usage(ctx.campaign_dir).free / 1e9
    checks.append(Check("free_disk_gb", round(free_gb, 2), float(v.min_free_disk_gb), ">=",
                        free_gb >= float(v.min_free_disk_gb), f"free space under {ctx.campaign_dir}"))
    present = trainer.is_file()
    checks.append(Check("trainer", str(trainer), "exists", "==", present,
                        f"sha256 {ctx.trainer_sha256}" if present else "the campaign's trainer file is missing"))
    checks.extend(git_checks(trainer, str(v.git_commit or ""), str(v.git_pin or "ancestor")))
    figures = None
    if preflight_wanted(v):
        figures = preflight.run(python, data_dir=str(ctx.campaign.data_dir(ctx.campaign_dir)),
                                attention=v.attention_backend or "auto")
        checks.extend(preflight.checks(figures, float(v.min_perf_fraction)))

    verdict, reasons = verdict_from(checks)
    # facts.gpus: the GPU names, as the compile cache's key reads them (golfrun/compile_cache.py)
    gpus = m.gpu_names()
    decision = {"python": python, "facts": {**m.facts, "gpus": gpus}, "machine": m.fingerprint.to_dict(),
                "topology": m.smi.get("topology"), "preflight": figures,
                "trainer": str(trainer), "trainer_sha256": ctx.trainer_sha256}
    return common.new_summary(ctx, verdict, started, checks=checks, decision=decision, reasons=reasons)


def describe(ctx: StageContext) -> list[str]:
    v = _section(ctx)
    return [f"probe {trainer_python(ctx)}: GPUs (want {v.gpu_count or 'any'}), torch {v.torch_version or 'any'}, "
            f"CUDA {v.cuda_version or 'any'}, attention {v.attention_backend or 'any'}, packages {list(v.required_packages or [])}, "
            f"≥ {v.min_free_disk_gb} GB free, trainer {common.trainer_file(ctx)}, git pin {v.git_commit or 'none'}"]
