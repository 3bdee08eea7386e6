"""rsync and SFTP targets against a real OpenSSH server on 127.0.0.1 (tests/services), host keys
checked: uploads are read back and hashed; a corrupted remote copy and an unknown host are caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from golfrun.provenance.targets import Bundle, UploadOptions, parse_target, upload

pytestmark = pytest.mark.sshd


def _opts(sshd_server) -> UploadOptions:  # type: ignore[no-untyped-def]
    return UploadOptions(ssh_key=str(sshd_server.key_path), known_hosts=str(sshd_server.known_hosts), timeout_s=60)


@pytest.mark.parametrize("scheme", ["rsync", "sftp"])
def test_upload_and_read_back(sshd_server, bundle: Bundle, tmp_path: Path, scheme: str) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / f"remote-{scheme}" / "deep" / "camp"
    spec = f"{scheme}:{sshd_server.user}@{sshd_server.host}:{sshd_server.port}:{dest}"
    res = upload(bundle, parse_target(spec), _opts(sshd_server))
    assert res.ok, res.error
    assert res.verified == bundle.sums
    for name in bundle.names:
        assert (dest / name).read_bytes() == (bundle.folder / name).read_bytes()
    again = upload(bundle, parse_target(spec), _opts(sshd_server))  # a retry is harmless
    assert again.ok, again.error


def test_rsync_read_back_is_hashed(sshd_server, bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """The read-back is compared with SHA256SUMS: simulate a remote that stores something else by
    corrupting the copy between upload and read-back."""
    import golfrun.provenance.remote as remote

    dest = tmp_path / "remote"
    real_run = remote.local.run
    calls = {"n": 0}

    def corrupting_run(argv, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:  # after the upload, before the first read-back
            f = dest / "camp-preserve.tar.gz"
            data = bytearray(f.read_bytes())
            data[50] ^= 0xFF
            f.write_bytes(bytes(data))
        return real_run(argv, **kw)

    monkeypatch.setattr(remote.local, "run", corrupting_run)
    spec = f"rsync:{sshd_server.user}@{sshd_server.host}:{sshd_server.port}:{dest}"
    res = upload(bundle, parse_target(spec), _opts(sshd_server))
    assert not res.ok
    assert "verification failed for camp-preserve.tar.gz" in res.error


@pytest.mark.parametrize("scheme", ["rsync", "sftp"])
def test_unknown_host_key_is_refused_and_the_tarball_kept(sshd_server, bundle: Bundle, tmp_path: Path, scheme: str) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    opts = UploadOptions(ssh_key=str(sshd_server.key_path), known_hosts=str(empty), timeout_s=30)
    dest = tmp_path / "never"
    res = upload(bundle, parse_target(f"{scheme}:{sshd_server.user}@{sshd_server.host}:{sshd_server.port}:{dest}"), opts)
    assert not res.ok
    assert not dest.exists()
    assert "--known-hosts" in res.retry
    assert (bundle.folder / "camp-preserve.tar.gz").is_file()
