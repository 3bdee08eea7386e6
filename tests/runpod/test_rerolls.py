"""Re-rolls and the price cap against the loopback RunPod v2 API (tests/fixtures/runpod_server.py
follows the published spec; the real API is unreachable from here) whose pods are the real sshd
on 127.0.0.1: a pod that never boots and a pod the preflight finds slow are terminated and
another created, each attempt's cost kept in pod.json and summed; a pod above the hourly price cap
is ended before anything runs on it.

The slow pod: this CPU machine cannot be a slow H100, so a `setup` line exports
GOLFRUN_PREFLIGHT_TEST_FIGURES (an override golfrun/preflight_probe.py merges over what it
measured, used only by tests) for the first verify-pod only: the first pod reports a 300 TFLOP/s
H100, the second this machine's real figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from golfrun.backends.runpod import pods
from golfrun.backends.runpod.api import RunpodClient
from golfrun.pipeline.remote import RemoteOptions
from golfrun.pipeline.runpod_campaign import run_campaign
from golfrun.preflight_probe import TEST_ENV
from tests.fixtures.runpod_server import FakeRunpod
from tests.runpod.campaigns import FAST, FAST_FOLLOW, load

SLOW_H100 = {"device": "cuda", "h2d_gbs": 50.0, "allreduce": {},
             "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "matmul_bf16_tflops": 300.0}]}


def end_pod(cdir: Path) -> pods.PodRecord:
    record = pods.load_record(cdir)
    assert record is not None
    pods.terminate(RunpodClient.from_env(), cdir, record, "test over", lambda _m: None)
    return record


def test_a_pod_that_never_boots_is_replaced(fake_runpod: FakeRunpod, tmp_path: Path, pod_workdir: Path) -> None:
    campaign = load(pod_workdir, {"backend.runpod.max_rerolls": 1})
    cdir = tmp_path / "runs" / "tiny"
    lines: list[str] = []
    fake_runpod.next_pod_mode("error")
    code = run_campaign(campaign, cdir, RemoteOptions(detach=True), lines.append, timing=FAST)
    assert code == 0, "\n".join(lines)
    record = end_pod(cdir)
    assert len(fake_runpod.terminated) == 2 and len(record.earlier_pods) == 1
    first = record.earlier_pods[0]
    assert first["end_reason"].startswith("re-roll: did not boot") and "ERROR" in first["end_reason"]
    assert first["cost_usd"] == 0.0  # never RUNNING: never billed
    assert "re-roll 1 of 1" in "\n".join(lines)
    # the second failure to boot is one too many: terminated, and the error reaches the caller
    fake_runpod.next_pod_mode("error")
    fake_runpod.next_pod_mode("error")
    with pytest.raises(pods.PodError, match="went to ERROR"):
        run_campaign(campaign, tmp_path / "runs2" / "tiny", RemoteOptions(), lambda _m: None, timing=FAST)
    assert fake_runpod.live_pods() == []


def test_slow_pod_rejected_by_the_preflight_then_a_reroll_passes(fake_runpod: FakeRunpod, tmp_path: Path,
                                                                   pod_workdir: Path) -> None:
    mark = tmp_path / "first-verify-done"
    slow = f"""if [ "${{1:-}}" = verify ] && [ ! -e {mark} ]; then touch {mark}; export {TEST_ENV}='{json.dumps(SLOW_H100)}'; fi"""
    campaign = load(pod_workdir, {"backend.runpod.max_rerolls": 2, "verify_pod.preflight": "on",
                                  "backend.runpod.setup": [f"export PATH={Path(sys.executable).parent}:$PATH", slow]})
    cdir = tmp_path / "runs" / "tiny"
    lines: list[str] = []
    code = run_campaign(campaign, cdir, RemoteOptions(detach=True), lines.append, timing=FAST, follow_timing=FAST_FOLLOW)
    text = "\n".join(lines)
    assert code == 0, text
    record = end_pod(cdir)
    assert len(record.earlier_pods) == 1 and len(fake_runpod.terminated) == 2
    first = record.earlier_pods[0]
    assert first["end_reason"].startswith("re-roll: verify-pod: preflight:matmul_bf16_tflops 300.0")
    assert first["cost_usd"] > 0  # it ran verify-pod: billed, and counted
    assert record.cost_so_far() == pytest.approx(first["cost_usd"] + record.pod_cost())
    assert "re-roll 1 of 2" in text
    assert "golfrun run-all started on pod" in text  # the second pod passed verify-pod on this machine's figures
    # the first pod's verdict came home with its figures (detached: the second pod's stays on the pod)
    summary = json.loads((cdir / "00-verify-pod" / "summary.json").read_text())
    assert summary["verdict"] == "KILL" and summary["decision"]["preflight"]["test_figures"] is True


def test_a_pod_above_the_price_cap_is_ended_before_anything_runs(fake_runpod: FakeRunpod, tmp_path: Path,
                                                                   pod_workdir: Path) -> None:
    campaign = load(pod_workdir, {"backend.runpod.max_usd_per_hour": 0.5})  # the fake's L40S costs 0.86 USD/h
    cdir = tmp_path / "runs" / "tiny"
    with pytest.raises(pods.PriceCapError, match=r"0\.86 USD/h is above \[backend.runpod\] max_usd_per_hour = 0\.50"):
        run_campaign(campaign, cdir, RemoteOptions(), lambda _m: None, timing=FAST)
    assert fake_runpod.live_pods() == [] and len(fake_runpod.terminated) == 1
    record = pods.load_record(cdir)
    assert record is not None and record.end_reason.startswith("price cap") and not record.run_started_at
