"""A diverged trainer (its score is NaN) is a KILL with a reason, never a traceback, and every
summary golfrun writes stays strict JSON (NaN is written as null)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.pipeline_campaign import run_golfrun, write_campaign


def _strict(text: str) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_a_nan_score_is_a_kill_and_no_summary_holds_nan(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, tmp_path / "data", trainer_env={"FAKE_BPB": "nan"})
    proc = run_golfrun(["run-all", "--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path)
    assert proc.returncode == 10, proc.stdout + proc.stderr  # KILL, not a crash
    assert "Traceback" not in proc.stderr
    summaries = sorted((tmp_path / "runs" / "t").glob("*/summary.json"))
    assert len(summaries) == 6
    for path in summaries:
        _strict(path.read_text())  # raises on NaN / Infinity
    _strict((tmp_path / "runs" / "t" / "05-preserve" / "provenance.json").read_text())
    gate_a = _strict((tmp_path / "runs" / "t" / "02-gate-a" / "summary.json").read_text())
    check = next(c for c in gate_a["checks"] if c["name"] == "val_bpb")  # type: ignore[index]
    assert check["passed"] is False and check["observed"] is None and "not a number" in check["detail"]


# The real trainer, diverging where a real run can: test-time training with an absurd learning rate
# turns the final (TTT) score into NaN while the trained, quantized model stays finite. (A run that
# diverges during training never writes results.json: GPTQ cannot quantize non-finite weights.)
DIVERGING_TTT = {"TTT_ENABLED": "1", "PHASED_TTT_ENABLED": "0", "TTT_DOC_LIMIT": "16", "TTT_LORA_LR": "1e30",
                 "TTT_BATCH_SIZE": "8", "ITERATIONS": "4", "SEED": "0"}


def test_the_real_trainer_writes_a_diverged_score_as_null_and_golfrun_reads_a_kill(tmp_path: Path) -> None:
    sets = [f"--set=trainer_env.{k}={v}" for k, v in DIVERGING_TTT.items()]
    proc = run_golfrun(["run-all", "--campaign", "tiny", *sets, "--set=data.synthetic.train_docs=300",
                        "--set=data.synthetic.val_docs=40", "--runs-dir", str(tmp_path / "runs")],
                       cwd=tmp_path, timeout=1200)
    assert proc.returncode == 10, proc.stdout[-4000:] + proc.stderr[-4000:]  # KILL, not ERROR
    assert "Traceback" not in proc.stderr
    runs = tmp_path / "runs" / "tiny"
    text = (runs / "02-gate-a" / "jobs" / "seed0" / "results.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    results = _strict(text)  # the trainer's own file, read by a strict parser
    final = results["final"]  # type: ignore[index]
    assert final["label"] == "quantized_ttt_lora" and final["val_loss"] is None and final["val_bpb"] is None
    finite = [e for e in results["evals"] if e["label"] == "diagnostic quantized"]  # type: ignore[index]
    assert finite and finite[0]["val_loss"] > 0  # only the diverged score is null
    gate_a = _strict((runs / "02-gate-a" / "summary.json").read_text())
    assert gate_a["verdict"] == "KILL"  # type: ignore[index]
    check = next(c for c in gate_a["checks"] if c["name"] == "val_bpb")  # type: ignore[index]
    assert check["passed"] is False and check["observed"] is None and "not a number" in check["detail"]
