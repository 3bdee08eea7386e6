"""The test services themselves work: a job runs on the Slurm cluster with fake GPUs, and the sshd
accepts the generated key with strict host-key checking."""

from __future__ import annotations

import pytest

from tests.services.slurm import SlurmCluster
from tests.services.sshd import SshdServer


@pytest.mark.slurm
def test_slurm_runs_a_gpu_job(slurm_cluster: SlurmCluster, tmp_path) -> None:
    out = tmp_path / "out.txt"
    r = slurm_cluster.run("sbatch", "--parsable", f"--gpus-per-node={slurm_cluster.gpus}", "-o", str(out),
                          "--wrap", "echo CVD=$CUDA_VISIBLE_DEVICES")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip().split(";")[0]
    assert slurm_cluster.wait_state(job_id, {"COMPLETED", "FAILED"}) == "COMPLETED", slurm_cluster.logs()
    assert out.read_text().strip() == "CVD=0,1"


@pytest.mark.sshd
def test_sshd_runs_a_command(sshd_server: SshdServer) -> None:
    r = sshd_server.run(["printf", "%s|", "a b", "it's"])
    assert r.returncode == 0, r.stderr + sshd_server.logs()
    assert r.stdout == "a b|it's|"


@pytest.mark.sshd
def test_sshd_rejects_an_unknown_host_key(sshd_server: SshdServer, tmp_path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [a.replace(str(sshd_server.known_hosts), str(empty)) for a in sshd_server.ssh_argv()]
    import subprocess

    r = subprocess.run([*argv, f"{sshd_server.user}@{sshd_server.host}", "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "Host key verification failed" in r.stderr


def test_free_ports_are_distinct() -> None:
    from tests.services.common import free_ports

    # picked one at a time, 400 ports repeat with near certainty (a released port comes straight back)
    ports = free_ports(400)
    assert len(set(ports)) == 400


@pytest.mark.slurm
def test_slurm_starts_on_new_ports_when_a_picked_port_is_taken(tmp_path, monkeypatch) -> None:
    # a CI run lost a session's cluster to this: slurmctld's port was bound before it started
    import os
    import socket
    import tempfile
    from pathlib import Path

    import tests.services.slurm as slurm

    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real_free_ports = slurm.free_ports
    picks = [[taken, real_free_ports(1)[0]]]
    monkeypatch.setattr(slurm, "free_ports", lambda n: picks.pop() if picks else real_free_ports(n))
    state = Path(tempfile.mkdtemp(prefix="golfrun-slurm-"))
    os.chmod(state, 0o755)
    cluster = SlurmCluster(state)
    try:
        cluster.start()
        assert f"SlurmctldPort={taken}" not in cluster.conf.read_text()
        assert cluster.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle"
    finally:
        cluster.stop()
        squatter.close()


@pytest.mark.slurm
def test_slurm_start_waits_out_a_client_that_hangs(monkeypatch) -> None:
    """A Slurm client that reaches a port another process holds (listening, never answering: the case
    above, when slurmctld has not yet died of its bind error) times out; start() takes that as "not up
    yet" and goes on polling, instead of failing with the client's TimeoutExpired (a CI run did)."""
    import os
    import subprocess
    import tempfile
    from pathlib import Path

    real_run = SlurmCluster.run
    hung = []

    def run(self, *argv, timeout_s=30):
        if argv[0] == "sinfo" and not hung:
            hung.append(argv)
            raise subprocess.TimeoutExpired(list(argv), timeout_s)
        return real_run(self, *argv, timeout_s=timeout_s)

    monkeypatch.setattr(SlurmCluster, "run", run)
    state = Path(tempfile.mkdtemp(prefix="golfrun-slurm-"))
    os.chmod(state, 0o755)
    cluster = SlurmCluster(state)
    try:
        cluster.start()
        assert hung and cluster.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle"
    finally:
        cluster.stop()
