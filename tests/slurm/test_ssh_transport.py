"""golfrun.transport.ssh against a real OpenSSH server on 127.0.0.1 (tests/services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from golfrun.errors import TransportError
from golfrun.transport.ssh import SshTarget, SshTransport, remote_command
from tests.services.sshd import SshdServer

pytestmark = pytest.mark.sshd

NASTY = ["a b", "it's", "$HOME", "; echo pwned", "`id`", "back\\slash", "new\nline", "*", ""]


def _transport(s: SshdServer, **kw) -> SshTransport:
    kw.setdefault("known_hosts", s.known_hosts)
    return SshTransport(s.target, key_path=s.key_path, **kw)


def test_parse_target() -> None:
    assert SshTarget.parse("me@login.example:2200") == SshTarget("login.example", "me", 2200)
    assert SshTarget.parse("login") == SshTarget("login", None, 22)
    assert SshTarget.parse("u@[::1]:2222") == SshTarget("::1", "u", 2222)
    with pytest.raises(TransportError, match="port 'x'"):
        SshTarget.parse("u@h:x")


def test_remote_command_quotes_every_word() -> None:
    line = remote_command(["echo", "a b"], cwd="/w d", env={"K": "v w"})
    assert line == "cd -- '/w d' && env 'K=v w' echo 'a b'"


def test_run_keeps_argv_words_intact(sshd_server: SshdServer, tmp_path: Path) -> None:
    work = tmp_path / "dir with 'quote' and space"
    work.mkdir()
    with _transport(sshd_server) as t:
        r = t.run(["python3", "-c", "import os,sys; print(repr(sys.argv[1:])); print(os.getcwd()); print(os.environ['X_Y'])", *NASTY],
                  cwd=str(work), env={"X_Y": "v $a 'b'"})
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == repr(NASTY)
        assert lines[1] == str(work)
        assert lines[2] == "v $a 'b'"
        assert not (tmp_path / "pwned").exists()


def test_exit_code_stdin_and_timeout(sshd_server: SshdServer) -> None:
    with _transport(sshd_server) as t:
        r = t.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
        with pytest.raises(TransportError, match="exit 3"):
            r.check()
        assert t.run(["cat"], stdin=b"hello").stdout == "hello"
        with pytest.raises(TransportError, match="did not finish within 1s"):
            t.run(["sleep", "5"], timeout_s=1)
        # the connection is still usable afterwards
        assert t.run(["true"]).returncode == 0


def test_put_get_round_trip(sshd_server: SshdServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    (src / "a.bin").write_bytes(bytes(range(256)) * 100)
    (src / "sub dir" / "b 'q'.txt").write_text("b\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    remote = str(tmp_path / "remote" / "deep")
    with _transport(sshd_server) as t:
        t.put(src, remote)
        t.put(src / "a.bin", str(tmp_path / "remote2" / "one.bin"))
        back = tmp_path / "back"
        t.get(remote, back)
        t.get(str(tmp_path / "remote2" / "one.bin"), tmp_path / "one.bin")
        with pytest.raises(TransportError, match="does not exist"):
            t.get(str(tmp_path / "nope"), tmp_path / "x")
    assert (back / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
    assert (back / "sub dir" / "b 'q'.txt").read_text() == "b\n"
    assert (back / "run.sh").stat().st_mode & 0o111
    assert (tmp_path / "one.bin").read_bytes() == (src / "a.bin").read_bytes()


def test_unknown_host_key_is_rejected_unless_accepted(sshd_server: SshdServer, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    with pytest.raises(TransportError, match="host key not in .*--accept-new-host-key"):
        _transport(sshd_server, known_hosts=kh).run(["true"])
    with pytest.raises(TransportError, match="does not exist"):
        _transport(sshd_server, known_hosts=tmp_path / "missing").run(["true"])
    with _transport(sshd_server, known_hosts=kh, accept_new_host_key=True) as t:
        assert t.run(["true"]).returncode == 0
    saved = kh.read_text()
    assert f"[{sshd_server.host}]:{sshd_server.port}" in saved
    assert sshd_server.host_key_pub.read_text().split()[1] in saved
    # now known: strict mode connects
    with _transport(sshd_server, known_hosts=kh) as t:
        assert t.run(["true"]).returncode == 0


def test_changed_host_key_is_always_rejected(sshd_server: SshdServer, tmp_path: Path) -> None:
    import paramiko

    other = paramiko.Ed25519Key.from_private_key_file(str(sshd_server.key_path))  # any other ed25519 key
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{sshd_server.host}]:{sshd_server.port} ssh-ed25519 {other.get_base64()}\n")
    with pytest.raises(TransportError, match="CHANGED"):
        _transport(sshd_server, known_hosts=kh, accept_new_host_key=True).run(["true"])


def test_connection_refused_gives_up_at_the_deadline(sshd_server: SshdServer) -> None:
    from tests.services.common import free_port

    t = SshTransport(f"{sshd_server.user}@127.0.0.1:{free_port()}", key_path=sshd_server.key_path,
                     known_hosts=sshd_server.known_hosts, connect_deadline_s=1.5)
    with pytest.raises(TransportError, match="could not connect within 2s"):
        t.run(["true"])
