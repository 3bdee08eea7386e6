"""provenance.json: what code, configuration, software, hardware and runs produced a campaign.

Schema `golfrun.provenance/1`, top-level keys: `schema, created_at, campaign{name, resolved_toml,
config}, trainer{path, sha256}, git[{toplevel, commit, branch, dirty, untracked, diff_sha256,
diff}], python{version, executable, packages}, trainer_python{executable, torch, cuda, cudnn,
nccl, cuda_available, attention, devices, packages | error}, nvidia_smi{present, gpus, driver_version,
topology}, machine{the hardware fingerprint of golfrun/machine.py, with its hardware_key},
host{hostname, platform, cpu_model, cpu_count, mem_total_kib}, cluster{slurm, pod, env}, stages{
<stage>: {verdict, started_at, finished_at, wall_s, fingerprint, reason, jobs[…]}}, seeds,
wall{started_at, finished_at, wall_s}`.

golfrun never imports torch: the trainer's interpreter is asked in a subprocess (golfrun/machine.py,
the one machine probe, which also lists that interpreter's packages). Every string in the document passes through golfrun/secrets.py
(secret-named keys, private-key blocks, and the literal values of every secret-named variable of
the environment and of the campaign), so nothing secret survives into the file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import sys
import tomllib
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun import machine
from golfrun.errors import GolfrunError
from golfrun.fileio import finite_or_null, now_iso, write_text_atomic
from golfrun.secrets import REDACTED, is_secret_name, redact_data, redact_text, secret_values_from_env
from golfrun.summary import STAGES, Summary

if TYPE_CHECKING:
    from golfrun.campaign import Campaign

PROVENANCE_SCHEMA = "golfrun.provenance/1"
_ENV_PREFIXES = ("SLURM_", "RUNPOD_", "CUDA_", "NCCL_", "TORCH", "OMP_", "HF_", "GOLFRUN_", "PYTHON", "VIRTUAL_ENV")

# ------------------------------------------------------------------------------ secrets


def campaign_dict(campaign: "Campaign") -> dict[str, Any]:
    """The resolved campaign as plain data (through its TOML, the form users read)."""
    try:
        return tomllib.loads(campaign.to_toml())
    except (tomllib.TOMLDecodeError, GolfrunError):
        return json.loads(json.dumps(campaign.to_dict(), default=str))


def _secret_values_in(data: Any) -> list[str]:
    found: list[str] = []
    if isinstance(data, Mapping):
        for k, v in data.items():
            if isinstance(k, str) and is_secret_name(k) and isinstance(v, (str, int, float)) and str(v):
                found.append(str(v))
            else:
                found += _secret_values_in(v)
    elif isinstance(data, list):
        for v in data:
            found += _secret_values_in(v)
    return found


def secret_values(campaign: "Campaign | None" = None, env: Mapping[str, str] | None = None) -> list[str]:
    """Literal values to scrub: every secret-named variable of the environment and the campaign."""
    values = secret_values_from_env(os.environ if env is None else env)
    if campaign is not None:
        values += _secret_values_in(campaign_dict(campaign))
    # longest first, so a value containing another is replaced whole
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def scrub(data: Any, values: list[str]) -> Any:
    """redact_data, then every string with the literal secret values removed."""
    data = redact_data(data)

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return redact_text(x, values)
        if isinstance(x, Mapping):
            return {redact_text(str(k), values): walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(data)


_TOML_ASSIGN = re.compile(r'(?P<key>"?[A-Za-z_][A-Za-z0-9_.-]*"?)(?P<eq>\s*=\s*)(?P<val>"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^,}\n]+)')


def redact_toml(text: str, values: list[str]) -> str:
    """A TOML document with the value of every secret-named key replaced (inline tables too)."""

    def repl(m: re.Match[str]) -> str:
        return f'{m["key"]}{m["eq"]}"{REDACTED}"' if is_secret_name(m["key"].strip('"')) else m[0]

    return redact_text(_TOML_ASSIGN.sub(repl, text), values)


def resolved_toml(campaign: "Campaign | None", campaign_dir: Path, values: list[str]) -> str:
    text = ""
    if campaign is not None:
        text = campaign.to_toml()
    elif (campaign_dir / "campaign.resolved.toml").is_file():
        text = (campaign_dir / "campaign.resolved.toml").read_text()
    return redact_toml(text, values)


# ------------------------------------------------------------------------------ probes
# The machine itself (interpreter, GPUs, git) is golfrun/machine.py's: asked once, here shaped as
# this document's keys.


def git_info(folders: list[Path]) -> list[dict[str, Any]]:
    """One entry per distinct repository among `folders` (the trainer's, golfrun's, the cwd)."""
    if shutil.which("git") is None:
        return [{"error": "git not found"}]
    seen: dict[str, dict[str, Any]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        entry = machine.git_state(folder, with_diff=True)
        if entry is not None and entry["toplevel"] not in seen:
            seen[entry["toplevel"]] = entry
    return list(seen.values())


def probe_python(python: str, timeout_s: float = 180.0) -> dict[str, Any]:
    """The trainer interpreter's torch/CUDA/NCCL versions, devices and packages (machine.py)."""
    try:
        facts = machine.probe_interpreter(python, torch="auto", all_packages=True, timeout_s=timeout_s)
    except machine.MachineError as exc:
        return {"executable": python, "error": str(exc)}
    keep = ("executable", "python", "torch", "cuda", "git_version", "cudnn", "nccl", "cuda_available", "attention")
    out = {k: facts.get(k) for k in keep}
    out["devices"] = [d.get("name") for d in facts.get("devices") or []]
    out["packages"] = facts.get("distributions") or []
    if facts.get("torch_error"):
        out["error"] = "torch: " + str(facts["torch_error"])
    return out


def nvidia_smi() -> dict[str, Any]:
    smi = machine.nvidia_smi()
    return {k: v for k, v in smi.items() if k not in ("query_raw", "topology_raw")}


def host_info() -> dict[str, Any]:
    cpu_model, mem = None, None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1])
                break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model or platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "mem_total_kib": mem,
    }


def _packages() -> list[str]:
    return sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {"error": f"{path.name}: {exc}"} if path.exists() else None


def _parse_time(s: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None


def _wall(start: str, end: str) -> float | None:
    a, b = _parse_time(start), _parse_time(end)
    return round((b - a).total_seconds(), 3) if a and b else None


def stages_info(summaries: Mapping[str, Summary]) -> tuple[dict[str, Any], list[int], dict[str, Any]]:
    stages: dict[str, Any] = {}
    seeds: set[int] = set()
    starts, ends = [], []
    for name in STAGES:
        s = summaries.get(name)
        if s is None:
            continue
        jobs = []
        for j in s.jobs:
            res = j.result or {}
            if isinstance(res.get("seed"), int):
                seeds.add(res["seed"])
            final = res.get("final") or {}
            jobs.append({"name": j.name, "state": j.state, "backend": j.backend, "backend_ids": j.backend_ids,
                         "cached": j.cached, "duration_s": j.duration_s, "seed": res.get("seed"),
                         "val_bpb": final.get("val_bpb"), "val_loss": final.get("val_loss"),
                         "world_size": res.get("world_size"), "device": res.get("device")})
        stages[name] = {"verdict": s.verdict.value, "started_at": s.started_at, "finished_at": s.finished_at,
                        "wall_s": _wall(s.started_at, s.finished_at), "fingerprint": s.fingerprint,
                        "reason": s.reasons[0] if s.reasons else "", "jobs": jobs}
        if s.verdict.value != "SKIPPED":
            starts.append(s.started_at)
            ends.append(s.finished_at)
    wall = {"started_at": min(starts) if starts else None, "finished_at": max(ends) if ends else None}
    wall["wall_s"] = _wall(wall["started_at"], wall["finished_at"]) if starts else None
    return stages, sorted(seeds), wall


# ------------------------------------------------------------------------------ the document


def build_provenance(
    campaign: "Campaign",
    campaign_dir: Path,
    summaries: Mapping[str, Summary],
    *,
    trainer_path: Path | None,
    trainer_sha256: str,
    python: str = "",
    created_at: str | None = None,
) -> dict[str, Any]:
    values = secret_values(campaign)
    trainer_python = python or sys.executable
    stages, seeds, wall = stages_info(summaries)
    folders = [Path(__file__).resolve().parent, Path.cwd()]
    if trainer_path is not None:
        folders.insert(0, Path(trainer_path).resolve().parent)
    git, tp, smi = git_info(folders), probe_python(trainer_python), nvidia_smi()
    cluster_env = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_JOB", "SLURM_NODELIST", "RUNPOD_POD"))}
    doc: dict[str, Any] = {
        "schema": PROVENANCE_SCHEMA,
        "created_at": created_at or now_iso(),
        "campaign": {"name": campaign.name, "resolved_toml": resolved_toml(campaign, campaign_dir, values),
                     "config": campaign_dict(campaign)},
        "trainer": {"path": str(trainer_path) if trainer_path else None, "sha256": trainer_sha256},
        "git": git,
        "python": {"version": sys.version.split()[0], "executable": sys.executable, "packages": _packages()},
        "trainer_python": tp,
        "nvidia_smi": smi,
        "machine": machine.fingerprint(tp, smi, git[0] if git and "toplevel" in git[0] else None).to_dict(),
        "host": host_info(),
        "cluster": {
            "slurm": _read_json(campaign_dir / "slurm.json"),
            "pod": _read_json(campaign_dir / "pod.json"),
            "env": cluster_env,
        },
        "environment": {k: v for k, v in sorted(os.environ.items()) if k.startswith(_ENV_PREFIXES)},
        "stages": stages,
        "seeds": seeds,
        "wall": wall,
    }
    return scrub(doc, values)


def write_provenance(path: Path, doc: Mapping[str, Any]) -> Path:
    text = json.dumps(finite_or_null(doc), indent=2, sort_keys=True, default=str, allow_nan=False)
    write_text_atomic(path, text + "\n")
    return path
