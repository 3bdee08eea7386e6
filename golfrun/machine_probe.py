"""The interpreter half of golfrun/machine.py: run as a file by the trainer's interpreter.

    python golfrun/machine_probe.py --packages '["torch", "numpy"]' --torch auto|yes|no [--all-packages]

prints one JSON object: python, executable, packages{name: {importable, version}}, torch, cuda,
cudnn, nccl, cuda_available, devices[{name, memory_mib, capability, sm_count}], attention[…],
and `distributions` (every installed distribution, with --all-packages). Standard library only at
import time, so it runs under any interpreter; torch is imported only in this child process
(golfrun itself never imports torch). `--torch auto` reads torch's version file without importing
torch and imports it only where nvidia-smi exists (a GPU to ask about): a full import costs
seconds on a busy CPU machine. It must not fail on a machine without torch or GPUs.
"""

from __future__ import annotations

import sys

# Run as a file, Python puts golfrun/ first on sys.path, where golfrun's own modules (secrets.py,
# …) shadow the standard library's for torch (torch._dynamo then fails to import): take it off.
if sys.path and sys.path[0] and __file__.startswith(sys.path[0].rstrip("/") + "/"):
    sys.path.pop(0)

import argparse
import importlib
import importlib.metadata as md
import importlib.util
import json
import shutil
from typing import Any

# The attention kernels the trainer can use, best first (train_gpt.py select_attention), and the
# module each needs. "sdpa" is always there once torch is.
ATTENTION_MODULES = (("fa3", "flash_attn_interface"), ("fa2", "flash_attn"), ("varlen", "torch.nn.attention.varlen"))


def package_facts(names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        version = None
        if spec is not None:
            for dist in (name, name.replace("_", "-"), "python-" + name):
                try:
                    version = md.version(dist)
                    break
                except md.PackageNotFoundError:
                    pass
        out[name] = {"importable": spec is not None, "version": version}
    return out


def torch_version_file() -> dict[str, Any]:
    """torch/version.py read without importing torch."""
    ns: dict[str, Any] = {}
    path = md.distribution("torch").locate_file("torch/version.py")
    exec(compile(open(str(path)).read(), str(path), "exec"), ns)  # noqa: S102 (torch's own file)
    return {"torch": ns.get("__version__"), "cuda": ns.get("cuda"), "git_version": ns.get("git_version")}


def torch_facts(mode: str) -> dict[str, Any]:
    out: dict[str, Any] = {"torch": None, "cuda": None, "cudnn": None, "nccl": None,
                           "cuda_available": False, "devices": [], "attention": []}
    try:
        out.update(torch_version_file())
    except Exception as exc:  # no torch: reported, never fatal
        out["torch_error"] = repr(exc)
        return out
    if mode == "no" or (mode == "auto" and not (out.get("cuda") and shutil.which("nvidia-smi"))):
        return out
    try:
        import torch

        out["torch"], out["cuda"] = torch.__version__, torch.version.cuda
        out["cuda_available"] = bool(torch.cuda.is_available())
        if torch.backends.cudnn.is_available():
            out["cudnn"] = torch.backends.cudnn.version()
        if out["cuda_available"]:
            v = torch.cuda.nccl.version()
            out["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                out["devices"].append({"name": p.name, "memory_mib": int(p.total_memory // 2**20),
                                       "capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count})
    except Exception as exc:
        out["torch_error"] = repr(exc)
        return out
    for name, module in ATTENTION_MODULES:
        try:
            importlib.import_module(module)
            out["attention"].append(name)
        except Exception:
            pass
    out["attention"].append("sdpa")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--packages", default="[]")
    parser.add_argument("--torch", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument("--all-packages", action="store_true")
    args = parser.parse_args(argv)
    facts: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable,
                             "packages": package_facts([str(p) for p in json.loads(args.packages)])}
    facts.update(torch_facts(args.torch))
    if args.all_packages:
        try:
            facts["distributions"] = sorted({f"{d.metadata['Name']}=={d.version}" for d in md.distributions()
                                             if d.metadata["Name"]})
        except Exception as exc:
            facts["distributions_error"] = repr(exc)
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
