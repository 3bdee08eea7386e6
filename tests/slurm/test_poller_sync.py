"""Polling budget and back-off (with a transport whose first answers are controller errors, as
Slurm prints them), and the code push: the working tree as git sees it."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from golfrun.backends.base import JobState
from golfrun.backends.slurm import Poller, SlurmClient
from golfrun.errors import BackendError
from golfrun.transport.base import CompletedRun
from golfrun.transport.sync import SOURCE_FILE, pack_worktree

CAP = Path(__file__).parent / "captured"
DOWN = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"


class ScriptedSlurm:
    """Answers squeue with captured output after `failures` controller errors; records calls."""

    def __init__(self, failures: int, answer: str) -> None:
        self.failures, self.answer, self.calls = failures, answer, []

    def run(self, argv, cwd=None, env=None, timeout_s=60.0):  # noqa: ANN001
        self.calls.append(list(argv))
        if argv[0] == "sacct":
            return CompletedRun(1, "", "Slurm accounting storage is disabled\n", tuple(argv))
        if argv[0] == "scontrol":
            return CompletedRun(0, "JobId=2 JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0\n", "", tuple(argv))
        if self.failures > 0:
            self.failures -= 1
            return CompletedRun(1, "", DOWN + "\n", tuple(argv))
        return CompletedRun(0, self.answer, "", tuple(argv))


def test_transient_failures_are_retried_with_backoff() -> None:
    slurm = ScriptedSlurm(3, (CAP / "squeue-final.txt").read_text())
    sleeps: list[float] = []
    poller = Poller(SlurmClient(slurm), min_interval_s=1, max_interval_s=8, failure_budget=5, sleep=sleeps.append)
    final = poller.wait(["1", "2", "5"], deadline_s=3600)
    assert final["1"].state is JobState.SUCCEEDED
    assert final["2"].state is JobState.FAILED and final["2"].exit_code == 3
    assert sleeps == [2, 4, 8]  # doubled after each failure, capped
    squeues = [c for c in slurm.calls if c[0] == "squeue"]
    assert len(squeues) == 4 and all("-j" in c and c[c.index("-j") + 1] == "1,2,5" for c in squeues)  # one call for all
    assert [c[0] for c in slurm.calls].count("sacct") == 1  # accounting found off once, then squeue only


def test_failure_budget_gives_up_with_the_last_error() -> None:
    poller = Poller(SlurmClient(ScriptedSlurm(99, "")), failure_budget=3, sleep=lambda s: None)
    with pytest.raises(BackendError, match="did not answer 3 times in a row.*Unable to contact slurm controller"):
        poller.wait(["1"], deadline_s=3600)


def test_deadline() -> None:
    running = "7|7|RUNNING|None\n"
    poller = Poller(SlurmClient(ScriptedSlurm(0, running)), min_interval_s=1, sleep=lambda s: None)
    with pytest.raises(BackendError, match="did not finish within 0s"):
        poller.wait(["7"], deadline_s=0)


def test_pack_worktree_is_what_git_sees(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (repo / ".gitignore").write_text("runs/\n")
    (repo / "a.py").write_text("v1\n")
    (repo / "blob.bin").write_bytes(bytes(range(256)))
    (repo / "gone.py").write_text("x\n")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    (repo / "a.py").write_text("v2 uncommitted\n")
    (repo / "blob.bin").write_bytes(bytes(reversed(range(256))))
    (repo / "gone.py").unlink()
    (repo / "new file.py").write_text("untracked\n")
    (repo / "runs").mkdir()
    (repo / "runs" / "big.pt").write_text("ignored")
    with tarfile.open(fileobj=io.BytesIO(pack_worktree(repo)), mode="r:gz") as tar:
        names = sorted(tar.getnames())
        files = {n: tar.extractfile(n).read() for n in names}
    assert names == sorted([".gitignore", "a.py", "blob.bin", "new file.py", SOURCE_FILE])
    assert files["a.py"] == b"v2 uncommitted\n"
    assert files["blob.bin"] == bytes(reversed(range(256)))
    info = json.loads(files[SOURCE_FILE])
    assert len(info["commit"]) == 40 and info["dirty"] is True
