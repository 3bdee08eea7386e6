"""A quick stand-in trainer for the RunPod tests: the record's ★ log lines, results.json,
final_model.pt and final_model.int6.ptz, with scores that vary a little by seed and variant so the
gates have something to compare. Stdlib only.

FAKE_HOLD_FILE=<path>: while that file exists, a job in gate-b (or any job when FAKE_HOLD_ALL=1)
waits before finishing — so a test can kill the laptop side or lose the pod mid-run.
"""

import json
import os
import sys
import time
from pathlib import Path

run_id = os.environ.get("RUN_ID", "run")
seed = int(os.environ.get("SEED", "1337"))
artifact_dir = Path(os.environ["ARTIFACT_DIR"])
artifact_dir.mkdir(parents=True, exist_ok=True)
hold = os.environ.get("FAKE_HOLD_FILE", "")
if hold and (os.environ.get("FAKE_HOLD_ALL") == "1" or "gate-b" in str(artifact_dir)):
    print(f"fake trainer {run_id}: holding while {hold} exists", flush=True)
    end = time.time() + 120
    while os.path.exists(hold) and time.time() < end:
        time.sleep(0.1)
# A variant "helps" when it sets a corrector (pr1610-style) or the tiny preset's longest eval context,
# by more than the record thresholds, so the ablation promotes it and gate-b runs.
helps = os.environ.get("CORRECTOR_ALPHA") or os.environ.get("EVAL_SEQ_LEN") == "128"
bpb = 1.0700 + 0.0004 * (seed % 5) - (0.003 if helps else 0.0)
loss = bpb * 2.583
log = open(artifact_dir / f"{run_id}.txt", "w")


def say(line: str) -> None:
    print(line, flush=True)
    log.write(line + "\n")


say("Hyperparameters:")
say(f"  seed: {seed}")
say("model_params:35944602")
say(f"100/100 val_loss: {loss:.4f} val_bpb: {bpb:.4f}")
say("peak memory allocated: 400 MiB reserved: 440 MiB")
say("Serialized model quantized+brotli: 15968098 bytes")
say("Total submission size quantized+brotli: 15996697 bytes")
say(f"quantized_ttt_phased val_loss:{loss:.8f} val_bpb:{bpb:.8f} eval_time:1000ms")
log.close()
(artifact_dir / "final_model.pt").write_bytes(b"pt" * 64)
(artifact_dir / "final_model.int6.ptz").write_bytes(b"z" * 16)
final = {"label": "quantized_ttt_phased", "val_loss": loss, "val_bpb": bpb, "eval_time_ms": 1000}
mode = "eval_only" if os.environ.get("EVAL_ONLY_PATH") else "train"
results = {
    "schema": "golfrun.trainer-results/1", "run_id": run_id, "seed": seed, "mode": mode, "steps": 100,
    "train_time_ms": 1000, "stopped_early": False, "tokens_per_s": 1000.0, "peak_mem_mib": 400,
    "model_params": 35944602, "evals": [final], "final": final,
    "artifact": {"path": str(artifact_dir / "final_model.int6.ptz"), "model_bytes": 15968098, "code_bytes": 28599,
                 "total_bytes": 15996697, "compressor": "brotli"},
    "hyperparameters": {"SEED": seed, "RUN_ID": run_id}, "versions": {"python": sys.version.split()[0]},
    "world_size": 1, "device": "cpu",
}
tmp = artifact_dir / "results.json.tmp"
tmp.write_text(json.dumps(results))
os.replace(tmp, artifact_dir / "results.json")
