"""The gpu1 campaign's ledger as one JSON document: per stage its verdict and GPU-seconds, per job
its GPU-seconds by phase, compile cache state and seconds, the trainer's timings and the TTT
warm-up / graphs compiled inside the eval timer. Usage: python3 benchmarks/gpu1_ledger.py runs/gpu1"""

import json
import sys
from pathlib import Path


def job_figures(job: dict) -> dict:
    result = job.get("result") or {}
    ttt = next((e.get("ttt") for e in result.get("evals") or [] if e.get("ttt")), None) or {}
    final = result.get("final") or {}
    return {"name": job["name"], "state": job.get("state"), "cached": job.get("cached"), "gpus": job.get("gpus"),
            "duration_s": job.get("duration_s"), "gpu_seconds": job.get("gpu_seconds"),
            "gpu_seconds_original": job.get("gpu_seconds_original"), "compile": job.get("compile"),
            "timings_s": result.get("timings_s"), "mode": result.get("mode"), "steps": result.get("steps"),
            "train_time_ms": result.get("train_time_ms"), "tokens_per_s": result.get("tokens_per_s"),
            "priming_s": result.get("priming_s"), "ttt_warmup_s": ttt.get("warmup_s"),
            "ttt_graphs_compiled_in_timer": ttt.get("graphs_compiled_in_timer"),
            "final": {k: final.get(k) for k in ("label", "val_loss", "val_bpb", "eval_time_ms")},
            "artifact_bytes": (result.get("artifact") or {}).get("total_bytes"),
            "device": result.get("device"), "versions": result.get("versions"), "reason": job.get("reason")}


def main() -> None:
    root = Path(sys.argv[1])
    stages = []
    for path in sorted(root.glob("0*-*/summary.json")):
        s = json.loads(path.read_text())
        stages.append({"stage": s["stage"], "verdict": s["verdict"], "started_at": s["started_at"],
                       "finished_at": s["finished_at"], "gpu_seconds_total": s.get("gpu_seconds_total"),
                       "usd": s.get("usd"), "reasons": s.get("reasons", [])[:2],
                       "jobs": [job_figures(j) for j in s.get("jobs", [])]})
    key = next(iter(root.glob("compile-cache/*/key.json")), None)
    print(json.dumps({"campaign": root.name, "stages": stages,
                      "compile_cache_key": json.loads(key.read_text()) if key else None}, indent=2))


if __name__ == "__main__":
    main()
