"""The campaign's compile cache: its key, and real torch.compile (Inductor on the CPU) filling one
folder from two processes at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from golfrun import compile_cache
from golfrun.compile_cache import MachineFacts

H200 = MachineFacts(torch="2.11.0+cu130", cuda="13.0", gpu="NVIDIA H200")


def test_key_changes_with_trainer_bytes_torch_cuda_and_gpu() -> None:
    base = compile_cache.cache_key("a" * 64, H200)
    assert compile_cache.cache_key("a" * 64, H200) == base  # stable
    assert compile_cache.cache_key("b" * 64, H200) != base
    assert compile_cache.cache_key("a" * 64, MachineFacts("2.12.0+cu130", "13.0", "NVIDIA H200")) != base
    assert compile_cache.cache_key("a" * 64, MachineFacts("2.11.0+cu130", "12.8", "NVIDIA H200")) != base
    assert compile_cache.cache_key("a" * 64, MachineFacts("2.11.0+cu130", "13.0", "NVIDIA H100 80GB HBM3")) != base


def test_facts_come_from_verify_pods_probe() -> None:
    decision = {"facts": {"torch": "2.11.0+cu130", "cuda": "13.0", "gpus": ["NVIDIA H200", "NVIDIA H200"]}}
    assert compile_cache.facts_from_verify_pod(decision) == H200
    cpu = compile_cache.facts_from_verify_pod({"facts": {"torch": "2.13.0+cpu", "cuda": None, "gpus": []}})
    assert cpu == MachineFacts("2.13.0+cpu", "none", "cpu")
    assert compile_cache.facts_from_verify_pod({"facts": {"torch": None}}) is None  # no probe: no cache


def test_state_is_cold_until_an_entry_is_written(tmp_path: Path) -> None:
    folder = compile_cache.cache_dir(tmp_path, "a" * 64, H200)
    compile_cache.prepare(folder, "a" * 64, H200)
    assert compile_cache.state(folder) == "cold"
    env = compile_cache.cache_env(folder)
    Path(env["TRITON_CACHE_DIR"]).mkdir(parents=True)
    (Path(env["TRITON_CACHE_DIR"]) / ".tmp_partial").write_text("")  # a writer's temporary file
    assert compile_cache.state(folder) == "cold"
    (Path(env["TRITON_CACHE_DIR"]) / "kernel.cubin").write_text("x")
    assert compile_cache.state(folder) == "warm"


COMPILE = textwrap.dedent("""
    import json, sys, torch
    from torch._dynamo.utils import counters

    def f(x):
        return torch.nn.functional.gelu(x @ x.T).sum(dim=-1) * 3.0

    x = torch.arange(64.0).reshape(8, 8) / 64
    out = torch.compile(f, dynamic=False)(x)
    assert torch.allclose(out, f(x), atol=1e-5)
    print(json.dumps({"hit": counters["inductor"]["fxgraph_cache_hit"], "miss": counters["inductor"]["fxgraph_cache_miss"]}))
""")


def _compile(cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, **compile_cache.cache_env(cache), "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "0"}
    return subprocess.Popen([sys.executable, "-c", COMPILE], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_jobs_filling_the_cache_at_once_leave_it_usable(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import json

    cache = tmp_path / "cache"
    first, second = _compile(cache), _compile(cache)  # both start cold, both write
    for proc in (first, second):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    assert compile_cache.state(cache) == "warm"
    third = _compile(cache)
    out, err = third.communicate(timeout=600)
    assert third.returncode == 0, err[-2000:]
    counts = json.loads(out.strip().splitlines()[-1])
    assert counts["hit"] >= 1 and counts["miss"] == 0  # served from what the two writers left
