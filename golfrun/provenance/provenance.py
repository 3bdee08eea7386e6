"""provenance.json: what code, configuration, software, hardware and runs produced a campaign.

Schema `golfrun.provenance/1`, top-level keys: `schema, created_at, campaign{name, resolved_toml,
config}, trainer{path, sha256}, git[{toplevel, commit, branch, dirty, untracked, diff_sha256,
diff}], python{version, executable, packages}, trainer_python{executable, torch, cuda, cudnn,
nccl, cuda_available, devices, packages | error}, nvidia_smi{gpus, driver_version | absent},
host{hostname, platform, cpu_model, cpu_count, mem_total_kib}, cluster{slurm, pod, env}, stages{
<stage>: {verdict, started_at, finished_at, wall_s, fingerprint, reason, jobs[…]}}, seeds,
wall{started_at, finished_at, wall_s}`.

golfrun never imports torch: the trainer's interpreter is asked in a subprocess (which also lists
that interpreter's packages). Every string in the document passes through golfrun/secrets.py
(secret-named keys, private-key blocks, and the literal values of every secret-named variable of
the environment and of the campaign), so nothing secret survives into the file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
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
from typing import Any

from golfrun.errors import GolfrunError
from golfrun.secrets import REDACTED, is_secret_name, redact_data, redact_text, secret_values_from_env
from golfrun.summary import STAGES, Summary

PROVENANCE_SCHEMA = "golfrun.provenance/1"
MAX_DIFF_BYTES = 2_000_000
_ENV_PREFIXES = ("SLURM_", "RUNPOD_", "CUDA_", "NCCL_", "TORCH", "OMP_", "HF_", "GOLFRUN_", "PYTHON", "VIRTUAL_ENV")

_PROBE = r"""
import json, shutil, sys
out = {"executable": sys.executable, "python": sys.version.split()[0]}
from importlib import metadata
try:
    out["packages"] = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata['Name'])
except Exception as e:
    out["packages_error"] = repr(e)
# torch/version.py answers without importing torch (seconds on a busy CPU box); the full import
# happens only where there is a GPU to ask about (NCCL, device names).
try:
    ns = {}
    path = metadata.distribution("torch").locate_file("torch/version.py")
    exec(compile(open(path).read(), str(path), "exec"), ns)
    out["torch"], out["cuda"], out["git_version"] = ns.get("__version__"), ns.get("cuda"), ns.get("git_version")
except Exception as e:
    out["error"] = "torch: " + repr(e)
out.update({"cuda_available": False, "nccl": None, "cudnn": None, "devices": []})
if out.get("cuda") and shutil.which("nvidia-smi"):
    try:
        import torch
        out["cuda_available"] = torch.cuda.is_available()
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        if out["cuda_available"]:
            v = torch.cuda.nccl.version()
            out["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
            out["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as e:
        out["cuda_error"] = repr(e)
print(json.dumps(out))
"""


# ------------------------------------------------------------------------------ secrets


def campaign_dict(campaign: Any) -> dict[str, Any]:
    """The resolved campaign as plain data (through its TOML, the form users read)."""
    to_toml = getattr(campaign, "to_toml", None)
    if callable(to_toml):
        try:
            return tomllib.loads(to_toml())
        except (tomllib.TOMLDecodeError, GolfrunError):
            pass
    import dataclasses

    if dataclasses.is_dataclass(campaign):
        return json.loads(json.dumps(dataclasses.asdict(campaign), default=str))
    return {}


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


def secret_values(campaign: Any = None, env: Mapping[str, str] | None = None) -> list[str]:
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


def resolved_toml(campaign: Any, campaign_dir: Path, values: list[str]) -> str:
    to_toml = getattr(campaign, "to_toml", None)
    text = ""
    if callable(to_toml):
        text = to_toml()
    elif (campaign_dir / "campaign.resolved.toml").is_file():
        text = (campaign_dir / "campaign.resolved.toml").read_text()
    return redact_toml(text, values)


# ------------------------------------------------------------------------------ probes


def _run(argv: list[str], timeout_s: float = 60.0, cwd: str | None = None) -> tuple[int, str, str]:
    from golfrun.errors import TransportError
    from golfrun.transport import local

    try:
        r = local.run(argv, cwd=cwd, timeout_s=timeout_s, check=False)
    except TransportError as exc:
        return -1, "", str(exc)
    return r.returncode, r.stdout, r.stderr


def git_info(folders: list[Path]) -> list[dict[str, Any]]:
    """One entry per distinct repository among `folders` (the trainer's, golfrun's, the cwd)."""
    if shutil.which("git") is None:
        return [{"error": "git not found"}]
    seen: dict[str, dict[str, Any]] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        rc, top, _ = _run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"], 30)
        top = top.strip()
        if rc != 0 or not top or top in seen:
            continue
        entry: dict[str, Any] = {"toplevel": top}
        rc, head, err = _run(["git", "-C", top, "rev-parse", "HEAD"], 30)
        entry["commit"] = head.strip() if rc == 0 else None
        _, branch, _ = _run(["git", "-C", top, "rev-parse", "--abbrev-ref", "HEAD"], 30)
        entry["branch"] = branch.strip() or None
        _, status, _ = _run(["git", "-C", top, "status", "--porcelain", "--untracked-files=all"], 60)
        lines = status.splitlines()
        entry["untracked"] = sorted(line[3:] for line in lines if line.startswith("??"))
        entry["dirty"] = any(not line.startswith("??") for line in lines)
        diff = ""
        if entry["commit"]:
            _, diff, _ = _run(["git", "-C", top, "diff", "HEAD", "--no-color", "--no-ext-diff"], 120)
        entry["diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()
        entry["diff_bytes"] = len(diff.encode())
        entry["diff"] = diff if len(diff.encode()) <= MAX_DIFF_BYTES else None
        if entry["diff"] is None:
            entry["diff_note"] = f"diff over {MAX_DIFF_BYTES} bytes: only its sha256 is kept"
        seen[top] = entry
    return list(seen.values())


def probe_python(python: str, timeout_s: float = 180.0) -> dict[str, Any]:
    """The trainer interpreter's torch/CUDA/NCCL versions and packages, asked in a subprocess."""
    rc, out, err = _run([python, "-c", _PROBE], timeout_s)
    if rc != 0:
        return {"executable": python, "error": f"exit {rc}: {(err or out).strip()[-500:]}"}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"executable": python, "error": f"unreadable probe output: {out[-300:]!r}"}


def nvidia_smi() -> dict[str, Any]:
    if shutil.which("nvidia-smi") is None:
        return {"present": False}
    rc, out, err = _run(["nvidia-smi", "--query-gpu=index,name,driver_version,memory.total,pci.bus_id",
                         "--format=csv,noheader"], 60)
    if rc != 0:
        return {"present": True, "error": (err or out).strip()[-500:]}
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 5:
            gpus.append({"index": parts[0], "name": parts[1], "driver_version": parts[2],
                         "memory_total": parts[3], "pci_bus_id": parts[4]})
    return {"present": True, "gpus": gpus, "driver_version": gpus[0]["driver_version"] if gpus else None}


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
    campaign: Any,
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
    cluster_env = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_JOB", "SLURM_NODELIST", "RUNPOD_POD"))}
    doc: dict[str, Any] = {
        "schema": PROVENANCE_SCHEMA,
        "created_at": created_at or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "campaign": {"name": getattr(campaign, "name", ""), "resolved_toml": resolved_toml(campaign, campaign_dir, values),
                     "config": campaign_dict(campaign)},
        "trainer": {"path": str(trainer_path) if trainer_path else None, "sha256": trainer_sha256},
        "git": git_info(folders),
        "python": {"version": sys.version.split()[0], "executable": sys.executable, "packages": _packages()},
        "trainer_python": probe_python(trainer_python),
        "nvidia_smi": nvidia_smi(),
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path
