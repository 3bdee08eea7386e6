"""Fixtures of the preservation tests.

`hf_hub`: the loopback Hub of tests/fixtures/hf_hub_server.py (the real Hub is unreachable from
these machines), with the real huggingface_hub client pointed at it: HF_ENDPOINT and a dummy
HF_TOKEN in the environment (golfrun reads both at call time), Xet switched off (the fixture does
not speak the Xet protocol) and an empty HF cache per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from golfrun.provenance.targets import Bundle
from tests.fixtures.hf_hub_server import HubServer

DUMMY_HF_TOKEN = "hf_dummy_loopback_token_0123456789"


@pytest.fixture
def hf_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    import huggingface_hub.constants as hf_constants

    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_TOKEN", DUMMY_HF_TOKEN)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bundle(tmp_path: Path) -> "Bundle":
    """A small real bundle: a tarball with an LFS-sized member, README.md and SHA256SUMS."""
    from golfrun.provenance.tarball import Member, build_tarball, render_sums, sha256_file

    folder = tmp_path / "05-preserve"
    folder.mkdir()
    members = [Member("02-gate-a/summary.json", data=b'{"verdict": "PASS"}\n'),
               Member("02-gate-a/checkpoint/final_model.int6.ptz", data=bytes(range(256)) * 64)]
    info = build_tarball(folder / "camp-preserve.tar.gz", "camp-preserve", members)
    (folder / "README.md").write_text("---\nlibrary_name: golfrun\n---\n# camp\n")
    (folder / "SHA256SUMS").write_text(render_sums({info.path.name: info.sha256,
                                                    "README.md": sha256_file(folder / "README.md")}))
    return Bundle.from_tarball(info.path)
