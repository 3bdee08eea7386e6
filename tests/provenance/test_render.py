"""The model card and results table: pure renderings of summaries."""

from __future__ import annotations

from golfrun.provenance.render import model_card, results_table, verdict_table
from golfrun.summary import JobRecord, Summary, Verdict


def _s(stage: str, verdict: Verdict, **kw: object) -> Summary:
    return Summary(stage, "c", verdict, "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", "f", **kw)  # type: ignore[arg-type]


def _res(seed: int, bpb: float) -> dict[str, object]:
    return {"seed": seed, "mode": "train", "final": {"val_loss": bpb * 2.5, "val_bpb": bpb, "eval_time_ms": 1500.0},
            "artifact": {"total_bytes": 15_996_697}}


def test_results_and_verdicts() -> None:
    summaries = {
        "gate-a": _s("gate-a", Verdict.PASS, jobs=[JobRecord("seed1234", {}, "local", result=_res(1234, 1.07216564))],
                     reasons=["val_bpb within tolerance\nsecond line"]),
        "ablation": _s("ablation", Verdict.KILL, jobs=[JobRecord("v|1", {}, "local", result=_res(1234, 1.08)),
                                                      JobRecord("crashed", {}, "local", result=None)]),
        "gate-b": _s("gate-b", Verdict.SKIPPED, reasons=["ablation is KILL"]),
    }
    table = results_table(summaries)
    assert "| gate-a | seed1234 | 1234 | train | 2.68041410 | 1.07216564 | 15,996,697 | 1.5 |" in table
    assert "| ablation | v\\|1 |" in table and "crashed" not in table
    verdicts = verdict_table(summaries)
    assert "| gate-a | PASS | val_bpb within tolerance |" in verdicts
    assert "| gate-b | SKIPPED | ablation is KILL |" in verdicts
    card = model_card("c", summaries, "c-preserve.tar.gz", "ab" * 32,
                      {"trainer": {"sha256": "cd" * 32}, "git": [{"commit": "1" * 40, "dirty": True, "diff_sha256": "e" * 64}],
                       "nvidia_smi": {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}] * 8}})
    assert card.startswith("---\nlibrary_name: golfrun\ntags:\n- parameter-golf\n")
    assert f"`c-preserve.tar.gz` (sha256 `{'ab' * 32}`)" in card
    assert "hardware: 8× NVIDIA H100 80GB HBM3" in card
    assert f"(with uncommitted changes, diff sha256 `{'e' * 64}`)" in card


def test_no_scores() -> None:
    assert results_table({}) == "_No trainer job produced a final score._"
