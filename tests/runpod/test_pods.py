"""Pod lifecycle against the loopback RunPod v2 API (the real one is unreachable from here) whose
pods are a real sshd on 127.0.0.1: create body, pod.json before any wait, readiness faults,
trust-on-first-use host keys, the in-pod deadline, sweep."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from golfrun.backends.runpod import pods
from golfrun.backends.runpod import remote as rp
from golfrun.backends.runpod.api import RetryPolicy, RunpodClient
from golfrun.errors import CampaignError, TransportError
from tests.fixtures.runpod_server import FakeRunpod

FAST = dict(ready_timeout_s=5.0, settle_s=0.3, poll_s=0.05, ssh_timeout_s=20.0)


def settings(workdir: Path | str = "/workspace/golfrun", **kw: object) -> pods.RunpodSettings:
    return pods.RunpodSettings(gpu_type="NVIDIA L40S", gpu_count=1, workdir=str(workdir), **{**FAST, **kw})  # type: ignore[arg-type]


def client() -> RunpodClient:
    return RunpodClient.from_env(retry=RetryPolicy(deadline_s=10, first_backoff_s=0.05))


def new_record(name: str = "t") -> pods.PodRecord:
    return pods.PodRecord(campaign=name, name=pods.pod_name(name))


def test_create_body_is_the_v2_shape() -> None:
    s = pods.RunpodSettings(gpu_type="NVIDIA H100 80GB HBM3", gpu_count=8, data_center_ids=("EU-RO-1",),
                            ports=("8888/http",), env={"A": "1"}, volume_gb=40, container_disk_gb=60)
    body = pods.create_body(s, "golfrun-pr1610-abc123", "ssh-ed25519 AAAA golfrun")
    assert body == {
        "name": "golfrun-pr1610-abc123", "image": pods.DEFAULT_IMAGE, "cloud": "SECURE", "disk": 60,
        "ports": ["8888/http", "22/tcp"], "env": {"A": "1", "PUBLIC_KEY": "ssh-ed25519 AAAA golfrun"},
        "gpu": {"id": "NVIDIA H100 80GB HBM3", "count": 8}, "dataCenterIds": ["EU-RO-1"],
        "mounts": {"persistent": {"size": 40, "path": "/workspace"}},
    }
    net = pods.create_body(pods.RunpodSettings(network_volume_id="vol1"), "n", "k")
    assert net["mounts"] == {"network": [{"volumeId": "vol1", "path": "/workspace"}]} and "dataCenterIds" not in net


@pytest.mark.parametrize("kw, message", [
    ({"interruptible": True}, "no spot pods"),
    ({"env": {"PUBLIC_KEY": "x"}}, "env.PUBLIC_KEY: golfrun sets it"),
    ({"volume_gb": 20, "network_volume_id": "v"}, "exclude each other"),
    ({"workdir": "relative"}, "must be an absolute path"),
    ({"ports": ("22",)}, "'22' is not"),
])
def test_settings_errors_name_the_key(kw: dict, message: str) -> None:
    with pytest.raises(CampaignError, match=message):
        pods.RunpodSettings(**kw).validate()  # type: ignore[arg-type]


def test_pod_names_carry_the_campaign() -> None:
    name = pods.pod_name("pr1610-repro")
    assert name.startswith("golfrun-pr1610-repro-") and pods.campaign_of(name) == "pr1610-repro"
    assert pods.campaign_of("someone-elses-pod") is None


def test_bring_up_records_id_then_trusts_host_key_on_first_use(fake_runpod: FakeRunpod, tmp_path: Path,
                                                                pod_workdir: Path) -> None:
    c, s, camp = client(), settings(pod_workdir), tmp_path / "runs" / "t"
    record = pods.create(c, s, camp, new_record(), lambda _m: None)
    on_disk = json.loads((camp / "pod.json").read_text())
    assert on_disk["pod_id"] == record.pod_id and fake_runpod.live_pods() == [record.pod_id]
    assert fake_runpod.pods[record.pod_id].status == "PROVISIONING"  # written before anything waited
    key = camp / ".pod" / pods.KEY_FILE
    assert "key" in key.name and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in (camp / "pod.json").read_text() and fake_runpod.token not in (camp / "pod.json").read_text()
    pod = pods.wait_running(c, s, camp, record, lambda _m: None)
    assert pod.status == "RUNNING" and record.ssh_port == fake_runpod.ssh_port and record.cost_per_hr == pytest.approx(0.86)
    transport = pods.connect(camp, record)
    expected = " ".join((Path(str(fake_runpod.authorized_keys)).parent / "ssh_host_ed25519_key.pub").read_text().split()[:2])
    assert record.host_key == expected  # recorded on first contact
    assert transport.run(["echo", "hi"]).check().stdout == "hi\n"
    transport.close()
    # later contacts check it: a different key for this pod is refused
    record.host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    with pytest.raises(TransportError, match="host key CHANGED"):
        pods.connect(camp, record, timeout_s=5)
    pods.terminate(c, camp, record, "test", lambda _m: None)
    assert fake_runpod.live_pods() == [] and json.loads((camp / "pod.json").read_text())["end_reason"] == "test"
    pods.terminate(c, camp, record, "again", lambda _m: None)  # idempotent


@pytest.mark.parametrize("mode, message", [
    ("stuck", r"still PROVISIONING after 1s"),
    ("restart_loop", r"restarts in a loop"),
    ("zero_gpus", r"RUNNING with zero GPUs"),
    ("error", r"went to ERROR"),
])
def test_readiness_faults_are_clear_errors(fake_runpod: FakeRunpod, tmp_path: Path, mode: str, message: str) -> None:
    fake_runpod.next_pod_mode(mode)
    c, camp = client(), tmp_path / "runs" / "t"
    s = settings(ready_timeout_s=1.0 if mode == "stuck" else 8.0, settle_s=1.0)
    record = pods.create(c, s, camp, new_record(), lambda _m: None)
    with pytest.raises(pods.PodError, match=message):
        pods.wait_running(c, s, camp, record, lambda _m: None)
    pods.terminate(c, camp, record, mode, lambda _m: None)


def test_deadline_timer_in_the_pod_ends_it_with_the_pods_own_key(fake_runpod: FakeRunpod, tmp_path: Path,
                                                                 pod_workdir: Path) -> None:
    c, s, camp = client(), settings(pod_workdir), tmp_path / "runs" / "t"
    record = pods.create(c, s, camp, new_record(), lambda _m: None)
    pods.wait_running(c, s, camp, record, lambda _m: None)
    transport = pods.connect(camp, record)
    paths = rp.PodPaths(str(pod_workdir), "t")
    rp.ensure_state_dir(transport, paths)
    rp.start_deadline(transport, paths, time.time() + 1, fake_runpod.url, pods.pod_env_file(record.pod_id))
    transport.close()
    end = time.monotonic() + 20
    while fake_runpod.live_pods() and time.monotonic() < end:
        time.sleep(0.2)
    assert fake_runpod.live_pods() == [], "the in-pod timer did not end the pod"
    deletes = [who for m, p, who in fake_runpod.requests if m == "DELETE" and p == f"/v2/pods/{record.pod_id}"]
    assert deletes == [f"pod:{record.pod_id}"]  # the pod's own key, not the laptop's
    assert pods.refresh(c, camp, record) is None and record.status == "GONE"


def test_sweep_ends_orphans_but_not_owned_pods(fake_runpod: FakeRunpod, tmp_path: Path) -> None:
    c, runs = client(), tmp_path / "runs"
    orphan = fake_runpod.create_orphan("golfrun-old-campaign-1a2b3c")
    foreign = fake_runpod.create_orphan("my-notebook")
    record = pods.create(c, settings(), runs / "live", new_record("live"), lambda _m: None)
    lines: list[str] = []
    assert [p.id for p in pods.sweep(c, [runs], yes=False, log=lines.append)] == [orphan]
    assert sorted(fake_runpod.live_pods()) == sorted([orphan, foreign, record.pod_id])  # dry: nothing ended
    assert any("--yes" in line for line in lines)
    pods.sweep(c, [runs], yes=True, log=lines.append)
    assert sorted(fake_runpod.live_pods()) == sorted([foreign, record.pod_id])
    pods.terminate(c, runs / "live", record, "test", lambda _m: None)
    c.terminate(foreign)


GOLDEN = Path(__file__).parent / "golden" / "golfrun-pod.sh"


def test_pod_script_matches_golden_file() -> None:
    """Delete tests/runpod/golden/golfrun-pod.sh to regenerate it (then review the diff)."""
    paths = rp.PodPaths("/workspace/my golfrun", "tiny")
    text = rp.render_pod_script(paths, ["source /opt/venv/bin/activate", "export HF_HOME=/workspace/hf"],
                                rp.run_all_args(paths, ["gate-b"]), rp.verify_args(paths))
    if not GOLDEN.exists():
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), f"golfrun-pod.sh changed; delete {GOLDEN} to regenerate it"


def test_pod_script_is_rendered_with_quoted_paths() -> None:
    paths = rp.PodPaths("/workspace/my golfrun", "tiny")
    text = rp.render_pod_script(paths, ["source /opt/venv/bin/activate"], rp.run_all_args(paths), rp.verify_args(paths))
    assert "cd '/workspace/my golfrun' || exit 70" in text
    assert "source /opt/venv/bin/activate" in text
    assert "python3 -m golfrun.cli run-all --campaign '/workspace/my golfrun/campaign.toml'" in text
    assert "mv '/workspace/my golfrun/.golfrun/exit_code.tmp' '/workspace/my golfrun/.golfrun/exit_code'" in text


def test_deadline_is_the_earlier_of_time_limit_and_budget() -> None:
    record = pods.PodRecord(campaign="t", name="golfrun-t-1", cost_per_hr=2.0, running_since_epoch=1000.0)
    s = pods.RunpodSettings(deadline_minutes=120)
    assert pods.deadline_epoch(s, record, now=1000.0) == 1000.0 + 7200
    # 3 USD budget at 2 USD/h, 0.5 USD already spent by an earlier pod: 1.25 h left
    record.earlier_pods = [{"pod_id": "old", "cost_usd": 0.5}]
    budget = pods.RunpodSettings(deadline_minutes=120, budget_usd=3.0)
    assert pods.deadline_epoch(budget, record, now=1000.0) == pytest.approx(1000.0 + 1.25 * 3600)
    assert record.cost_so_far(now=1000.0 + 1800) == pytest.approx(0.5 + 1.0)


def test_forward_env_takes_set_variables_and_never_the_api_key() -> None:
    from types import SimpleNamespace

    from golfrun.errors import BackendError
    from golfrun.pipeline.runpod_campaign import forwarded_env

    campaign = SimpleNamespace(backend=SimpleNamespace(runpod=SimpleNamespace(forward_env=["HF_TOKEN", "WANDB_API_KEY"])))
    assert forwarded_env(campaign, {"HF_TOKEN": "hf_x", "OTHER": "1"}) == {"HF_TOKEN": "hf_x"}
    campaign.backend.runpod.forward_env = ["RUNPOD_API_KEY"]
    with pytest.raises(BackendError, match="never sent to a pod"):
        forwarded_env(campaign, {"RUNPOD_API_KEY": "k"})


def test_deadline_script_reads_the_pods_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from golfrun.backends.runpod import pod_deadline

    monkeypatch.delenv("RUNPOD_POD_ID", raising=False)
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    env_file = tmp_path / "rp_environment"
    env_file.write_text("export RUNPOD_POD_ID=abc\nexport RUNPOD_API_KEY='pod-key'\nexport PATH=/usr/bin\n")
    found = pod_deadline.pod_env([str(env_file)])
    assert found["RUNPOD_POD_ID"] == "abc" and found["RUNPOD_API_KEY"] == "pod-key" and "PATH" not in found
    log = tmp_path / "deadline.log"
    assert pod_deadline.main(["--at", "0", "--api-url", "http://127.0.0.1:9/v2", "--env-file", str(tmp_path / "none"),
                              "--log", str(log)]) == 2  # no pod env here: says so instead of guessing
    assert "no RUNPOD_POD_ID / RUNPOD_API_KEY" in log.read_text()
