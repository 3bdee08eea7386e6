"""Per-chunk-step profile of the TTT evaluation of train_gpt.py (one GPU, record-shape model, random weights).

Same model and synthetic data as bench_ttt.py, but several short, non-phased runs in ONE process (the compile
warm-up is paid once), each limited by a deadline, with every call of the compiled TTT forward timed: the time
between two calls is one chunk step (forward, backward, optimizer, bookkeeping) of the window width W of the
earlier call. The wrapper synchronizes the GPU at every call, so CPU/GPU overlap is lost (a small upper bias).
Recompiles show as TORCH_LOGS=recompiles lines and as torch._dynamo counters printed after each run.

usage: python3 benchmarks/ttt_probe.py --out X.json --docs 1280 --runs "sorted:10;sorted:17;limit:64" --deadline-s 420
  sorted:B  -> TTT_EVAL_BATCHES=B of the length-sorted batches (documents of similar length, as the record's)
  limit:N   -> TTT_DOC_LIMIT=N: the first N documents of the stream (mixed lengths in one batch)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


class Deadline(Exception):
    pass


class TimedFwd:
    def __init__(self, fn, rec):
        self.fn, self.rec = fn, rec

    def __call__(self, model, lora, x, y, bias):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        r = self.rec
        if r["timed"]:
            if r["last"] is not None:
                r["steps"].append(dict(r["last"], step_s=now - r["last"]["t"]))
            if now > r["deadline"]:
                raise Deadline()
            r["last"] = {"t": now, "W": int(x.shape[1]), "bsz": int(x.shape[0]), "grad": torch.is_grad_enabled(),
                         "bias": bias is not None}
        return self.fn(model, lora, x, y, bias)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--docs", type=int, default=1280)
    ap.add_argument("--runs", default="sorted:10;sorted:17;limit:64")
    ap.add_argument("--deadline-s", type=float, default=420.0)
    ap.add_argument("--run-cap-s", type=float, default=150.0)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run of this script at tiny sizes")
    args = ap.parse_args()
    t_start = time.perf_counter()
    spec = importlib.util.spec_from_file_location("bench_ttt", HERE / "bench_ttt.py")
    bt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bt)
    tg = bt.load_trainer()
    from torch import _dynamo
    from torch._dynamo.utils import counters
    _dynamo.config.cache_size_limit = 16
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    device = torch.device("cpu") if args.tiny else torch.device("cuda", 0)
    attn = tg.select_attention(device, "auto")
    env = {"TTT_ENABLED": "1", "PHASED_TTT_ENABLED": "0", "SEED": "0", "RUN_ID": "ttt_probe"}
    if args.tiny:
        env.update(bt.TINY_ENV)
    h = tg.Hyperparameters(env)
    model, state = bt.random_model(tg, h, device)
    tokens = bt.synthetic_stream(args.docs, h.vocab_size)
    tables = bt.synthetic_tables(tg, h.vocab_size, device)
    docs_all = tg.find_documents(tokens.numpy())
    rec = {"timed": False, "last": None, "steps": [], "deadline": 0.0}
    real_compile = torch.compile

    def compile_timed(fn, **kw):
        return TimedFwd(real_compile(fn, **kw), rec)

    result = {"device": "cpu" if args.tiny else torch.cuda.get_device_name(device), "torch": torch.__version__, "attention": attn,
              "model_params": tg.count_params(model), "docs_in_stream": int(len(docs_all)),
              "settings": {k: v for k, v in h.env_values().items() if "TTT" in k}, "runs": {}}
    out = Path(args.out)
    for spec_s in [s for s in args.runs.split(";") if s.strip()]:
        kind, val = spec_s.split(":")
        remaining = args.deadline_s - (time.perf_counter() - t_start)
        if remaining < 20:
            result["runs"][spec_s] = {"skipped": "deadline"}
            continue
        h.ttt_eval_batches = val if kind == "sorted" else ""
        h.ttt_doc_limit = int(val) if kind == "limit" else 0
        docs = tg.select_documents(h, docs_all)
        batches, queue = tg.make_ttt_batches(h, docs)
        sel = [batches[q] for q in queue]
        lens = np.concatenate([b[:, 1] for b in sel])
        padded = sum(tg.ttt_batch_cost(h, b) for b in sel)
        model.load_state_dict(state)
        counters.clear()
        rec.update(timed=False, last=None, steps=[], warmup_line=None)
        rec.pop("t0", None)
        entry_info = {"docs": int(len(lens)), "doc_len_min": int(lens.min()), "doc_len_max": int(lens.max()),
                      "doc_len_mean": float(lens.mean()), "padded_tokens": int(padded),
                      "scored_tokens_expected": int((lens - 1).sum())}
        print(f"probe: run {spec_s} {entry_info}", flush=True)

        def log0(m):
            print(m, flush=True)
            if "compile warmup done" in m:
                rec["warmup_line"] = m
            if "beginning TTT eval timer" in m:
                rec["timed"] = True
                rec["t0"] = time.perf_counter()
                rec["deadline"] = min(t_start + args.deadline_s, rec["t0"] + args.run_cap_s)
        torch.compile = compile_timed
        t = time.perf_counter()
        status = "finished"
        ttt = None
        try:
            entry = tg.run_ttt_eval(h, model, tokens, tables, 0, 1, device, log0)
            ttt = entry["ttt"]
        except Deadline:
            status = "stopped at deadline"
        finally:
            torch.compile = real_compile
            rec["timed"] = False
        wall = time.perf_counter() - t
        steps = rec["steps"]
        by_w: dict[int, list[float]] = {}
        for s in steps:
            by_w.setdefault(s["W"], []).append(s["step_s"])
        slow = [s for s in steps if s["step_s"] > 1.0]
        step_sum = sum(s["step_s"] for s in steps)
        timed_s = (time.perf_counter() - rec["t0"]) if "t0" in rec else None
        e = dict(entry_info, status=status, warmup_line=rec.get("warmup_line"), wall_s=wall, timed_s=timed_s, chunk_steps=len(steps), step_s_sum=step_sum,
                 step_s_median_by_W={str(w): float(np.median(v)) for w, v in sorted(by_w.items())},
                 steps_over_1s=[{k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items() if k != "t"} for s in slow[:40]],
                 dynamo_counters={k: dict(v) for k, v in counters.items()})
        if ttt is not None:
            e.update(warmup_s=ttt["warmup_s"], scored_tokens=ttt["scored_tokens"], tokens_per_s=ttt["tokens_per_s"],
                     eval_time_s=entry["eval_time_ms"] / 1000)
        else:
            done_padded = sum(s["bsz"] * s["W"] for s in steps)
            e.update(padded_tokens_done=int(done_padded))
        if steps:
            e["padded_tokens_per_s_steps"] = sum(s["bsz"] * s["W"] for s in steps) / max(step_sum, 1e-9)
        result["runs"][spec_s] = e
        print("probe: result " + json.dumps(e), flush=True)
        out.write_text(json.dumps(result, indent=2))
        if not args.tiny:
            torch.cuda.empty_cache()
    result["total_s"] = time.perf_counter() - t_start
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
