"""The real thing: `golfrun run-all` with no campaign runs the tiny preset end to end with the
real train_gpt.py on the CPU (synthetic data, every stage), then a rerun starts no trainer job."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tests.fixtures.pipeline_campaign import run_golfrun

STAGES = ("verify-pod", "download-data", "gate-a", "ablation", "gate-b", "preserve")


@pytest.mark.slow
def test_tiny_campaign_passes_and_reruns_from_cache(tmp_path: Path) -> None:
    first = run_golfrun(["run-all"], cwd=tmp_path, timeout=1800)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    # the progress display closes each trainer job with its outcome
    assert re.search(r"^\[gate-a\] \S+  done  .*SUCCEEDED$", first.stdout, re.M), first.stdout[-4000:]
    runs = tmp_path / "runs" / "tiny"
    summaries = {s: json.loads(next(runs.glob(f"*-{s}/summary.json")).read_text()) for s in STAGES}
    assert {s: summaries[s]["verdict"] for s in STAGES} == {s: "PASS" for s in STAGES}
    assert summaries["ablation"]["decision"]["promoted"]
    # every variant of the preset really changes the score; the TTT ones score with test-time training
    variants = {v["name"]: v for v in summaries["ablation"]["decision"]["variants"]}
    assert all(v["delta_bpb"] != 0 for v in variants.values())
    assert variants["ttt"]["label"] == variants["ttt_corrector"]["label"] == "quantized_ttt_phased"
    assert summaries["gate-b"]["decision"]["variant"] == summaries["ablation"]["decision"]["promoted"]
    assert (runs / "02-gate-a" / "checkpoint" / "final_model.pt").is_file()
    logs_before = sorted(str(p) for p in runs.rglob("job.log"))

    again = run_golfrun(["run-all"], cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("(cached:") == len(STAGES) - 1  # verify-pod checks the machine every time
    assert "starting (" not in again.stdout  # no trainer job launched
    assert sorted(str(p) for p in runs.rglob("job.log")) == logs_before

    status = run_golfrun(["status", "--json"], cwd=tmp_path, timeout=120)
    rows = json.loads(status.stdout)["stages"]
    assert all(r["verdict"] == "PASS" and r["up_to_date"] for r in rows)
    assert [r["last_run"] for r in rows] == ["ran"] + ["cached"] * (len(STAGES) - 1)

    # The paired halving rule with the real trainer, on gate-a's checkpoint: the rung jobs score half the
    # validation documents with VAL_CHUNKS=8, each reports chunk sums that add up to its score, and a
    # variant is dropped exactly when its p-value of being worse than the rung's best is under 0.05. The
    # survivors' full-set jobs are the ones above, served from the job cache. (The plain evaluator leaves
    # the stream's last partial batch unscored, so its last chunks may hold no targets; TTT scores them.)
    paired = run_golfrun(["ablation", "--set", "ablation.halving_fractions=[0.5]", "--set",
                          'ablation.halving_rule="paired"', "--set", "ablation.halving_chunks=8"], cwd=tmp_path,
                         timeout=1800)
    assert paired.returncode == 0, paired.stdout[-4000:] + paired.stderr[-4000:]
    decision = json.loads(next(runs.glob("*-ablation/summary.json")).read_text())["decision"]
    [rung] = decision["rungs"]
    assert (rung["rule"], rung["chunks"], len(rung["variants"])) == ("paired", 8, len(variants))
    best, *others = rung["variants"]
    assert best["p_worse_than_best"] is None and best["kept"]
    assert all(v["kept"] == (v["p_worse_than_best"] >= 0.05) for v in others)
    assert sorted(decision["dropped"]) == sorted(v["name"] for v in others if not v["kept"])
    for job in ["baseline", *variants]:
        final = json.loads((runs / "03-ablation" / "jobs" / f"r1-{job}" / "results.json").read_text())["final"]
        chunks = final["chunks"]
        assert len(chunks["nll"]) == 8 and chunks["targets"][0] > 0
        assert sum(chunks["nll"]) / (math.log(2) * sum(chunks["bytes"])) == pytest.approx(final["val_bpb"], rel=1e-9)
    assert "starting (eval_only" in paired.stdout and "job baseline: starting" not in paired.stdout
