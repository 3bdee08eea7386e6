"""verify-pod on this CPU machine: the probe's facts, a GPU demand that fails, the git pin."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from click.testing import CliRunner

from golfrun.cli import main
from tests.fixtures.pipeline_campaign import FAKE_TRAINER, write_campaign


def run(tmp: Path, *sets: str) -> tuple[int, dict]:
    args = ["verify-pod", "--force", "--campaign", str(tmp / "campaign.toml"), "--runs-dir", str(tmp / "runs")]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(main, args)
    summary = json.loads((tmp / "runs" / "t" / "00-verify-pod" / "summary.json").read_text())
    return result.exit_code, summary


def checks(summary: dict) -> dict[str, dict]:
    return {c["name"]: c for c in summary["checks"]}


def test_cpu_machine_passes_the_cpu_expectations_and_fails_a_gpu_demand(tmp_path: Path, shared_data: Path) -> None:
    write_campaign(tmp_path, shared_data)
    code, summary = run(tmp_path, "verify_pod.required_packages=[\"json\", \"torch\"]")
    assert code == 0, summary["reasons"]
    c = checks(summary)
    assert c["package:torch"]["passed"] and c["trainer"]["passed"]
    assert summary["decision"]["facts"]["torch"].startswith("2.")  # the probe imported torch, golfrun did not
    assert summary["decision"]["trainer_sha256"] == __import__("hashlib").sha256(FAKE_TRAINER.read_bytes()).hexdigest()

    code, summary = run(tmp_path, "verify_pod.gpu_count=8", "verify_pod.gpu_name=H100",
                        "verify_pod.required_packages=[\"json\", \"no_such_package_xyz\"]")
    assert code == 10
    c = checks(summary)
    assert c["gpu_count"]["observed"] == 0 and c["gpu_count"]["limit"] == 8 and not c["gpu_count"]["passed"]
    assert not c["gpu_name"]["passed"] and not c["package:no_such_package_xyz"]["passed"]
    assert c["package:json"]["passed"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}).stdout.strip()


def test_git_pin_exact_and_ancestor(tmp_path: Path, shared_data: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    trainer = repo / "train_gpt.py"
    trainer.write_text(FAKE_TRAINER.read_text())
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "notes.txt").write_text("x")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "two")
    head = _git(repo, "rev-parse", "HEAD")
    write_campaign(tmp_path, shared_data, trainer=trainer)

    code, summary = run(tmp_path, f"verify_pod.git_commit={first[:12]}", "verify_pod.git_pin=ancestor")
    assert code == 0 and checks(summary)["git_commit"]["observed"] == head
    code, summary = run(tmp_path, f"verify_pod.git_commit={first}", "verify_pod.git_pin=exact")
    assert code == 10 and not checks(summary)["git_commit"]["passed"]
    code, summary = run(tmp_path, f"verify_pod.git_commit={head}", "verify_pod.git_pin=exact")
    assert code == 0
    code, summary = run(tmp_path, "verify_pod.git_commit=deadbeef", "verify_pod.git_pin=ancestor")
    assert code == 10
    assert not checks(summary)["git_commit"]["passed"] and "deadbeef" in json.dumps(checks(summary)["git_commit"])
