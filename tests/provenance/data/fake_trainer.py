"""A fast stand-in for train_gpt.py that honours the trainer contract (docs/architecture.md,
contract 1) and behaves badly on purpose: it prints its whole environment, secrets included, and a
private key file's contents, as a crashing script's debug dump might. golfrun must keep all of that
out of everything it writes. Score: 2.0 + 0.001 * SEED + FAKE_DELTA_BPB (nats = 2.5 × bpb)."""

import json
import os
import sys
import time

art = os.environ.get("ARTIFACT_DIR", ".")
os.makedirs(art, exist_ok=True)
seed = int(os.environ.get("SEED", "1337"))
run_id = os.environ.get("RUN_ID", f"run_seed{seed}")
mode = "eval_only" if os.environ.get("EVAL_ONLY_PATH") else "train"
bpb = 2.0 + 0.001 * seed + float(os.environ.get("FAKE_DELTA_BPB", "0"))
loss = 2.5 * bpb

lines = [f"{k}={v}" for k, v in sorted(os.environ.items())]
key_file = os.environ.get("FAKE_DUMP_FILE")
if key_file and os.path.isfile(key_file):
    lines.append(open(key_file).read())
lines += [
    f"seed: {seed}",
    "step:10/10 train_loss:5.0000 train_time:1000ms step_avg:100.00ms",
    f"quantized_ttt_phased val_loss:{loss:.8f} val_bpb:{bpb:.8f} eval_time:1500ms",
]
text = "\n".join(lines) + "\n"
sys.stdout.write(text)
sys.stdout.flush()
with open(os.path.join(art, f"{run_id}.txt"), "w") as f:
    f.write("\n".join(lines[-3:]) + "\n")
for name, size in (("final_model.pt", 4096), ("final_model.int6.ptz", 1024)):
    with open(os.path.join(art, name), "wb") as f:
        f.write(bytes([seed % 256]) * size)
result = {
    "schema": "golfrun.trainer-results/1", "run_id": run_id, "seed": seed, "mode": mode, "steps": 10,
    "train_time_ms": 1000.0 if mode == "train" else 0.0, "stopped_early": False, "tokens_per_s": 1000.0,
    "peak_mem_mib": 10.0, "model_params": 1000,
    "evals": [{"label": "quantized_ttt_phased", "val_loss": loss, "val_bpb": bpb, "eval_time_ms": 1500.0}],
    "final": {"label": "quantized_ttt_phased", "val_loss": loss, "val_bpb": bpb, "eval_time_ms": 1500.0},
    "artifact": {"path": "final_model.int6.ptz", "model_bytes": 1024, "code_bytes": 2000, "total_bytes": 3024,
                 "compressor": "brotli"},
    "hyperparameters": {"SEED": seed}, "versions": {"python": sys.version.split()[0], "torch": "2.13.0+cpu"},
    "world_size": 1, "device": "cpu",
}
time.sleep(0.05)
tmp = os.path.join(art, "results.json.tmp")
with open(tmp, "w") as f:
    json.dump(result, f)
os.replace(tmp, os.path.join(art, "results.json"))
