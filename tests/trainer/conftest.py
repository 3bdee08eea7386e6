"""Fixtures for the trainer tests: a small synthetic challenge-format dataset, the trainer imported as a
module, and a helper that runs train_gpt.py as a real subprocess (python or torchrun) at tiny sizes."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAINER = REPO / "train_gpt.py"
PYTHON = REPO / ".venv" / "bin" / "python"
TORCHRUN = REPO / ".venv" / "bin" / "torchrun"

# The tiny configuration: every size knob shrunk, loop and parallel layers kept consistent for 4 layers.
TINY_ENV = {
    "VOCAB_SIZE": "512",
    "NUM_LAYERS": "4",
    "MODEL_DIM": "64",
    "EMBEDDING_DIM": "64",
    "NUM_HEADS": "4",
    "NUM_KV_HEADS": "2",
    "XSA_LAST_N": "4",
    "ROPE_DIMS": "8",
    "NUM_LOOPS": "1",
    "LOOP_START": "1",
    "LOOP_END": "1",
    "PARALLEL_START_LAYER": "3",
    "TRAIN_SEQ_LEN": "128",
    "EVAL_SEQ_LEN": "128",
    "TRAIN_BATCH_TOKENS": "2048",
    "VAL_BATCH_TOKENS": "8192",
    "ITERATIONS": "60",
    "MAX_WALLCLOCK_SECONDS": "0",
    "WARMUP_STEPS": "2",
    "VAL_LOSS_EVERY": "0",
    "TRAIN_LOG_EVERY": "10",
    "MUON_MOMENTUM_WARMUP_STEPS": "20",
    "EMA_DECAY": "0.9",
    "GPTQ_CALIBRATION_BATCHES": "4",
    "TTT_ENABLED": "0",
    "SEED": "0",
}


def tiny_batch():
    """(ids (1, 48), cu_seqlens) of two packed documents for the tiny model (vocabulary 512)."""
    import torch
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 512, (1, 48), generator=g), torch.tensor([0, 20, 48, 48], dtype=torch.int32)


def loss_and_grads(model, params) -> tuple:
    """One training-mode forward and backward of the tiny model on tiny_batch(): (loss, grads of params)."""
    import torch
    ids, cu = tiny_batch()
    model.zero_grad(set_to_none=True)
    loss = model(ids, torch.roll(ids, -1, 1), cu, 32)
    loss.backward()
    return (loss.detach(), *(p.grad.clone() for p in params))


# The start of every script run_interpreted runs: the trainer loaded as a module under Triton's interpreter
_INTERPRETED_TRAINER = """import importlib.util, json, sys, torch
spec = importlib.util.spec_from_file_location("train_gpt", sys.argv[1])
tg = importlib.util.module_from_spec(spec); sys.modules["train_gpt"] = tg; spec.loader.exec_module(tg)
assert tg._TRITON_INTERPRETED
"""


# The environment of a process that runs kernels under Triton's CPU interpreter. One intra-op thread: after an
# interpreted launch, one of torch's two OpenMP workers now and then computed its half of the next elementwise op
# (a sqrt) to ~3e-4 of the value instead of to rounding, failing the fp32 comparisons against the torch math (CI
# at 4b7cdff; 3 of 12 runs on this machine, none of 36 with one thread). The trainer's runs here have one already.
INTERPRETER_ENV = {"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}


def run_interpreted(body: str, *args: str):
    """Runs `body` in a fresh process with train_gpt.py loaded as `tg` under Triton's CPU interpreter
    (TRITON_INTERPRET=1, read when the kernels are decorated); sys.argv[2:] are `args`. Returns the JSON that its
    last line of output holds."""
    env = {**os.environ, **INTERPRETER_ENV}
    out = subprocess.run([sys.executable, "-c", _INTERPRETED_TRAINER + body, str(TRAINER), *args], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def counted_training_and_eval(tg, model, params, fn_name: str) -> tuple:
    """loss_and_grads of the training-mode model, then one eval-mode forward, while counting the calls of the
    trainer's function `fn_name` (a fused op's torch math): ((loss, grads...), calls during both)."""
    import torch
    calls = []
    real = getattr(tg, fn_name)
    setattr(tg, fn_name, lambda *a: (calls.append(1), real(*a))[1])
    try:
        model.train()
        got = loss_and_grads(model, params)
        model.eval()
        ids, cu = tiny_batch()
        with torch.no_grad():
            model(ids, torch.roll(ids, -1, 1), cu, 32)
    finally:
        setattr(tg, fn_name, real)
    return got, len(calls)


def load_trainer():
    # One module per process: the trainer registers its torch.library ops once, bound to the module that did, so a
    # second copy (benchmarks/kernel_checks.py imports train_gpt too) would select kernels the ops never see.
    loaded = sys.modules.get("train_gpt")
    if loaded is not None and Path(loaded.__file__).resolve() == Path(TRAINER).resolve():
        return loaded
    spec = importlib.util.spec_from_file_location("train_gpt", TRAINER)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_gpt"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def tg():
    return load_trainer()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from golfrun.data.synthetic import build_dataset

    root = tmp_path_factory.mktemp("tiny_data")
    build_dataset(root, vocab_size=512, train_docs=2000, val_docs=200, train_shards=2, seed=1234)
    return root


def _base_env(data_dir: Path, artifact_dir: Path, extra: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not any(k.startswith(p) for p in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(TINY_ENV)
    env.update({"DATA_DIR": str(data_dir), "ARTIFACT_DIR": str(artifact_dir), "RUN_ID": "tiny",
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def run_trainer(data_dir: Path, artifact_dir: Path, extra: dict | None = None, nproc: int = 1,
                timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    artifact_dir.mkdir(parents=True, exist_ok=True)
    env = _base_env(data_dir, artifact_dir, extra)
    if nproc == 1:
        argv = [str(PYTHON), str(TRAINER)]
    else:
        argv = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", str(TRAINER)]
    proc = subprocess.run(argv, env=env, cwd=artifact_dir, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def train_losses_until(data_dir: Path, artifact_dir: Path, extra: dict, timeout: float = 600) -> dict[int, float]:
    """{step: train loss} of a real train_gpt.py run, stopped once it has logged its last training step
    (ITERATIONS in `extra`, TRAIN_LOG_EVERY=1): EMA, GPTQ and the evaluations after it are not what the caller
    compares, and on a CPU they cost as much as a few steps. The log is kept in artifact_dir/stdout.txt."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    env = _base_env(data_dir, artifact_dir, {"TRAIN_LOG_EVERY": "1", **extra})
    last, losses, lines = int(env["ITERATIONS"]), {}, []
    proc = subprocess.Popen([str(PYTHON), str(TRAINER)], env=env, cwd=artifact_dir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout, proc.kill)  # the deadline: a hung run is killed, and the loop below ends
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if m := re.match(r"(\d+)/\d+ train_loss: (\d+\.\d+)", line):
                losses[int(m.group(1))] = float(m.group(2))
                if int(m.group(1)) == last:
                    proc.terminate()
                    break
    finally:
        timer.cancel()
        proc.stdout.close()
        proc.wait(timeout=60)
        (artifact_dir / "stdout.txt").write_text("".join(lines))
    if last not in losses:
        raise AssertionError(f"trainer stopped before step {last} (rc={proc.returncode}):\n{''.join(lines)[-4000:]}")
    return losses


def read_results(artifact_dir: Path) -> dict:
    return json.loads((artifact_dir / "results.json").read_text())


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory):
    """One tiny 1-process training run shared by the end-to-end tests."""
    out = tmp_path_factory.mktemp("tiny_run")
    proc = run_trainer(tiny_data, out)
    return out, proc
