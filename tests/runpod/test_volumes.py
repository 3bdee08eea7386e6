"""The challenge data on a network volume, against the loopback RunPod v2 API (the real one is
unreachable from here; tests/fixtures/runpod_server.py follows the published spec and keeps a
volume's files in a folder that each pod mounting it sees at its mount path): the first pod builds
the data on the volume, a later pod of another campaign reading the same data mounts the same
volume, in its data centre, and rebuilds nothing."""

from __future__ import annotations

import json
from pathlib import Path

from golfrun.pipeline.remote import RemoteOptions
from golfrun.pipeline.runpod_campaign import run_campaign
from tests.fixtures.runpod_server import FakeRunpod
from tests.runpod.campaigns import FAST, FAST_FOLLOW, load


def test_data_is_staged_once_on_a_network_volume_and_reused(fake_runpod: FakeRunpod, tmp_path: Path,
                                                             pod_workdir: Path) -> None:
    mount = tmp_path / "pod-volume"
    extra = {"backend.runpod.data_volume_gb": 10, "backend.runpod.data_center_ids": ["EU-RO-1", "US-GA-1"],
             "backend.runpod.volume_mount_path": str(mount)}
    lines: list[str] = []
    code = run_campaign(load(pod_workdir, extra), tmp_path / "runs" / "tiny", RemoteOptions(), lines.append,
                        timing=FAST, follow_timing=FAST_FOLLOW)
    assert code == 0, "\n".join(lines)
    [volume] = fake_runpod.volumes.values()
    assert volume["dataCenter"] == "EU-RO-1" and volume["name"].startswith("golfrun-data-") and volume["size"] == 10
    stored = tmp_path / "pods" / "volumes" / volume["id"] / "golfrun-data"
    manifest = stored / "manifest.json"
    assert manifest.is_file() and not mount.exists()  # the data outlived the pod; the mount went with it
    built = {p: p.stat().st_mtime_ns for p in stored.rglob("*") if p.is_file()}
    summary = json.loads((tmp_path / "runs" / "tiny" / "01-download-data" / "summary.json").read_text())
    assert summary["verdict"] == "PASS" and summary["decision"]["data_dir"] == str(mount / "golfrun-data")

    # another campaign reading the same data: its pod mounts the same volume and builds nothing
    lines.clear()
    code = run_campaign(load(pod_workdir, {**extra, "name": "tiny2"}), tmp_path / "runs" / "tiny2", RemoteOptions(),
                        lines.append, timing=FAST, follow_timing=FAST_FOLLOW)
    assert code == 0, "\n".join(lines)
    assert fake_runpod.count("POST", "/v2/network-volumes") == 1 and len(fake_runpod.volumes) == 1
    assert f"data volume {volume['id']}" in "\n".join(lines) and "reused" in "\n".join(lines)
    assert {p: p.stat().st_mtime_ns for p in stored.rglob("*") if p.is_file()} == built
    assert len(fake_runpod.terminated) == 2 and fake_runpod.live_pods() == []
