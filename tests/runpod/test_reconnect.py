"""The laptop side killed mid-run, then `golfrun pod status|logs|pull|down` picking the pod up,
and `golfrun pod sweep`: against the loopback RunPod v2 API (the real one is unreachable from here)
whose pods are a real sshd on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from golfrun.backends.runpod import pods
from golfrun.cli import main
from tests.fixtures.runpod_server import FakeRunpod
from tests.runpod.campaigns import overrides

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_client_killed_mid_run_then_logs_pull_down(fake_runpod: FakeRunpod, tmp_path: Path, pod_workdir: Path) -> None:
    hold = tmp_path / "hold-gate-b"
    hold.write_text("")
    runs, extra = tmp_path / "runs", {"trainer_env.FAKE_BLOCK_FILE": str(hold), "trainer_env.FAKE_BLOCK_STAGE": "gate-b"}
    cdir = runs / "tiny"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    laptop = subprocess.Popen([sys.executable, "-m", "tests.runpod.drive_campaign", str(cdir), str(pod_workdir),
                               json.dumps(extra)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and laptop.poll() is None:
            record = pods.load_record(cdir) if (cdir / "pod.json").exists() else None
            if record is not None and record.run_started_at:
                break
            time.sleep(0.2)
        assert laptop.poll() is None, laptop.communicate()[0]
        time.sleep(1.0)
        laptop.send_signal(signal.SIGKILL)  # the laptop goes away; the pod must not care
        laptop.wait(10)
    finally:
        if laptop.poll() is None:
            laptop.kill()
            laptop.wait(10)
    record = pods.load_record(cdir)
    assert record is not None and record.live and fake_runpod.live_pods() == [record.pod_id]

    sets = [item for s in overrides(pod_workdir, extra) for item in ("--set", s)]
    common = ["--runs-dir", str(runs), *sets]
    code, out = cli("pod", "status", *common)
    assert code == 0 and record.pod_id in out and "running" in out and "0.86" in out, out
    hold.unlink()  # gate-b may finish now
    code, out = cli("pod", "logs", "--follow", "--interval", "0.3", *common)
    assert code == 0 and "gate-b: PASS" in out and "exited 0" in out, out
    code, out = cli("pod", "pull", *common)
    assert code == 0 and "sha256 checked" in out, out
    assert json.loads((cdir / "05-preserve" / "summary.json").read_text())["verdict"] == "PASS"
    from tests.runpod.test_campaign import files_containing

    # the laptop's API key never went to the pod (the pod's timer uses the pod's own key)
    assert files_containing(pod_workdir, fake_runpod.token) == []
    code, out = cli("pod", "down", *common)
    assert code == 0 and "terminated" in out, out
    assert fake_runpod.live_pods() == []
    code, out = cli("pod", "status", *common)
    assert code == 0 and "TERMINATED" in out and "golfrun pod down" in out


def test_sweep_command_lists_then_ends_orphans(fake_runpod: FakeRunpod, tmp_path: Path) -> None:
    orphan = fake_runpod.create_orphan("golfrun-forgotten-abc123")
    code, out = cli("pod", "sweep", "--runs-dir", str(tmp_path / "runs"))
    assert code == 0 and orphan in out and "--yes" in out and fake_runpod.live_pods() == [orphan]
    code, out = cli("pod", "sweep", "--runs-dir", str(tmp_path / "runs"), "--yes")
    assert code == 0 and orphan in out and fake_runpod.live_pods() == []


def test_pod_commands_without_a_pod_say_how_to_start_one(fake_runpod: FakeRunpod, tmp_path: Path) -> None:
    code, out = cli("pod", "status", "--runs-dir", str(tmp_path / "runs"))
    assert code == 12 and "no pod recorded for campaign 'tiny'" in out and "golfrun pod up" in out


def test_missing_api_key_is_one_clear_line(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    code, out = cli("pod", "sweep", "--runs-dir", str(tmp_path))
    assert code == 12 and out.strip() == "golfrun: error: RUNPOD_API_KEY is not set: create an API key in the RunPod console and export it"


def test_pod_up_detaches_then_run_all_reattaches_without_a_second_pod(fake_runpod: FakeRunpod, tmp_path: Path,
                                                                      pod_workdir: Path) -> None:
    from golfrun.pipeline.remote import RemoteOptions
    from golfrun.pipeline.runpod_campaign import run_campaign
    from tests.runpod.campaigns import FAST_FOLLOW, load

    runs = tmp_path / "runs"
    sets = [item for s in overrides(pod_workdir) for item in ("--set", s)]
    # `pod up` has no timing options: give the settings the tests' short waits
    import dataclasses

    from tests.runpod.campaigns import FAST

    original = pods.RunpodSettings.from_campaign
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pods.RunpodSettings, "from_campaign",
                      classmethod(lambda cls, c: dataclasses.replace(original(c), **FAST)))
        code, out = cli("pod", "up", "--runs-dir", str(runs), *sets)
    assert code == 0 and "detached" in out, out
    record = pods.load_record(runs / "tiny")
    assert record is not None and record.live and record.run_started_at and fake_runpod.live_pods() == [record.pod_id]
    lines: list[str] = []
    assert run_campaign(load(pod_workdir), runs / "tiny", RemoteOptions(), lines.append,
                        timing={"settle_s": 0.0, "poll_s": 0.05}, follow_timing=FAST_FOLLOW) == 0, "\n".join(lines)
    assert any("re-attaching to pod" in line for line in lines)
    assert fake_runpod.count("POST", "/v2/pods") == 1 and fake_runpod.live_pods() == []
