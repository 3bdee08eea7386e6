"""A finished campaign folder, written the way the stages write it (summaries through
golfrun.summary, results.json of schema golfrun.trainer-results/1, record-style logs), for tests
that need one without training: per-seed numbers are PR #1610's (trainer-facts §9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from golfrun.summary import STAGE_DIRS, Artifact, Check, JobRecord, Summary, Verdict

SEEDS = [0, 1, 2]
VAL_LOSS = [2.76951521, 2.77167493, 2.77232000]
VAL_BPB = [1.07216564, 1.07300174, 1.07325147]
ARTIFACT = [15_996_697, 15_995_985, 15_988_805]
EVAL_MS = [500_104.0, 515_324.0, 504_949.0]
TRAIN_MS = [587_091.0, 587_073.0, 587_175.0]
STEPS = [4832, 4834, 4860]
VARIANT_ENV = {"CORRECTOR_ALPHA": "0.3", "CORRECTOR_ORDERS": "8"}


def result(i: int, mode: str = "train") -> dict[str, Any]:
    return {
        "schema": "golfrun.trainer-results/1", "run_id": f"train_seed{SEEDS[i]}", "seed": SEEDS[i], "mode": mode,
        "steps": STEPS[i], "train_time_ms": TRAIN_MS[i], "stopped_early": True, "tokens_per_s": 6.47e6,
        "peak_mem_mib": 40029, "model_params": 35_000_000,
        "evals": [{"label": "quantized_ttt_phased", "val_loss": VAL_LOSS[i], "val_bpb": VAL_BPB[i], "eval_time_ms": EVAL_MS[i]}],
        "final": {"label": "quantized_ttt_phased", "val_loss": VAL_LOSS[i], "val_bpb": VAL_BPB[i], "eval_time_ms": EVAL_MS[i]},
        "artifact": {"path": "final_model.int6.ptz", "model_bytes": ARTIFACT[i] - 28_599, "code_bytes": 28_599,
                     "total_bytes": ARTIFACT[i], "compressor": "brotli"},
        "hyperparameters": {"SEED": SEEDS[i], "TRAIN_BATCH_TOKENS": 786432},
        "versions": {"python": "3.10.12", "torch": "2.9.1+cu128", "cuda": "12.8", "attention": "fa3"},
        "world_size": 8, "device": "cuda",
    }


def _summary(stage: str, verdict: Verdict = Verdict.PASS, **kw: Any) -> Summary:
    return Summary(stage=stage, campaign=kw.pop("campaign", "camp"), verdict=verdict,
                   started_at=kw.pop("started_at", "2026-11-24T10:00:00Z"),
                   finished_at=kw.pop("finished_at", "2026-11-24T10:30:00Z"), fingerprint="f" * 64,
                   reasons=kw.pop("reasons", [f"{stage} ok"]), **kw)


def _job(folder: Path, i: int, log_extra: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(result(i), indent=2))
    (folder / "job.json").write_text(json.dumps({"schema": "golfrun.job/1", "env": {"SEED": str(SEEDS[i])}}))
    (folder / f"train_seed{SEEDS[i]}.txt").write_text(
        f"seed: {SEEDS[i]}\ntrain_batch_tokens: 786432\n{log_extra}"
        f"quantized_ttt_phased val_loss:{VAL_LOSS[i]:.8f} val_bpb:{VAL_BPB[i]:.8f} eval_time:{EVAL_MS[i]:.0f}ms\n")
    (folder / "job.log").write_text(f"job seed{SEEDS[i]} finished\n")
    (folder / "final_model.pt").write_bytes(bytes([i]) * 4096)


def write_campaign_dir(cdir: Path, campaign: Any, gate_b: bool = True, log_extra: str = "") -> Path:
    """runs/<campaign>/ with summaries 00–04 (gate-b optional), job folders and a checkpoint."""
    name = campaign.name
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "campaign.resolved.toml").write_text(campaign.to_toml())
    (cdir / "data").mkdir(exist_ok=True)
    (cdir / "data" / "fineweb_train_000000.bin").write_bytes(b"\0" * 1024)  # never archived

    def write(s: Summary) -> None:
        d = cdir / STAGE_DIRS[s.stage]
        d.mkdir(parents=True, exist_ok=True)
        s.campaign = name
        (d / "summary.json").write_text(json.dumps(s.to_dict(), indent=2))

    write(_summary("verify-pod", checks=[Check("gpu_count", 8, 8, "==", True)]))
    write(_summary("download-data", decision={"data_dir": str(cdir / "data"), "vocab_size": 8192}))
    ga = cdir / STAGE_DIRS["gate-a"]
    _job(ga / "jobs" / "seed0", 0, log_extra)
    (ga / "checkpoint").mkdir(parents=True, exist_ok=True)
    (ga / "checkpoint" / "final_model.pt").write_bytes(b"\x01" * 8192)
    (ga / "checkpoint" / "final_model.int6.ptz").write_bytes(b"\x02" * 2048)
    write(_summary("gate-a", jobs=[JobRecord("seed0", {"SEED": "0"}, "local", ["pid:123"], "SUCCEEDED", duration_s=1809.0,
                                             result=result(0))],
                   artifacts=[Artifact("02-gate-a/checkpoint/final_model.pt", 8192, "0" * 64)]))
    write(_summary("ablation", decision={"promoted": "1a", "promoted_env": VARIANT_ENV}))
    if gate_b:
        gb = cdir / STAGE_DIRS["gate-b"]
        for i in (1, 2):
            _job(gb / "jobs" / f"seed{SEEDS[i]}", i, log_extra)
        per_seed = [{"seed": SEEDS[i], "label": "quantized_ttt_phased", "val_loss": VAL_LOSS[i], "val_bpb": VAL_BPB[i],
                     "eval_time_ms": EVAL_MS[i], "train_time_ms": TRAIN_MS[i], "artifact_bytes": ARTIFACT[i],
                     "mode": "train", "seed_": None, "trained": True} for i in range(3)]
        for p in per_seed:
            p.pop("seed_")
        write(_summary("gate-b", decision={
            "variant": "1a", "variant_env": VARIANT_ENV, "chosen_by": "ablation", "seeds": SEEDS, "per_seed": per_seed,
            "val_bpb": {"mean": sum(VAL_BPB) / 3, "std": 0.00056869, "n": 3},
            "val_loss": {"mean": sum(VAL_LOSS) / 3, "std": 0.00146898, "n": 3},
            "record_test": {"t": -3.5, "df": 3.9, "p": 0.987, "passed": False, "margin_nats": 0.005, "alpha": 0.01},
        }, jobs=[JobRecord(f"seed{s}", VARIANT_ENV, "-" if i == 0 else "local", [], "SUCCEEDED", result=result(i))
                 for i, s in enumerate(SEEDS)]))  # seed 0 is gate-a's run, reused (no folder of its own)
    return cdir
