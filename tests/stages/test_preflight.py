"""The preflight benchmark: its checks against the expected-figures table (pure, on figures shaped
as golfrun/preflight_probe.py prints them), the real benchmark on this CPU machine (it skips what
needs a GPU and says so), and verify-pod KILLing a slow machine.

The slow machine is made with GOLFRUN_PREFLIGHT_TEST_FIGURES, an override the probe merges over
its measured figures: it exists for tests only (this CPU machine cannot be an H100 otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from golfrun import preflight
from golfrun.cli import main
from golfrun.gates.checks import verdict_from
from golfrun.preflight_expected import EXPECTED
from golfrun.preflight_probe import TEST_ENV
from golfrun.summary import Verdict
from tests.fixtures.pipeline_campaign import write_campaign


def h100(tflops: list[float], h2d: float = 50.0, busbw: float | None = 380.0, attention_ok: bool = True) -> dict:
    return {"schema": "golfrun.preflight/1", "device": "cuda", "torch": "2.11.0+cu130",
            "gpus": [{"index": i, "name": "NVIDIA H100 80GB HBM3", "matmul_bf16_tflops": t} for i, t in enumerate(tflops)],
            "h2d_gbs": h2d, "allreduce": {"gpus": len(tflops), "mib": 256, "busbw_gbs": busbw, "algbw_gbs": 200.0},
            "attention": {"kernel": "fa3", "ok": attention_ok, "ms": 3.1, **({} if attention_ok else {"error": "ImportError"})},
            "disk": {"path": "/data", "mb_s": 1800.0, "bytes": 1 << 30, "files": 3}, "skipped": {}}


def by_name(checks: list) -> dict:
    return {c.name: c for c in checks}


def test_a_healthy_h100_sxm_passes_and_a_slow_gpu_is_killed_with_its_figures() -> None:
    verdict, _ = verdict_from(preflight.checks(h100([720.0] * 8), 0.8))
    assert verdict is Verdict.PASS
    found = preflight.checks(h100([720.0] * 7 + [410.0]), 0.8)  # one GPU ~40 % slow
    verdict, reasons = verdict_from(found)
    assert verdict is Verdict.KILL
    mm = by_name(found)["preflight:matmul_bf16_tflops"]
    assert mm.observed == 410.0 and mm.limit == round(0.8 * EXPECTED[("H100", "SXM")].matmul_bf16_tflops, 1)
    assert "GPU7 410" in mm.detail and "410" in reasons[0]


def test_slow_interconnect_copy_and_a_broken_kernel_each_fail() -> None:
    found = by_name(preflight.checks(h100([720.0] * 8, h2d=12.0, busbw=90.0, attention_ok=False), 0.8))
    assert not found["preflight:h2d_gbs"].passed and not found["preflight:allreduce_busbw_gbs"].passed
    assert not found["preflight:attention"].passed and "ImportError" in found["preflight:attention"].detail
    assert found["preflight:disk_read_mb_s"].passed  # measured, reported, never a verdict


def test_the_fraction_is_the_campaigns() -> None:
    figures = h100([600.0] * 8)  # 85 % of the expected 710
    assert verdict_from(preflight.checks(figures, 0.8))[0] is Verdict.PASS
    assert verdict_from(preflight.checks(figures, 0.9))[0] is Verdict.KILL


def test_pcie_card_is_held_to_its_own_row_and_an_unknown_gpu_only_warns() -> None:
    pcie = h100([500.0])
    pcie["gpus"][0]["name"] = "NVIDIA H100 PCIe"
    pcie["allreduce"] = {}
    found = by_name(preflight.checks(pcie, 0.8))
    assert found["preflight:matmul_bf16_tflops"].limit == round(0.8 * EXPECTED[("H100", "PCIe")].matmul_bf16_tflops, 1)
    odd = h100([100.0])
    odd["gpus"][0]["name"] = "NVIDIA RTX 6000 Ada Generation"
    found = preflight.checks(odd, 0.8)
    warn = by_name(found)["preflight:expected"]
    assert warn.severity == "warn" and not warn.passed and "measured only" in warn.detail
    assert verdict_from(found)[0] is Verdict.PASS


def test_every_expected_row_says_where_it_came_from() -> None:
    for (model, ff), row in EXPECTED.items():
        assert row.source and row.matmul_bf16_tflops < row.matmul_peak_tflops, (model, ff)


def test_real_preflight_on_this_cpu_machine_skips_the_gpu_figures_and_says_why(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["preflight", "--json", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["verdict"] == "PASS" and doc["preflight"]["device"] == "cpu"
    for figure in ("matmul_bf16_tflops", "h2d_gbs", "allreduce"):
        assert "no CUDA GPU" in doc["preflight"]["skipped"][figure]
    assert doc["preflight"]["attention"] == {**doc["preflight"]["attention"], "kernel": "sdpa", "ok": True}
    assert "disk" in doc["preflight"]["skipped"]  # no data folder yet
    assert doc["machine"]["gpu_count"] == 0 and len(doc["machine"]["hardware_key"]) == 64


def test_verify_pod_kills_a_slow_machine_and_explains_with_the_figures(tmp_path: Path, shared_data: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    write_campaign(tmp_path, shared_data)
    slow = h100([300.0] * 2, busbw=None)
    monkeypatch.setenv(TEST_ENV, json.dumps({k: slow[k] for k in ("gpus", "h2d_gbs", "allreduce", "device")}))
    base = ["--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(main, ["verify-pod", "--force", *base, "--set", "verify_pod.preflight=\"on\""])
    assert result.exit_code == 10, result.output
    summary = json.loads((tmp_path / "runs" / "t" / "00-verify-pod" / "summary.json").read_text())
    assert summary["decision"]["preflight"]["test_figures"] is True
    assert "preflight:matmul_bf16_tflops" in summary["reasons"][0] and "300" in summary["reasons"][0]
    explained = CliRunner().invoke(main, ["explain", "verify-pod", *base])
    assert "300" in explained.output and "matmul" in explained.output


def test_the_h200_row_holds_the_measured_h200_figures() -> None:
    """benchmarks/results/h200-preflight.json: `golfrun preflight --json` on one H200. Its GPU
    figures pass the table at the default fraction and the table is within 10 % of them (its
    attention check failed there on a probe bug since fixed: the figures alone are checked)."""
    doc = json.loads((Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "h200-preflight.json").read_text())
    figures = {k: v for k, v in doc["preflight"].items() if k != "attention"}
    found = by_name(preflight.checks({**figures, "attention": {"kernel": "sdpa", "ok": True}}, 0.8))
    assert found["preflight:matmul_bf16_tflops"].passed and found["preflight:h2d_gbs"].passed
    row = EXPECTED[("H200", "SXM")]
    measured = figures["gpus"][0]["matmul_bf16_tflops"]
    assert abs(row.matmul_bf16_tflops - measured) / measured < 0.1 and abs(row.h2d_gbs - figures["h2d_gbs"]) / figures["h2d_gbs"] < 0.1
    assert "h200-preflight.json" in row.source
