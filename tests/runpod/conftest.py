"""Fixtures for the RunPod tests: a loopback RunPod v2 API (tests/fixtures/runpod_server.py; the
real API is unreachable from the test machines) whose pods are a real sshd on 127.0.0.1.

Every test that uses `fake_runpod` must leave no pod behind: at teardown the fake's pod list has
to be empty (any leftover is terminated, then the test fails).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.runpod_server import FakePod, FakeRunpod
from tests.services.common import ServiceMissing, all_pids, in_ci
from tests.services.sshd import SshdServer


@pytest.fixture(scope="session")
def pod_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """The machine behind every fake pod (own instance: the fake edits its authorized_keys)."""
    server = SshdServer(tmp_path_factory.mktemp("runpod-sshd"))
    try:
        server.start()
    except ServiceMissing as exc:
        if in_ci():
            pytest.fail(f"CI=true but sshd is missing: {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


def kill_pod_processes(workdir: Path) -> None:
    """What ends when a pod ends: the process groups golfrun started there (setsid; pid files), and
    any process running from the pod's disk (trainers start sessions of their own)."""
    for pid in all_pids():
        if pid == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(workdir)) or str(workdir) in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    state = workdir / ".golfrun"
    for pid_file in sorted(state.glob("*.pid")) if state.is_dir() else []:
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            continue
        for sig_target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                sig_target()
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def pod_workdir(tmp_path: Path) -> Path:
    return tmp_path / "pod-disk" / "workspace"


@pytest.fixture
def fake_runpod(pod_sshd: SshdServer, tmp_path: Path, pod_workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRunpod]:
    def on_terminate(pod: FakePod) -> None:
        kill_pod_processes(pod_workdir)
        shutil.rmtree(pod_workdir, ignore_errors=True)  # the container disk goes with the pod

    fake = FakeRunpod(pod_sshd.host, pod_sshd.port, tmp_path / "pods", ssh_user=pod_sshd.user,
                      authorized_keys=pod_sshd.state_dir / "authorized_keys", on_terminate=on_terminate)
    with fake:
        monkeypatch.setenv("RUNPOD_API_KEY", fake.token)
        monkeypatch.setenv("RUNPOD_API_URL", fake.url)
        monkeypatch.setenv("GOLFRUN_RUNPOD_ENV_FILE", str(tmp_path / "pods" / "{pod_id}" / "rp_environment"))
        try:
            yield fake
        finally:
            left = fake.live_pods()
            with fake.lock:
                for pod_id in left:
                    fake._terminate(fake.pods[pod_id])
            assert not left, f"pods left behind: {left}"
