"""The local transport with real subprocesses: run, spawn, log capture, secret scrubbing, signals."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from golfrun.errors import TransportError
from golfrun.transport import local
from golfrun.transport.base import CompletedRun
from tests.fixtures.waiting import wait_for

PY = sys.executable
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trainers"


def alive(pid: int) -> bool:
    return local.process_start_time(pid) is not None


# ------------------------------------------------------------------ run


def test_run_captures_output_and_overlays_env() -> None:
    result = local.run(
        [PY, "-c", "import os,sys; print(os.environ['GOLF_X']); print('err', file=sys.stderr); print(os.environ['PATH'] != '')"],
        env={"GOLF_X": "hello"},
        timeout_s=30,
    )
    assert result == CompletedRun(0, "hello\nTrue\n", "err\n", result.argv)
    assert result.argv[0] == PY


def test_run_nonzero_exit_with_check_names_the_command() -> None:
    with pytest.raises(TransportError, match=r"exit 3.*-c.*\n.*boom"):
        local.run([PY, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"], timeout_s=30)
    result = local.run([PY, "-c", "import sys; sys.exit(3)"], timeout_s=30, check=False)
    assert result.returncode == 3


def test_run_timeout_kills_the_group_and_names_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess,sys,time\n"
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
        "time.sleep(600)\n"
    )
    with pytest.raises(TransportError, match=r"timed out after 2s: .*python.* -c"):
        local.run([PY, "-c", code], timeout_s=2)
    child = int(pidfile.read_text())
    assert wait_for(lambda: not alive(child), 10)


def test_run_timeout_returns_even_when_a_detached_grandchild_holds_the_pipe(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    code = (
        "import subprocess,sys,time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
        f"open({str(pidfile)!r}, 'w').write(str(c.pid))\n"
        "time.sleep(600)\n"
    )
    try:
        with pytest.raises(TransportError, match="timed out after 1s"):
            local.run([PY, "-c", code], timeout_s=1)
    finally:
        child = int(pidfile.read_text())
        local.kill_processes({(child, local.process_start_time(child) or -1)}, 9)
    assert wait_for(lambda: not alive(child), 10)


def test_run_missing_program_and_bad_argv() -> None:
    with pytest.raises(TransportError, match="cannot run /nonexistent/prog"):
        local.run(["/nonexistent/prog"], timeout_s=5)
    with pytest.raises(TransportError, match="argv list"):
        local.run("echo hi", timeout_s=5)  # type: ignore[arg-type]


def test_local_transport_protocol_and_copies(tmp_path: Path) -> None:
    t = local.LocalTransport()
    assert t.run([PY, "-c", "import sys; sys.exit(4)"], timeout_s=30).returncode == 4  # never raises on exit codes
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.txt").write_text("x")
    t.put(tmp_path / "a", str(tmp_path / "b"))
    t.get(str(tmp_path / "b" / "f.txt"), tmp_path / "c" / "g.txt")
    assert (tmp_path / "c" / "g.txt").read_text() == "x"
    with pytest.raises(TransportError, match="cannot copy"):
        t.get(str(tmp_path / "missing"), tmp_path / "d")


# ------------------------------------------------------------------ spawn


def test_spawn_logs_merged_output_line_by_line(tmp_path: Path) -> None:
    lines: list[str] = []
    code = "import sys\nprint('one', flush=True)\nprint('two', file=sys.stderr, flush=True)\nprint('three')\nsys.exit(5)\n"
    proc = local.spawn([PY, "-c", code], cwd=str(tmp_path), env=None, log_path=tmp_path / "logs" / "job.log", on_line=lines.append)
    assert proc.wait(timeout_s=30) == 5
    assert sorted((tmp_path / "logs" / "job.log").read_text().splitlines()) == ["one", "three", "two"]
    assert sorted(lines) == ["one", "three", "two"]
    assert proc.last_lines(2)[-1] in ("three", "two")


def test_spawn_scrubs_secret_values(tmp_path: Path) -> None:
    secret = "hf_abcdefghijklmnopqrstuvwxyz012345"
    seen: list[str] = []
    code = "import os; print('token=' + os.environ['HF_TOKEN']); print('key ' + os.environ['MY_API_KEY'])"
    proc = local.spawn(
        [PY, "-c", code], cwd=None, env={"HF_TOKEN": secret, "MY_API_KEY": "k3y-value-42"},
        log_path=tmp_path / "job.log", on_line=seen.append,
    )
    assert proc.wait(timeout_s=30) == 0
    log = (tmp_path / "job.log").read_text()
    assert secret not in log and "k3y-value-42" not in log
    assert "token=***REDACTED***" in log
    assert all(secret not in line for line in seen) and len(seen) == 2


def test_a_failing_callback_does_not_stop_the_log(tmp_path: Path) -> None:
    def broken(line: str) -> None:
        raise ValueError("display bug")

    proc = local.spawn([PY, "-c", "print('a'); print('b')"], cwd=None, env=None, log_path=tmp_path / "l", on_line=broken)
    assert proc.wait(timeout_s=30) == 0
    assert (tmp_path / "l").read_text() == "a\nb\n"


def test_wait_timeout_names_the_command(tmp_path: Path) -> None:
    proc = local.spawn([PY, "-c", "import time; time.sleep(600)"], cwd=None, env=None, log_path=tmp_path / "l")
    try:
        with pytest.raises(TransportError, match="still running after 0.2s"):
            proc.wait(timeout_s=0.2)
    finally:
        proc.terminate(grace_s=5)
    assert proc.poll() is not None


def test_terminate_reaches_children_in_other_sessions(tmp_path: Path) -> None:
    """Like torchrun's workers, the child runs in a session of its own: killpg alone would miss it."""
    proc = local.spawn(
        [PY, str(FIXTURES / "fake_sleep_trainer.py")], cwd=str(tmp_path), env={"ARTIFACT_DIR": str(tmp_path)},
        log_path=tmp_path / "job.log",
    )
    assert wait_for(lambda: (tmp_path / "child.pid").is_file() and (tmp_path / "child.pid").read_text() != "")
    child = int((tmp_path / "child.pid").read_text())
    assert os.getpgid(child) != proc.pid  # really another session/group
    code = proc.terminate(grace_s=5)
    assert code is not None and code < 0
    assert wait_for(lambda: not alive(child), 10)


def test_terminate_escalates_to_sigkill(tmp_path: Path) -> None:
    proc = local.spawn(
        [PY, str(FIXTURES / "fake_sleep_trainer.py")], cwd=str(tmp_path),
        env={"ARTIFACT_DIR": str(tmp_path), "FAKE_IGNORE_SIGTERM": "1"}, log_path=tmp_path / "job.log",
    )
    assert wait_for(lambda: "started trainer" in (tmp_path / "job.log").read_text())
    child = int((tmp_path / "child.pid").read_text())
    assert proc.terminate(grace_s=0.5) == -9
    assert wait_for(lambda: not alive(child), 10)


def test_find_processes_with_env(tmp_path: Path) -> None:
    marker = f"marker-{tmp_path.name}"
    proc = local.spawn([PY, "-c", "import time; time.sleep(600)"], cwd=None, env={"GOLF_TEST_MARK": marker}, log_path=tmp_path / "l")
    try:
        # the job guard (proc.pid) and the job itself carry the variable
        assert wait_for(lambda: len(local.find_processes_with_env("GOLF_TEST_MARK", marker)) == 2)
        found = local.find_processes_with_env("GOLF_TEST_MARK", marker)
        assert proc.pid in {pid for pid, _ in found}
        local.terminate_processes(found, grace_s=5)
        assert wait_for(lambda: proc.poll() is not None, 10)
        assert local.find_processes_with_env("GOLF_TEST_MARK", marker) == set()
    finally:
        proc.terminate(grace_s=1)
