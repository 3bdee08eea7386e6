"""The command line: light imports, bad input, init, exit codes as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from golfrun.cli import main
from golfrun.summary import EXIT_CODES, EXIT_LOCKED, EXIT_USAGE, Verdict
from tests.fixtures.pipeline_campaign import REPO

HEAVY = ("torch", "numpy", "scipy", "huggingface_hub", "matplotlib")

PROBE = """
import sys
sys.argv = ["golfrun", *sys.argv[1:]]
from golfrun.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


def _imports_for(args: list[str], cwd: Path) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    line = [x for x in done.stderr.splitlines() if x.startswith("HEAVY=")][-1]
    return line[len("HEAVY="):], done.stdout


def test_help_imports_no_torch_numpy_scipy_or_hub(tmp_path: Path) -> None:
    heavy, out = _imports_for(["--help"], tmp_path)
    assert "run-all" in out and "status" in out
    assert heavy == ""


def test_status_imports_no_torch(tmp_path: Path, campaign: Path) -> None:
    assert CliRunner().invoke(main, ["run-all", "--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs")]).exit_code == 0
    heavy, out = _imports_for(["status", "--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs")], tmp_path)
    assert "gate-b" in out and "PASS" in out
    assert heavy == ""


@pytest.mark.parametrize(
    "text, needle",
    [
        ("name = 'x'\n[gate_a\nseed = 0\n", "invalid TOML"),
        ("name = 'x'\n[gate_a]\nbpb_tolerence = 0.1\n", "bpb_tolerence"),
        ("name = 'x'\n[gate_a]\nseed = 'zero'\n", "gate_a.seed"),
        ("name = 'x'\n[nonsense]\nk = 1\n", "nonsense"),
    ],
)
def test_malformed_campaign_file_is_a_usage_error_naming_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["run-all", "--campaign", str(path), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == EXIT_USAGE, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # nothing started


@pytest.mark.parametrize(
    "override, needle",
    [
        ("gate_a.bpb_tolerance=abc", "gate_a.bpb_tolerance"),
        ("gate_a.no_such_key=1", "no_such_key"),
        ("gate_a.seed", "="),
        ("gate_b.seeds=[0, 'a']", "gate_b.seeds"),
    ],
)
def test_malformed_set_values_are_usage_errors(tmp_path: Path, campaign: Path, override: str, needle: str) -> None:
    result = CliRunner().invoke(main, ["run-all", "--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs"),
                                       "--set", override])
    assert result.exit_code == EXIT_USAGE, result.output
    assert needle in result.output


def test_unknown_campaign_or_preset(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--campaign", "no-such-preset"])
    assert result.exit_code == EXIT_USAGE and "tiny" in result.output  # lists the presets


def test_init_writes_an_editable_preset_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "mine.toml"
    result = CliRunner().invoke(main, ["init", "--preset", "pr1610", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1.07216564" in out.read_text()  # the published seed-0 score
    plan = CliRunner().invoke(main, ["plan", "gate-a", "--json", "--campaign", str(out), "--runs-dir", str(tmp_path / "runs")])
    assert plan.exit_code == 0, plan.output
    job = json.loads(plan.output)["jobs"][0]
    assert job["seed"] == 0 and job["nproc_per_node"] == 8
    again = CliRunner().invoke(main, ["init", "--preset", "pr1610", "--out", str(out)])
    assert again.exit_code == EXIT_USAGE and "exists" in again.output


def test_exit_codes_are_documented() -> None:
    doc = (REPO / "docs" / "cli.md").read_text()
    for verdict, code in EXIT_CODES.items():
        assert f"| {code} | {verdict.value}" in doc
    assert f"| {EXIT_USAGE} |" in doc and f"| {EXIT_LOCKED} |" in doc


def test_decide_needs_a_reason_and_one_action(tmp_path: Path, campaign: Path) -> None:
    base = ["--campaign", str(campaign), "--runs-dir", str(tmp_path / "runs")]
    assert CliRunner().invoke(main, ["decide", "ablation", "--kill", *base]).exit_code == EXIT_USAGE  # --reason missing
    both = CliRunner().invoke(main, ["decide", "ablation", "--kill", "--promote", "good", "--reason", "x", *base])
    assert both.exit_code == EXIT_USAGE  # an argument error, not a failed stage
    assert "exactly one" in both.output
