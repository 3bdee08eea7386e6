"""What a pod held with no trainer job running (set-up, verify-pod, data, pulls) is in the ledger's
totals: a campaign run end to end against the loopback RunPod v2 API (tests/fixtures/runpod_server.py
follows its published spec; its pods are a real sshd on 127.0.0.1) with the pipeline's fake trainer,
then `status --json`'s ledger and `spend` read from the campaign folder that came home, and a rerun
whose [budget] that spend exceeds is refused before a new pod is created."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from golfrun.backends.runpod import pods
from golfrun.budget import spent
from golfrun.cli import main
from golfrun.errors import BudgetError
from golfrun.pipeline.remote import RemoteOptions
from golfrun.pipeline.runpod_campaign import run_campaign
from tests.fixtures.runpod_server import FakeRunpod
from tests.runpod.campaigns import FAST, FAST_FOLLOW, load, overrides


def test_the_pods_gpu_time_with_no_job_running_is_counted(fake_runpod: FakeRunpod, tmp_path, pod_workdir) -> None:
    campaign = load(pod_workdir)
    runs = tmp_path / "runs"
    lines: list[str] = []
    assert run_campaign(campaign, runs / "tiny", RemoteOptions(), lines.append, timing=FAST,
                        follow_timing=FAST_FOLLOW) == 0, "\n".join(lines)
    record = pods.load_record(runs / "tiny")
    assert record is not None and not record.live and record.gpu_count >= 1
    held = record.up_seconds() * record.gpu_count  # from the start and end times the runner recorded
    assert held > 0

    args = ["status", "--json", "--campaign", "tiny", "--runs-dir", str(runs)]
    status = CliRunner().invoke(main, args + [f"--set={o}" for o in overrides(pod_workdir)])
    assert status.exit_code == 0, status.output
    ledger = json.loads(status.output)["ledger"]
    assert ledger["pod_gpu_seconds"] == pytest.approx(held, abs=1e-3)
    # the fake trainer runs on this CPU: every job second is a CPU-second, so all the pod's GPU time was idle
    assert ledger["gpu_seconds_total"] == 0.0 and ledger["cpu_seconds_total"] > 0
    assert ledger["pod_idle_gpu_seconds"] == pytest.approx(held, abs=1e-3)
    text = CliRunner().invoke(main, [a for a in args if a != "--json"] + [f"--set={o}" for o in overrides(pod_workdir)])
    assert "with no job running" in text.output, text.output

    # `golfrun spend` and the [budget]: the account paid for those GPU-seconds, so they count
    s = spent(runs / "tiny")
    assert s.pod_idle_gpu_seconds == pytest.approx(held, abs=1e-3) and s.gpu_seconds == pytest.approx(held, abs=1e-3)
    # the report's spend is the same: the pods' GPU time and what of it no job held
    from golfrun.report.collect import collect

    from golfrun.report.render import render_html, minutes

    data = collect(runs / "tiny")
    paid = data.spend
    assert paid.pod_gpu_seconds == pytest.approx(held, abs=1e-3) and paid.pod_idle_gpu_seconds == pytest.approx(held, abs=1e-3)
    assert paid.gpu_seconds == pytest.approx(s.gpu_seconds, abs=1e-3) and paid.usd_source == "pods"
    assert f'pods, no job running</td><td></td><td></td><td class="num">{minutes(paid.pod_idle_gpu_seconds)}' \
        in render_html(data, {})

    # a campaign that has spent its [budget] (this folder's pods count) gets no new pod: refused before create
    created = fake_runpod.count("POST", "/v2/pods")
    hours = held / 3600 / 2
    with pytest.raises(BudgetError) as refused:
        run_campaign(load(pod_workdir, {"budget.gpu_hours": hours}), runs / "tiny", RemoteOptions(), lines.append,
                     timing=FAST, follow_timing=FAST_FOLLOW)
    assert fake_runpod.count("POST", "/v2/pods") == created and fake_runpod.live_pods() == []
    assert f"of [budget] gpu_hours = {hours:g}: a new pod not started" in str(refused.value), str(refused.value)


def test_a_retired_pod_keeps_its_gpu_time() -> None:
    record = pods.PodRecord(campaign="c", name="n", pod_id="p2", cost_per_hr=2.0, gpu_count=2,
                            running_since_epoch=1000.0, ended_at="1970-01-01T00:26:40Z")  # 600 s up
    assert record.up_gpu_seconds() == pytest.approx(1200.0)
    retired = pods.retire(record)
    assert retired.earlier_pods[-1]["up_s"] == pytest.approx(600.0) and retired.earlier_pods[-1]["gpu_count"] == 2
    # a pod retired before up_s was kept: its cost at its rate, with the GPU count of the pod now
    retired.earlier_pods.append({"pod_id": "p0", "cost_per_hr": 2.0, "cost_usd": 0.5})  # 900 s
    retired.gpu_count = 2
    assert retired.up_gpu_seconds() == pytest.approx(1200.0 + 1800.0)
