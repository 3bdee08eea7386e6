"""One torch.compile cache per campaign, shared by every trainer job of it (docs/cost.md).

The trainer's compile (≈ 300 s for the record's training graphs, 150-190 s for the TTT warm-up on an
H100/H200) is paid once per campaign instead of once per job: every job points Inductor's, Triton's
and the FX/AUTOGRAD graph caches at the same folder. The folder is

    <root>/<key>/   root = [compile_cache] dir, "" = runs/<campaign>/compile-cache

where `key` is the sha256 of the trainer's bytes, the torch version, the CUDA version and the GPU
model, so a change of any of them starts an empty folder and a stale entry is never served. The root
is under the campaign folder, which is the shared file system on Slurm (every node's job sees it)
and the pod's disk on RunPod (the pod runs the local backend in its own campaign folder).

Concurrent writers are safe: Inductor and Triton write each entry to a temporary file and rename it
into place, and a reader treats a missing or partial entry as a miss (tests/compile_cache).
Stdlib only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golfrun.fileio import sha256_text

DEFAULT_DIRNAME = "compile-cache"
KEY_FILE = "key.json"
# The variables that point torch at the cache; the job key leaves them out (they name a folder).
ENV_NAMES = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE",
             "TORCHINDUCTOR_AUTOGRAD_CACHE")
STATES = ("warm", "cold", "off")


@dataclass(frozen=True)
class MachineFacts:
    """What a compiled kernel depends on besides the trainer's code."""

    torch: str
    cuda: str
    gpu: str

    def to_dict(self) -> dict[str, str]:
        return {"torch": self.torch, "cuda": self.cuda, "gpu": self.gpu}


def facts_from_verify_pod(decision: Mapping[str, Any]) -> MachineFacts | None:
    """From verify-pod's decision.facts (torch, cuda, gpus[]); None when it did not probe torch."""
    facts = decision.get("facts") or {}
    if not facts.get("torch"):
        return None
    gpus = list(facts.get("gpus") or [])
    if not gpus:
        return MachineFacts(torch=str(facts["torch"]), cuda="none", gpu="cpu")
    return MachineFacts(torch=str(facts["torch"]), cuda=str(facts.get("cuda") or "none"), gpu=str(gpus[0]))


def cache_key(trainer_sha256: str, facts: MachineFacts) -> str:
    """The cache's subfolder name: changes with the trainer's bytes, torch, CUDA and the GPU model."""
    doc = f"trainer={trainer_sha256}\ntorch={facts.torch}\ncuda={facts.cuda}\ngpu={facts.gpu}\n"
    return sha256_text(doc)[:32]


def cache_dir(root: Path, trainer_sha256: str, facts: MachineFacts) -> Path:
    return Path(root) / cache_key(trainer_sha256, facts)


def cache_env(folder: Path) -> dict[str, str]:
    """The trainer's environment for a cache in `folder`."""
    folder = Path(folder)
    return {
        "TORCHINDUCTOR_CACHE_DIR": str(folder / "inductor"),
        "TRITON_CACHE_DIR": str(folder / "triton"),
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
    }


def prepare(folder: Path, trainer_sha256: str, facts: MachineFacts) -> None:
    """Create the folder and record what its key was made of (for a person reading it)."""
    from golfrun.fileio import write_json_atomic

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / KEY_FILE).is_file():
        write_json_atomic(folder / KEY_FILE, {"trainer_sha256": trainer_sha256, **facts.to_dict()})


def state(folder: Path) -> str:
    """"warm" when the cache already holds a compiled graph, else "cold"."""
    for sub in ("inductor", "triton"):
        root = Path(folder) / sub
        if not root.is_dir():
            continue
        for _dirpath, _dirnames, filenames in os.walk(root):
            if any(not name.startswith(".") and ".tmp" not in name for name in filenames):
                return "warm"
    return "cold"
