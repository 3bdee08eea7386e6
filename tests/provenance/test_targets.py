"""Target parsing and the folder target: upload, read-back verification, failure keeps the tarball."""

from __future__ import annotations

from pathlib import Path

import pytest

from golfrun.errors import ProvenanceError
from golfrun.provenance.targets import Bundle, UploadOptions, parse_target, retry_command, upload


@pytest.mark.parametrize(
    "spec, fields",
    [
        ("hf:me/repo", dict(kind="hf", repo_id="me/repo", repo_type="model", revision="main", path="")),
        ("hf:me/repo@v1/runs/tiny", dict(kind="hf", repo_id="me/repo", revision="v1", path="runs/tiny")),
        ("hf-dataset:org/data.set/x", dict(kind="hf", repo_id="org/data.set", repo_type="dataset", path="x")),
        ("rsync:alice@box:/srv/keep", dict(kind="rsync", user="alice", host="box", port=22, path="/srv/keep")),
        ("rsync:box:keep", dict(kind="rsync", user="", host="box", path="keep")),
        ("sftp:bob@10.0.0.2:2222:/data", dict(kind="sftp", user="bob", host="10.0.0.2", port=2222, path="/data")),
        ("dir:runs/tiny/preserved", dict(kind="dir", path="runs/tiny/preserved")),
    ],
)
def test_parse_target(spec: str, fields: dict[str, object]) -> None:
    t = parse_target(spec)
    for k, v in fields.items():
        assert getattr(t, k) == v, k


@pytest.mark.parametrize("spec", ["hf:norepo", "s3:bucket/x", "rsync:nohostpath", "dir:", "hf:me/repo@", "plain"])
def test_bad_targets_name_the_forms(spec: str) -> None:
    with pytest.raises(ProvenanceError, match="preserve target"):
        parse_target(spec)


def test_dir_upload_is_verified_and_idempotent(bundle: Bundle, tmp_path: Path) -> None:
    dest = tmp_path / "kept" / "campaign"
    first = upload(bundle, parse_target(f"dir:{dest}"))
    assert first.ok, first.error
    assert set(first.verified) == {"camp-preserve.tar.gz", "README.md", "SHA256SUMS"}
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", "SHA256SUMS", "camp-preserve.tar.gz"]
    again = upload(bundle, parse_target(f"dir:{dest}"))
    assert again.ok and again.verified == first.verified


def test_unwritable_dir_fails_keeps_the_tarball_and_says_how_to_retry(bundle: Bundle, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = upload(bundle, parse_target(f"dir:{blocker}/sub"))
    assert not res.ok
    assert str(blocker) in res.error
    assert (bundle.folder / "camp-preserve.tar.gz").is_file()
    assert res.retry == f"golfrun upload {bundle.folder / 'camp-preserve.tar.gz'} --to dir:{blocker}/sub"


def test_a_changed_local_copy_is_never_uploaded(bundle: Bundle) -> None:
    tar = bundle.folder / "camp-preserve.tar.gz"
    data = bytearray(tar.read_bytes())
    data[10] ^= 1
    tar.write_bytes(bytes(data))
    with pytest.raises(ProvenanceError, match="local copy changed"):
        Bundle.from_tarball(tar)


def test_retry_command_carries_the_options() -> None:
    t = parse_target("sftp:u@h:2200:/x")
    cmd = retry_command("/r/05-preserve/c.tar.gz", t, UploadOptions(ssh_key="/k/id", known_hosts="/k/kh"))
    assert cmd == "golfrun upload /r/05-preserve/c.tar.gz --to sftp:u@h:2200:/x --ssh-key /k/id --known-hosts /k/kh"
    assert "--public" in retry_command("/c.tar.gz", parse_target("hf:a/b"), UploadOptions(private=False))


def test_cli_upload_verifies_and_fails_with_the_retry(bundle: Bundle, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from golfrun.cli import main

    tar = str(bundle.folder / "camp-preserve.tar.gz")
    ok = CliRunner().invoke(main, ["upload", tar, "--to", f"dir:{tmp_path / 'a'}", "--to", f"dir:{tmp_path / 'b'}"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("verified (3 files)") == 2
    blocker = tmp_path / "f"
    blocker.write_text("")
    bad = CliRunner().invoke(main, ["upload", tar, "--to", f"dir:{blocker}/x"])
    assert bad.exit_code == 12
    assert f"retry: golfrun upload {tar} --to dir:{blocker}/x" in bad.output
    wrong = CliRunner().invoke(main, ["upload", tar, "--to", "ftp:host/x"])
    assert wrong.exit_code == 2 and "unknown scheme 'ftp'" in wrong.output
