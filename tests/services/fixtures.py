"""Session-scoped pytest fixtures for the real test services (loaded by tests/conftest.py).

- `sshd_server`: a real OpenSSH server on 127.0.0.1 (key-only, generated host and user keys,
  known_hosts). Attributes: host, port, user, key_path, known_hosts, target ("user@host:port"),
  rsync_rsh; methods: run(argv) → CompletedProcess (ssh client, strict host-key checking),
  ssh_argv().
- `slurm_cluster`: a real single-node Slurm with 2 fake GPUs. Attributes: env (os.environ +
  SLURM_CONF), conf, partition, gres ("gpu:2"), gpus, cpus, node; methods: run(*argv),
  job_state(id), wait_state(id, states), logs().
- `slurm_sshd`: an sshd whose sessions get SLURM_CONF of `slurm_cluster` (a login node).

Missing binaries skip the tests with the reason, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.common import ServiceMissing, in_ci
from tests.services.slurm import SlurmCluster
from tests.services.sshd import SshdServer


def _missing(exc: ServiceMissing) -> None:
    if in_ci():
        pytest.fail(f"CI=true but a test service is missing: {exc}", pytrace=False)
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    server = SshdServer(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
    except ServiceMissing as exc:
        _missing(exc)
    except BaseException:
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    # not under tmp_path_factory: munged wants every folder above its socket open to all (0700 there)
    state = Path(tempfile.mkdtemp(prefix="golfrun-slurm-"))
    os.chmod(state, 0o755)
    cluster = SlurmCluster(state)
    try:
        cluster.start()
    except ServiceMissing as exc:
        _missing(exc)
    except BaseException:
        cluster.stop()
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_sshd(tmp_path_factory: pytest.TempPathFactory, slurm_cluster: SlurmCluster) -> Iterator[SshdServer]:
    server = SshdServer(tmp_path_factory.mktemp("sshd-slurm"), setenv={"SLURM_CONF": str(slurm_cluster.conf)})
    try:
        server.start()
    except ServiceMissing as exc:
        _missing(exc)
    except BaseException:
        server.stop()
        raise
    try:
        yield server
    finally:
        server.stop()
