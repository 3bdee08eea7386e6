"""The one machine probe: what this machine is (python, torch, CUDA, NCCL, GPUs, interconnect,
attention kernels, git), and its hardware fingerprint.

Used by verify-pod (its checks and `runs/<campaign>/machine.json`), by provenance
(provenance.json), by every summary (`machine`) and by the caches: `result_key(fingerprint)` is
part of every job's cache key (stages/common.py `job_key`) and of the fingerprint of every stage
that runs jobs (pipeline/engine.py), so a result measured on other hardware is never served as
this machine's; `hardware_key(fingerprint)` (every field, the driver too) is the compile cache's.

Three sources, each asked once, all commands through golfrun/transport/local.py:
- the trainer's interpreter runs golfrun/machine_probe.py as a file (golfrun never imports torch);
- `nvidia-smi --query-gpu=…` and `nvidia-smi topo -m` (pure parsers below, tested with captured
  output);
- `git` in the trainer's folder.

The form factor (SXM / PCIe / NVL) comes from the GPU's name ("H100 PCIe", "H100 NVL", "A100-SXM4";
"H100 80GB HBM3" and a bare "H200" are the SXM parts) and, when the name does not say, from the
board's maximum power limit (the SXM modules are 700 W parts; PCIe and NVL cards 300–400 W).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from golfrun.errors import GolfrunError, TransportError
from golfrun.fileio import sha256_text, write_json_atomic

MACHINE_SCHEMA = "golfrun.machine/1"
MACHINE_FILE = "machine.json"  # runs/<campaign>/machine.json, written by verify-pod
PROBE_SCRIPT = Path(__file__).resolve().parent / "machine_probe.py"
GPU_QUERY = "index,name,memory.total,driver_version,pci.bus_id,power.max_limit"
MAX_DIFF_BYTES = 2_000_000
SXM_MIN_POWER_W = 600.0  # H100/H200/A100 SXM modules: 400–700 W max; PCIe/NVL cards ≤ 400 W


class MachineError(GolfrunError):
    """The machine could not be probed (the interpreter failed, its output was unreadable)."""


def _run(argv: list[str], timeout_s: float, cwd: str | None = None) -> tuple[int, str, str]:
    from golfrun.transport import local

    try:
        r = local.run(argv, cwd=cwd, timeout_s=timeout_s, check=False)
    except TransportError as exc:
        return -1, "", str(exc)
    return r.returncode, r.stdout, r.stderr


# ------------------------------------------------------------------------------ the interpreter


def probe_interpreter(python: str, packages: list[str] | tuple[str, ...] = (), torch: str = "auto",
                      all_packages: bool = False, timeout_s: float = 300.0) -> dict[str, Any]:
    """machine_probe.py's facts under `python` (see that file); MachineError when it cannot run."""
    argv = [python, str(PROBE_SCRIPT), "--packages", json.dumps(list(packages)), "--torch", torch]
    if all_packages:
        argv.append("--all-packages")
    rc, out, err = _run(argv, timeout_s)
    if rc != 0:
        tail = (err or out).strip().splitlines()[-1:] or [""]
        raise MachineError(f"the machine probe failed under {python} (exit {rc}): {tail[0][-500:]}")
    try:
        return dict(json.loads(out.strip().splitlines()[-1]))
    except (json.JSONDecodeError, IndexError, TypeError, ValueError) as exc:
        raise MachineError(f"the machine probe under {python} printed no JSON: {out[-300:]!r}") from exc


# ------------------------------------------------------------------------------ nvidia-smi


def _number(text: str) -> float | None:
    m = re.search(r"[-+]?\d+(\.\d+)?", text)
    return float(m.group(0)) if m else None


def parse_gpu_query(text: str) -> list[dict[str, Any]]:
    """`nvidia-smi --query-gpu=<GPU_QUERY> --format=csv,noheader,nounits` → one dict per GPU."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        mem = _number(parts[2])
        power = _number(parts[5]) if len(parts) > 5 else None
        gpus.append({"index": int(parts[0]), "name": parts[1], "memory_mib": int(mem) if mem is not None else None,
                     "driver_version": parts[3], "pci_bus_id": parts[4], "power_max_w": power})
    return gpus


def parse_topology(text: str) -> dict[str, Any]:
    """`nvidia-smi topo -m` → the GPU-to-GPU links: {gpus, links{kind: pairs}, summary}.

    summary: "single" (one GPU), "NVLink NV18" (every pair over that many links), "PCIe PHB"
    (the farthest PCIe hop between any pair), "mixed NV4+SYS", or "" when there is no matrix.
    """
    rows: dict[str, list[str]] = {}
    header: list[str] = []
    text = _ANSI.sub("", text)  # nvidia-smi underlines the header on some drivers
    for raw in text.splitlines():
        cells = raw.split()
        if not cells:
            continue
        if not header and cells[0] == "GPU0" and (len(cells) == 1 or cells[1] != "X"):  # the column names
            header = [c for c in cells if re.fullmatch(r"GPU\d+", c)]
            continue
        if header and re.fullmatch(r"GPU\d+", cells[0]):
            rows[cells[0]] = cells[1:1 + len(header)]
    if not header:
        return {"gpus": 0, "links": {}, "summary": ""}
    links: Counter[str] = Counter()
    names = sorted(rows, key=lambda g: int(g[3:]))
    for a in names:
        for b, kind in zip(header, rows[a]):
            if int(b[3:]) > int(a[3:]) and kind != "X":
                links[kind] += 1
    return {"gpus": len(header), "links": dict(sorted(links.items())), "summary": _topology_summary(len(header), links)}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PCIE_ORDER = ("PIX", "PXB", "PHB", "NODE", "SYS", "SOC")  # nearest → farthest


def _topology_summary(n_gpus: int, links: Counter[str]) -> str:
    if n_gpus <= 1:
        return "single"
    nv = sorted((k for k in links if k.startswith("NV")), key=lambda k: int(k[2:] or 0))
    pcie = sorted((k for k in links if k in _PCIE_ORDER), key=_PCIE_ORDER.index)
    if nv and not pcie:
        return f"NVLink {nv[0]}"  # the weakest pair bounds an all-reduce
    if pcie and not nv:
        return f"PCIe {pcie[-1]}"
    return "mixed " + "+".join([*nv, *pcie]) if (nv or pcie) else "unknown"


def nvidia_smi(timeout_s: float = 60.0) -> dict[str, Any]:
    """Both nvidia-smi views, parsed, with the raw text kept (so a run's output can be captured)."""
    if shutil.which("nvidia-smi") is None:
        return {"present": False, "gpus": [], "topology": parse_topology("")}
    rc, out, err = _run(["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"], timeout_s)
    if rc != 0:
        return {"present": True, "error": (err or out).strip()[-500:], "gpus": [], "topology": parse_topology("")}
    gpus = parse_gpu_query(out)
    _, topo, _ = _run(["nvidia-smi", "topo", "-m"], timeout_s)
    return {"present": True, "gpus": gpus, "driver_version": gpus[0]["driver_version"] if gpus else None,
            "query_raw": out, "topology_raw": topo, "topology": parse_topology(topo)}


# ------------------------------------------------------------------------------ names


def gpu_model(name: str) -> str:
    """"NVIDIA H100 80GB HBM3" → "H100"; "NVIDIA A100-SXM4-80GB" → "A100"; "" when none."""
    m = re.search(r"\b([A-Z]{1,2}\d{2,3}[A-Z]?)\b", name.replace("-", " "))
    return m.group(1) if m else name.strip().removeprefix("NVIDIA ")


def form_factor(name: str, power_max_w: float | None = None) -> str:
    """SXM | PCIe | NVL | unknown, from the name, else from the board's power limit."""
    n = name.upper()
    if re.search(r"\bNVL\b", n):
        return "NVL"
    if "PCIE" in n:
        return "PCIe"
    if "SXM" in n or re.search(r"\bH100\b.*\bHBM3\b", n) or re.fullmatch(r"(NVIDIA )?H200( \d+GB)?( HBM3E)?", n.strip()):
        return "SXM"
    if power_max_w:
        return "SXM" if power_max_w >= SXM_MIN_POWER_W else "PCIe"
    return "unknown"


# ------------------------------------------------------------------------------ git


def git(folder: Path, *args: str, timeout_s: float = 60.0) -> tuple[int, str, str]:
    """`git -C folder …`: (exit code, stdout stripped, stderr stripped); -1 when git cannot run."""
    if shutil.which("git") is None:
        return -1, "", "git not found"
    rc, out, err = _run(["git", "-C", str(folder), *args], timeout_s)
    return rc, out.strip(), err.strip()


def git_state(folder: Path, with_diff: bool = False) -> dict[str, Any] | None:
    """The repository holding `folder`: toplevel, commit, branch, dirty, untracked (+ diff); None
    when it is not a checkout."""
    rc, top, _ = git(folder, "rev-parse", "--show-toplevel")
    if rc != 0 or not top:
        return None
    root = Path(top)
    rc, head, _ = git(root, "rev-parse", "HEAD")
    entry: dict[str, Any] = {"toplevel": top, "commit": head if rc == 0 else None}
    entry["branch"] = git(root, "rev-parse", "--abbrev-ref", "HEAD")[1] or None
    status = git(root, "status", "--porcelain", "--untracked-files=all")[1].splitlines()
    entry["untracked"] = sorted(line[3:] for line in status if line.startswith("??"))
    entry["dirty"] = any(not line.startswith("??") for line in status)
    if with_diff:
        diff = _run(["git", "-C", top, "diff", "HEAD", "--no-color", "--no-ext-diff"], 120)[1] if entry["commit"] else ""
        entry["diff_sha256"] = sha256_text(diff)
        entry["diff_bytes"] = len(diff.encode())
        entry["diff"] = diff if len(diff.encode()) <= MAX_DIFF_BYTES else None
        if entry["diff"] is None:
            entry["diff_note"] = f"diff over {MAX_DIFF_BYTES} bytes: only its sha256 is kept"
    return entry


# ------------------------------------------------------------------------------ the fingerprint


@dataclass(frozen=True)
class Fingerprint:
    """What a result depends on, about the machine. Empty strings where there is no GPU."""

    gpu_model: str = ""
    gpu_name: str = ""
    form_factor: str = ""
    gpu_count: int = 0
    gpu_memory_mib: int = 0
    driver: str = ""
    cuda: str = ""
    torch: str = ""
    nccl: str = ""
    attention: tuple[str, ...] = ()
    interconnect: str = ""
    python: str = ""
    git_commit: str = ""
    git_dirty: bool = False
    schema: str = field(default=MACHINE_SCHEMA)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["attention"] = list(self.attention)
        d["hardware_key"], d["result_key"] = hardware_key(self), result_key(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fingerprint":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["attention"] = tuple(known.get("attention") or ())
        return cls(**known)

    def describe(self) -> str:
        if not self.gpu_count:
            return f"CPU, python {self.python}, torch {self.torch or 'none'}"
        return (f"{self.gpu_count}× {self.gpu_model} {self.form_factor} {self.gpu_memory_mib} MiB, driver {self.driver}, "
                f"CUDA {self.cuda}, torch {self.torch}, NCCL {self.nccl or 'none'}, {self.interconnect}, "
                f"attention {'/'.join(self.attention) or 'none'}")


# The fields that make two machines interchangeable for a result (git is the code's, not the machine's).
_HARDWARE_FIELDS = ("gpu_model", "form_factor", "gpu_count", "gpu_memory_mib", "driver", "cuda", "torch", "nccl",
                    "attention", "interconnect", "python")


# What a trainer's result depends on: the driver is left out, so a new pod of the same type with
# another driver build still finds its campaign's jobs done (a compiled kernel does depend on it).
_RESULT_FIELDS = tuple(f for f in _HARDWARE_FIELDS if f != "driver")


def _key(fp: Fingerprint, names: tuple[str, ...]) -> str:
    d = asdict(fp)
    return sha256_text(json.dumps({k: list(d[k]) if k == "attention" else d[k] for k in names}, sort_keys=True))


def hardware_key(fp: Fingerprint) -> str:
    """sha256 of the whole hardware and software stack (the compile cache's key: every field)."""
    return _key(fp, _HARDWARE_FIELDS)


def result_key(fp: Fingerprint) -> str:
    """sha256 of what a trainer's result depends on (GPU model, form factor, count, memory, CUDA,
    torch, NCCL, attention kernels, interconnect, python): part of every job's cache key and of
    the fingerprint of every stage that runs jobs."""
    return _key(fp, _RESULT_FIELDS)


def fingerprint(facts: dict[str, Any], smi: dict[str, Any], git_entry: dict[str, Any] | None) -> Fingerprint:
    """Pure: the interpreter's facts + nvidia-smi + git → Fingerprint. nvidia-smi wins for names
    and memory (what the driver sees); torch's device list stands in when nvidia-smi is absent."""
    gpus = smi.get("gpus") or []
    devices = facts.get("devices") or []
    name = gpus[0]["name"] if gpus else (devices[0]["name"] if devices else "")
    memory = (gpus[0].get("memory_mib") if gpus else None) or (devices[0].get("memory_mib") if devices else 0)
    count = len(gpus) or len(devices)
    topo = (smi.get("topology") or {}).get("summary") or ("single" if count == 1 else "")
    return Fingerprint(
        gpu_model=gpu_model(name) if name else "",
        gpu_name=name,
        form_factor=form_factor(name, gpus[0].get("power_max_w") if gpus else None) if name else "",
        gpu_count=count,
        gpu_memory_mib=int(memory or 0),
        driver=str(smi.get("driver_version") or ""),
        cuda=str(facts.get("cuda") or ""),
        torch=str(facts.get("torch") or ""),
        nccl=str(facts.get("nccl") or ""),
        attention=tuple(facts.get("attention") or ()),
        interconnect=topo,
        python=str(facts.get("python") or ""),
        git_commit=str((git_entry or {}).get("commit") or ""),
        git_dirty=bool((git_entry or {}).get("dirty")),
    )


@dataclass
class Machine:
    """Everything one probe learned: the interpreter's raw facts, nvidia-smi, git, the fingerprint."""

    facts: dict[str, Any]
    smi: dict[str, Any]
    git: dict[str, Any] | None
    fingerprint: Fingerprint

    def gpu_names(self) -> list[str]:
        """Every GPU's name: nvidia-smi's, else torch's device list."""
        return [g["name"] for g in self.smi.get("gpus") or []] or [d["name"] for d in self.facts.get("devices") or []]


def probe(python: str, *, packages: list[str] | tuple[str, ...] = (), torch: str = "auto",
          git_folder: Path | None = None, all_packages: bool = False, timeout_s: float = 300.0) -> Machine:
    """Ask the interpreter, nvidia-smi and git once; MachineError when the interpreter fails."""
    facts = probe_interpreter(python, packages, torch, all_packages, timeout_s)
    smi = nvidia_smi()
    entry = git_state(git_folder, with_diff=False) if git_folder is not None and git_folder.is_dir() else None
    return Machine(facts, smi, entry, fingerprint(facts, smi, entry))


# ------------------------------------------------------------------------------ machine.json


def write_machine(campaign_dir: Path, fp: Fingerprint) -> Path:
    path = campaign_dir / MACHINE_FILE
    write_json_atomic(path, fp.to_dict())
    return path


def read_machine(campaign_dir: Path) -> Fingerprint | None:
    """The fingerprint verify-pod recorded for this campaign; None before verify-pod ran."""
    try:
        return Fingerprint.from_dict(json.loads((campaign_dir / MACHINE_FILE).read_text()))
    except (OSError, json.JSONDecodeError, TypeError, ValueError):
        return None


def campaign_result_key(campaign_dir: Path) -> str:
    """result_key of the recorded machine, or "unprobed" (a stage run before verify-pod ever did)."""
    fp = read_machine(campaign_dir)
    return result_key(fp) if fp is not None else "unprobed"
