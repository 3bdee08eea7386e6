"""TTT evaluation throughput of train_gpt.py at the record's size (trainer-facts §7.5-7.8, §9.4).

Runs run_ttt_eval in this process on a synthetic validation subset (documents with a log-normal length
distribution whose mean matches the record's 811 tokens, Zipf-distributed token ids) with a record-shape
model of RANDOM weights (the record's init plus N(0, 0.02) noise on every matrix so that no projection is
zero; throughput does not depend on the weights). Phased runs in one process: corrector on (alpha 0.3,
orders 5,8,12 as the reproduction's ablation 1b; its warm-up compiles the graphs of both runs), off, and on
again when time allows (the pair shows how much of a difference is run order). The document count leaves
a batch of fewer than 64 rows, first in the longest-first queue, as the record's 16-row batch is.
Reports scored tokens/s, the compile warm-up, graphs compiled inside the timer, the global-SGD pause and
the corrector's own time, beside the record's 40,540,160 tokens in 500.1 s on 8 GPUs.

usage: python3 benchmarks/bench_ttt.py --out results.json [--docs 1000] [--prefix-docs 200] [--budget-s 540]
       python3 benchmarks/bench_ttt.py --tiny --out /tmp/t.json     (CPU smoke run at tiny sizes)
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]
RECORD = {"tokens": 40_540_160, "eval_s": 500.104, "gpus": 8, "warmup_s": 153.3,
          "corrector_eval_s": {"off": 455.945, "alpha0.3_orders5,8,12": 472.412}}


def load_trainer():
    spec = importlib.util.spec_from_file_location("train_gpt", HERE / "train_gpt.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_gpt"] = mod
    spec.loader.exec_module(mod)
    return mod


# every size knob shrunk for a CPU smoke run (--tiny), loop and parallel layers consistent for 4 layers
TINY_ENV = {"VOCAB_SIZE": "512", "NUM_LAYERS": "4", "MODEL_DIM": "64", "EMBEDDING_DIM": "64", "NUM_HEADS": "4",
            "NUM_KV_HEADS": "2", "XSA_LAST_N": "4", "ROPE_DIMS": "8", "LOOP_START": "1", "LOOP_END": "1",
            "PARALLEL_START_LAYER": "3", "TTT_EVAL_SEQ_LEN": "256", "TTT_BATCH_SIZE": "8", "TTT_LORA_RANK": "8",
            "GLOBAL_TTT_CHUNK_TOKENS": "1024", "EVAL_SEQ_LEN": "256", "TRAIN_SEQ_LEN": "256",
            "VAL_BATCH_TOKENS": "16384"}


def random_model(tg, h, device):
    """The record's init plus N(0, 0.02) on every matrix, so that no projection is zero; returns the model
    and a copy of its state to restore between runs."""
    torch.manual_seed(0)
    model = tg.build_model(h, device)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.add_(torch.randn_like(p.float()).to(p.dtype) * 0.02)
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def synthetic_tables(tg, vocab: int, device):
    """Byte tables of made-up pieces: 1-6 bytes, 60 % with a leading space."""
    rng = np.random.default_rng(1)
    pieces = [("<unk>", "unknown"), ("<s>", "control")] + [
        (("\u2581" if rng.random() < 0.6 else "") + "x" * int(rng.integers(1, 7)), "normal") for _ in range(2, vocab)]
    return tg.ByteTables(*tg.build_byte_tables(pieces, vocab), device)


def synthetic_lengths(n_docs: int, rng) -> np.ndarray:
    """Log-normal document lengths with the record's mean (40,540,160 tokens / 50,000 documents = 811)."""
    return np.clip(rng.lognormal(mean=6.2, sigma=1.0, size=n_docs), 8, 30000).astype(np.int64)


def chunk_steps(max_lens, chunk: int = 32) -> int:
    """Chunk steps of a queue: each batch runs ceil((longest document - 1) / chunk) of them."""
    return int(sum(-(-(int(m) - 1) // chunk) for m in max_lens))


def record_steps_per_gpu(gpus: int = 8) -> float:
    """Chunk steps per GPU of a record-size queue (50,000 documents in 782 batches of 64) drawn from the
    same length model: the record's per-step time is its TTT time over this (an estimate; the real FineWeb
    lengths are not at hand)."""
    runs = []
    for seed in range(3):
        lens = np.sort(synthetic_lengths(50_000, np.random.default_rng(100 + seed)))
        runs.append(chunk_steps([lens[i:i + 64].max() for i in range(0, len(lens), 64)]) / gpus)
    return float(np.mean(runs))


def synthetic_stream(n_docs: int, vocab: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    lens = synthetic_lengths(n_docs, rng)
    ranks = np.arange(2, vocab)
    p = 1.0 / (ranks - 1.0)
    p /= p.sum()
    parts = [np.concatenate([[1], rng.choice(ranks, size=int(n) - 1, p=p)]) for n in lens]
    toks = np.concatenate(parts)
    usable = ((len(toks) - 1) // 2048) * 2048
    return torch.from_numpy(toks[:usable + 1].astype(np.int64))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--prefix-docs", type=int, default=200)
    ap.add_argument("--budget-s", type=float, default=540.0)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    t_start = time.perf_counter()
    tg = load_trainer()
    env = {"TTT_ENABLED": "1", "PHASED_TTT_ENABLED": "1",
           "PHASED_TTT_PREFIX_DOCS": str(8 if args.tiny else args.prefix_docs),
           "SEED": "0", "RUN_ID": "bench_ttt"}
    if args.tiny:
        env.update(TINY_ENV)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        from torch import _dynamo
        _dynamo.config.cache_size_limit = 16
    else:
        torch.set_num_threads(1)
    attn = tg.select_attention(device, "auto")
    h = tg.Hyperparameters(env)
    model, state = random_model(tg, h, device)
    n_docs = 24 if args.tiny else args.docs
    tokens = synthetic_stream(n_docs, h.vocab_size)
    batches, queue = tg.make_ttt_batches(h, tg.find_documents(tokens.numpy()))
    queue_rows = [len(batches[q]) for q in queue]
    steps = chunk_steps([batches[q][:, 1].max() for q in queue], h.ttt_chunk_size)
    rec_steps = record_steps_per_gpu()
    # the record's TTT time without its global-SGD pause (47.7 s, trainer-facts 9.4) per chunk step
    rec_step_s = (RECORD["eval_s"] - 47.7) / rec_steps
    tables = synthetic_tables(tg, h.vocab_size, device)
    runs = [("corrector_on", {"corrector_alpha": 0.3, "corrector_orders": "5,8,12"}),
            ("corrector_off", {"corrector_alpha": 0.0}),
            ("corrector_on_again", {"corrector_alpha": 0.3, "corrector_orders": "5,8,12"})]
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python3", "benchmarks/bench_ttt.py"] + sys.argv[1:]),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "attention": attn,
              "weights": "random (record init + N(0, 0.02) on every matrix)",
              "data": f"synthetic: {n_docs} documents, log-normal lengths (mean ~811 tokens like the record), Zipf ids",
              "stream_tokens": int(tokens.numel() - 1), "queue_rows_first_last": [queue_rows[0], queue_rows[-1]],
              "chunk_steps": steps, "record_chunk_steps_per_gpu_estimate": rec_steps,
              "record_s_per_chunk_step_estimate": rec_step_s, "model_params": tg.count_params(model),
              "settings": {k: v for k, v in h.env_values().items() if "TTT" in k or k.startswith("CORRECTOR")},
              "record": dict(RECORD, tokens_per_s_per_gpu=RECORD["tokens"] / RECORD["eval_s"] / RECORD["gpus"]),
              "runs": {}}
    lines: list[str] = []
    for name, over in runs:
        # later runs find their graphs compiled: they cost about one timed evaluation
        longest = max((r.get("eval_time_s", 0.0) for r in result["runs"].values()), default=0.0)
        if result["runs"] and time.perf_counter() - t_start + 1.15 * longest + 30 > args.budget_s:
            result["runs"][name] = {"skipped": "time budget"}
            continue
        model.load_state_dict(state)
        for k, v in over.items():
            setattr(h, k, v)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        try:
            entry = tg.run_ttt_eval(h, model, tokens, tables, 0, 1, device, lambda m: (lines.append(m), print(m, flush=True)))
        except torch.cuda.OutOfMemoryError as e:
            result["runs"][name] = {"error": f"out of memory at TTT_BATCH_SIZE={h.ttt_batch_size}: {str(e)[:300]}"}
            Path(args.out).write_text(json.dumps(result, indent=2))
            raise
        ttt = entry["ttt"]
        result["runs"][name] = {
            "label": entry["label"], "val_bpb": entry["val_bpb"], "eval_time_s": entry["eval_time_ms"] / 1000,
            "wall_s": time.perf_counter() - t, "warmup_s": ttt["warmup_s"], "scored_tokens": ttt["scored_tokens"],
            "graphs_compiled_in_timer": ttt["graphs_compiled_in_timer"], "batches": ttt["batches"],
            "tokens_per_s": ttt["tokens_per_s"], "phase1_s": ttt.get("phase1_s"), "global_sgd_s": ttt.get("global_sgd_s"),
            "global_sgd_chunks": ttt.get("global_sgd_chunks"), "corrector": ttt["corrector"],
            "peak_mem_mib": int(torch.cuda.max_memory_allocated() // 2**20) if device.type == "cuda" else None,
            "tokens_per_s_vs_record_per_gpu": ttt["tokens_per_s"] / result["record"]["tokens_per_s_per_gpu"],
        }
        r = result["runs"][name]
        r["s_per_chunk_step"] = (r["eval_time_s"] - (r["global_sgd_s"] or 0.0)) / steps
        r["record_s_per_chunk_step_ratio"] = rec_step_s / r["s_per_chunk_step"]
        Path(args.out).write_text(json.dumps(result, indent=2))
    # the first run also pays first-use costs (allocator growth, library handles): compare with the
    # corrector-on run that followed the off run when there is one
    off = result["runs"].get("corrector_off")
    on = next((r for r in (result["runs"].get("corrector_on_again"), result["runs"].get("corrector_on"))
               if r and "eval_time_s" in r), None)
    if off and on and "eval_time_s" in off:
        result["corrector_overhead"] = {"eval_time_ratio": on["eval_time_s"] / off["eval_time_s"],
                                        "corrector_share_of_eval": on["corrector"]["seconds_max_rank"] / on["eval_time_s"],
                                        "record_eval_time_ratio": 472.412 / 455.945}
    result["total_s"] = time.perf_counter() - t_start
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
