"""Uploads to the Hugging Face Hub with the real huggingface_hub client.

The real Hub is unreachable from these machines, so the client talks to the loopback Hub of
tests/fixtures/hf_hub_server.py (the routes of shared/reference/hf-hub-loopback.md), Xet off.
"""

from __future__ import annotations

import socket

import pytest

from golfrun.provenance.targets import Bundle, UploadOptions, parse_target, upload
from tests.fixtures.hf_hub_server import HubServer
from tests.provenance.conftest import DUMMY_HF_TOKEN


def test_upload_creates_a_private_model_repo_and_verifies(hf_hub: HubServer, bundle: Bundle) -> None:
    res = upload(bundle, parse_target("hf:golfer/evidence/runs/camp"))
    assert res.ok, res.error
    repo = hf_hub.repo("golfer/evidence")
    assert repo.repo_type == "model" and repo.private
    files = hf_hub.files("golfer/evidence")
    for name in ("camp-preserve.tar.gz", "README.md", "SHA256SUMS"):
        assert files[f"runs/camp/{name}"] == (bundle.folder / name).read_bytes()
    assert res.verified == bundle.sums
    assert res.commit == repo.branches["main"]
    # the tarball went through LFS, and the token reached the server
    assert ("PUT", f"/lfs-upload/{bundle.sums['camp-preserve.tar.gz']}") in hf_hub.state.requests
    assert f"Bearer {DUMMY_HF_TOKEN}" in hf_hub.state.auth_headers
    # verification re-read the Hub's metadata and downloaded every file of that commit again
    assert ("POST", f"/api/models/golfer/evidence/paths-info/{res.commit}") in hf_hub.state.requests
    for name in bundle.names:
        assert ("GET", f"/golfer/evidence/resolve/{res.commit}/runs/camp/{name}") in hf_hub.state.requests


def test_dataset_repo_type_is_explicit(hf_hub: HubServer, bundle: Bundle) -> None:
    res = upload(bundle, parse_target("hf-dataset:golfer/evidence"))
    assert res.ok, res.error
    assert hf_hub.repo("golfer/evidence", "dataset").repo_type == "dataset"
    assert ("model", "golfer/evidence") not in hf_hub.state.repos
    assert set(hf_hub.files("golfer/evidence", "dataset")) >= {"camp-preserve.tar.gz", "README.md", "SHA256SUMS"}


def test_public_when_asked(hf_hub: HubServer, bundle: Bundle) -> None:
    assert upload(bundle, parse_target("hf:golfer/open"), UploadOptions(private=False)).ok
    assert not hf_hub.repo("golfer/open").private


def test_a_retry_is_idempotent(hf_hub: HubServer, bundle: Bundle) -> None:
    first = upload(bundle, parse_target("hf:golfer/evidence"))
    commits = hf_hub.commit_count("golfer/evidence")
    second = upload(bundle, parse_target("hf:golfer/evidence"))
    assert first.ok and second.ok, second.error
    assert hf_hub.commit_count("golfer/evidence") == commits  # nothing changed, no new commit
    assert second.commit == first.commit


def test_a_flipped_byte_on_the_server_is_caught(hf_hub: HubServer, bundle: Bundle) -> None:
    assert upload(bundle, parse_target("hf:golfer/evidence")).ok
    # corrupt the stored tarball; the Hub's metadata still claims the right sha256 and size
    hf_hub.flip_byte("golfer/evidence", "camp-preserve.tar.gz")
    res = upload(bundle, parse_target("hf:golfer/evidence"))
    assert not res.ok
    assert "verification failed for camp-preserve.tar.gz" in res.error
    assert res.verified["README.md"] == bundle.sums["README.md"]
    assert (bundle.folder / "camp-preserve.tar.gz").is_file()


def test_an_unreachable_hub_keeps_the_tarball_and_says_how_to_retry(
    hf_hub: HubServer, bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    res = upload(bundle, parse_target("hf:golfer/evidence"))
    assert not res.ok
    assert res.error
    assert DUMMY_HF_TOKEN not in res.error
    assert res.retry.startswith("golfrun upload ") and res.retry.endswith("--to hf:golfer/evidence")
    assert (bundle.folder / "camp-preserve.tar.gz").is_file()
    # the same command succeeds once the Hub is back
    monkeypatch.setenv("HF_ENDPOINT", hf_hub.endpoint)
    assert upload(bundle, parse_target("hf:golfer/evidence")).ok


def test_a_refusing_hub_is_an_error_not_a_pass(hf_hub: HubServer, bundle: Bundle) -> None:
    hf_hub.refuse_all = True
    res = upload(bundle, parse_target("hf:golfer/evidence"))
    assert not res.ok and res.error


def test_regular_only_hub_works_with_xet_left_on(hf_hub: HubServer, bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server-side switch: every file 'regular', so the client never reaches for Xet."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", False)
    hf_hub.regular_only = True
    res = upload(bundle, parse_target("hf:golfer/inline"))
    assert res.ok, res.error
    assert not any(path.startswith("/lfs-upload/") for _, path in hf_hub.state.requests)
    assert hf_hub.files("golfer/inline")["camp-preserve.tar.gz"] == (bundle.folder / "camp-preserve.tar.gz").read_bytes()
