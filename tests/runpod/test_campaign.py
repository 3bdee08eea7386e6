"""`run-all --backend runpod` end to end against the loopback RunPod v2 API (the real API is
unreachable from here; tests/fixtures/runpod_server.py follows its published spec) whose pods are
a real sshd on 127.0.0.1: golfrun creates the pod, logs in over SSH with a per-run key, pushes
code and campaign, runs `golfrun run-all` detached on the "pod", follows it, pulls results with
sha256 checks and terminates the pod. The trainer is the pipeline's fake (tests/fixtures/pipeline_trainer.py); the
pipeline, the stages and the transport are the real ones.
"""

from __future__ import annotations

import json
import tarfile
import threading
from pathlib import Path

import pytest

from golfrun.backends.runpod import pods
from golfrun.errors import BackendError
from golfrun.pipeline.remote import RemoteOptions
from golfrun.pipeline.runpod_campaign import BudgetReached, run_campaign
from tests.fixtures.runpod_server import FakeRunpod
from tests.runpod.campaigns import FAST, FAST_FOLLOW, load

STAGE_DIRS = ("00-verify-pod", "01-download-data", "02-gate-a", "03-ablation", "04-gate-b", "05-preserve")


def files_containing(root: Path, needle: str) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if needle.encode() in data:
                hits.append(path)
            if path.name.endswith((".tar.gz", ".tgz")):
                with tarfile.open(path) as tar:
                    for member in tar.getmembers():
                        f = tar.extractfile(member) if member.isfile() else None
                        if f is not None and needle.encode() in f.read():
                            hits.append(path / member.name)
    return hits


def test_tiny_campaign_end_to_end_on_a_pod(fake_runpod: FakeRunpod, tmp_path: Path, pod_workdir: Path) -> None:
    campaign = load(pod_workdir)
    cdir = tmp_path / "runs" / "tiny"
    lines: list[str] = []
    code = run_campaign(campaign, cdir, RemoteOptions(), lines.append, timing=FAST, follow_timing=FAST_FOLLOW)
    text = "\n".join(lines)
    assert code == 0, text
    for stage in STAGE_DIRS:
        summary = json.loads((cdir / stage / "summary.json").read_text())
        assert summary["verdict"] == "PASS", (stage, summary.get("reasons"))
    # the pod ran the campaign itself (its log streamed home) and is gone
    assert "[pod]" in text and "gate-b: PASS" in text
    record = pods.load_record(cdir)
    assert record is not None and not record.live and record.exit_code == 0 and record.end_reason.startswith("campaign finished")
    assert fake_runpod.live_pods() == [] and len(fake_runpod.terminated) == 1
    assert record.cost_per_hr == pytest.approx(0.86) and record.cost_so_far() > 0
    # the pulled preserve tarball is intact; pod facts came home for provenance
    tarball = next((cdir / "05-preserve").glob("*.tar.gz"))
    preserve = json.loads((cdir / "05-preserve" / "summary.json").read_text())
    assert any(a["path"].endswith(tarball.name) and a["sha256"] == pods_sha(tarball) for a in preserve["artifacts"])
    with tarfile.open(tarball) as tar:
        assert not [m.name for m in tar.getmembers() if ".pod" in Path(m.name).parts or "pod_ssh_key" in m.name]
        pod_doc = json.loads(tar.extractfile("tiny-preserve/pod.json").read())  # type: ignore[union-attr]
    assert pod_doc["pod_id"] == record.pod_id and pod_doc["cost_per_hr"] == pytest.approx(0.86) and "cost_so_far_usd" in pod_doc
    # every trainer job on the pod used one compile cache on the pod's disk; the ledger priced it at the pod's rate
    caches = {json.loads(p.read_text())["full_env"]["TORCHINDUCTOR_CACHE_DIR"] for p in cdir.glob("0[234]-*/jobs/*/job.json")}
    assert len(caches) == 1 and "/runs/tiny/compile-cache/" in caches.pop()
    assert json.loads((cdir / "02-gate-a" / "summary.json").read_text())["usd"] is not None
    provenance = json.loads((cdir / "05-preserve" / "provenance.json").read_text())
    assert provenance["cluster"]["pod"]["pod_id"] == record.pod_id
    # the API key is in no file golfrun wrote, here or in what came back from the pod
    assert files_containing(tmp_path / "runs", fake_runpod.token) == []
    assert "PRIVATE KEY" not in (cdir / "pod.json").read_text()


def pods_sha(path: Path) -> str:
    from golfrun.backends.runpod.remote import sha256_file

    return sha256_file(path)


def test_lost_pod_resumes_on_a_new_pod_from_pulled_summaries(fake_runpod: FakeRunpod, tmp_path: Path,
                                                               pod_workdir: Path) -> None:
    hold = tmp_path / "hold-gate-b"
    hold.write_text("")
    campaign = load(pod_workdir, {"trainer_env.FAKE_BLOCK_FILE": str(hold), "trainer_env.FAKE_BLOCK_STAGE": "gate-b"})
    cdir = tmp_path / "runs" / "tiny"
    lines: list[str] = []
    result: dict[str, object] = {}

    def drive() -> None:
        try:
            result["code"] = run_campaign(campaign, cdir, RemoteOptions(), lines.append, timing=FAST, follow_timing=FAST_FOLLOW)
        except BaseException as exc:  # reported by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    _wait_for(lambda: (cdir / "03-ablation" / "summary.json").exists(), 90, "ablation's summary pulled home")
    first = fake_runpod.live_pods()
    assert len(first) == 1
    with fake_runpod.lock:  # the pod vanishes mid gate-b (host failure, someone's console click)
        fake_runpod._terminate(fake_runpod.pods[first[0]])
    hold.unlink()
    thread.join(120)
    assert not thread.is_alive()
    assert "error" not in result, "\n".join(lines) + f"\n{result.get('error')!r}"
    assert result["code"] == 0, "\n".join(lines)
    record = pods.load_record(cdir)
    assert record is not None and [p["pod_id"] for p in record.earlier_pods] == first
    assert len(fake_runpod.terminated) == 2 and fake_runpod.live_pods() == []
    gate_a = json.loads((cdir / "02-gate-a" / "summary.json").read_text())
    assert all(job["cached"] for job in gate_a["jobs"]), "gate-a's job ran again on the new pod"
    assert json.loads((cdir / "04-gate-b" / "summary.json").read_text())["verdict"] == "PASS"
    assert any("resuming on a new pod" in line for line in lines)


def test_budget_stops_work_and_ends_the_pod(fake_runpod: FakeRunpod, tmp_path: Path, pod_workdir: Path) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    # 0.86 USD/h: 0.0005 USD is about two seconds of pod time
    campaign = load(pod_workdir, {"backend.runpod.budget_usd": 0.0005, "trainer_env.FAKE_BLOCK_FILE": str(hold)})
    cdir = tmp_path / "runs" / "tiny"
    with pytest.raises(BudgetReached, match=r"budget reached: .* of 0\.00 \(\[backend.runpod\] budget_usd\)|budget reached"):
        run_campaign(campaign, cdir, RemoteOptions(), lambda _m: None, timing=FAST, follow_timing=FAST_FOLLOW)
    assert fake_runpod.live_pods() == []
    record = pods.load_record(cdir)
    assert record is not None and not record.live


def test_failed_bring_up_terminates_the_pod_unless_keep(fake_runpod: FakeRunpod, tmp_path: Path, pod_workdir: Path) -> None:
    campaign = load(pod_workdir, {"backend.runpod.max_rerolls": 0})  # no re-roll (tests/runpod/test_rerolls.py)
    cdir = tmp_path / "runs" / "tiny"
    fake_runpod.next_pod_mode("stuck")
    with pytest.raises(pods.PodError, match="still PROVISIONING after 1s"):
        run_campaign(campaign, cdir, RemoteOptions(), lambda _m: None, timing={**FAST, "ready_timeout_s": 1.0})
    assert fake_runpod.live_pods() == []
    fake_runpod.next_pod_mode("zero_gpus")
    with pytest.raises(pods.PodError, match="zero GPUs"):
        run_campaign(campaign, cdir, RemoteOptions(keep=True), lambda _m: None, timing=FAST)
    kept = fake_runpod.live_pods()
    assert len(kept) == 1  # --keep: left for a person to look at
    record = pods.load_record(cdir)
    assert record is not None and record.pod_id == kept[0] and record.live
    from golfrun.backends.runpod.api import RunpodClient

    pods.terminate(RunpodClient.from_env(), cdir, record, "test over", lambda _m: None)


def test_capacity_error_creates_nothing_and_says_where(fake_runpod: FakeRunpod, tmp_path: Path, pod_workdir: Path) -> None:
    campaign = load(pod_workdir, {"backend.runpod.data_center_ids": ["EU-RO-1"]})
    fake_runpod.fail_next("POST", "/v2/pods", 400)
    with pytest.raises(BackendError, match=r"no capacity for 1x NVIDIA L40S in EU-RO-1"):
        run_campaign(campaign, tmp_path / "runs" / "tiny", RemoteOptions(), lambda _m: None, timing=FAST)
    assert fake_runpod.live_pods() == []


def test_dry_run_creates_nothing(fake_runpod: FakeRunpod, tmp_path: Path, pod_workdir: Path) -> None:
    lines: list[str] = []
    assert run_campaign(load(pod_workdir), tmp_path / "runs" / "tiny", RemoteOptions(dry_run=True), lines.append) == 0
    assert fake_runpod.requests == [] and '"22/tcp"' in "\n".join(lines)


def _wait_for(check, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    import time

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_pod_created_by_an_interrupted_run_is_adopted_not_duplicated(fake_runpod: FakeRunpod, tmp_path: Path,
                                                                    pod_workdir: Path) -> None:
    cdir = tmp_path / "runs" / "tiny"
    # what a laptop that died inside POST /v2/pods leaves: a name in pod.json, a pod under that name
    record = pods.PodRecord(campaign="tiny", name="golfrun-tiny-dead01", status="CREATING")
    pods.save_record(cdir, record)
    orphan = fake_runpod.create_orphan("golfrun-tiny-dead01")
    lines: list[str] = []
    with pytest.raises(pods.PodError):  # its key is not this laptop's: SSH cannot log in, and it is ended
        run_campaign(load(pod_workdir, {"backend.runpod.max_rerolls": 0}), cdir, RemoteOptions(), lines.append,
                     timing={**FAST, "ssh_timeout_s": 2.0})  # no re-roll: tests/runpod/test_rerolls.py
    assert any(f"found pod {orphan}" in line for line in lines)
    assert fake_runpod.count("POST", "/v2/pods") == 0 and fake_runpod.live_pods() == []
