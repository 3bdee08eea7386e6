"""benchmarks/session_table.py: the ratio table of a kernel session, on real captured results (the fifteenth
session's H100 configurations, with the fourteenth's for the reference on FineWeb-length documents)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import session_table  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
GOLDEN = Path(__file__).parent / "fixtures" / "session-table-idle.md"


def load(name: str) -> dict:
    return json.loads((RESULTS / f"h100-kernels-{name}-configs.json").read_text())


@pytest.mark.parametrize("name, refs", [
    ("baseline", []),
    ("baseline-long", ["baseline"]),  # what the documents cost the record's kernels
    ("baseline-1mb", ["baseline"]),
    ("record", ["baseline"]),  # the record's own script against its kernels in our trainer
    ("record-long", ["baseline-long"]),
    ("default", ["baseline", "record"]),  # and against the record's script: the yardstick
    ("default-long", ["baseline-long", "record-long"]),
    ("default-1mb", ["baseline-1mb", "record-1mb"]),
    ("next", ["baseline", "record", "default"]),
    ("next-long", ["baseline-long", "record-long", "default-long"]),
    ("next-1mb", ["baseline-1mb", "record-1mb", "default-1mb"]),
    ("baseline-next-1mb", ["baseline-1mb", "record-1mb"]),
    ("baseline-long-1mb", ["baseline"]),
    ("default-long-1mb", ["baseline-long-1mb", "record-long-1mb"]),  # one rank of the scored run
    ("next-long-1mb", ["baseline-long-1mb", "record-long-1mb", "default-long-1mb"]),
    ("baseline-equiv", []),
    ("next-equiv", ["baseline-equiv"]),
    ("baseline-noise", ["baseline-equiv"]),
])
def test_each_run_is_read_against_the_record_kernels_on_its_documents_and_step(name, refs):
    assert session_table.references(name) == refs


def test_the_fifteenth_sessions_table(tmp_path):
    """The golden table: references first, a candidate against both of its references, the reference this session
    lacked taken from the fourteenth's, marked, with a row of its own."""
    got = session_table.render(load("idle"), load("lag"))
    assert got == GOLDEN.read_text()
    assert "| next-long | 24 | 1,225,372 (1.213× baseline-long†) |" in got
    assert "| next | 24 | 1,196,951 (1.146× baseline, 1.002× default) |" in got
    assert "†" not in session_table.render(load("idle"))  # without the other session: no ratio for next-long


def test_the_seventeenth_sessions_goal_rows():
    """The seventeenth session's own references: the default on FineWeb-length documents against the record's kernels
    on them, one rank's step against one rank's step, and no row read across sessions."""
    got = session_table.render(load("goal"))
    assert "| default-long | 24 | 1,226,334 (1.209× baseline-long) | 816,043 (1.204× baseline-long) |" in got
    assert "| default-1mb | 192 | 1,125,012 (1.126× baseline-1mb) |" in got
    assert "| baseline-noise | 100 | 1,039,840 (1.001× baseline-equiv) |" in got and "†" not in got


def test_a_run_killed_before_its_throughput_shows_dashes():
    configs = {"baseline": {"iterations": 24, "tokens_per_s_preloop": 1e6, "tokens_per_s_loop": 7e5},
               "default": {"iterations": 24, "compile_s": 150.0, "complete": False}}
    row = session_table.render(configs).splitlines()[3]
    assert row == "| default | 24 | - | - | - | - | 150.0 | - |"


def test_the_command_line(tmp_path):
    files = [str(RESULTS / f"h100-kernels-{name}-configs.json") for name in ("idle", "lag")]
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "session_table.py"), *files],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == GOLDEN.read_text()
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "session_table.py")], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "Usage: python3 benchmarks/session_table.py CONFIGS.json" in bad.stderr


def test_the_eighteenth_sessions_record_against_the_seventeenths_default():
    """The record's own script (eighteenth session, one H100) and the default (seventeenth, another H100) on
    FineWeb-length documents: each session's table takes the reference it lacks from the other, marked."""
    got = session_table.render(load("goal"), load("record"))
    assert ("| default-long | 24 | 1,226,334 (1.209× baseline-long, 1.150× record-long†) | 816,043 (1.204× "
            "baseline-long, 1.161× record-long†) |") in got
    assert "| record-long† | 24 | 1,066,101 | 702,635 | 848,743 | - | - | 419.4 |" in got
    got = session_table.render(load("record"), load("goal"))
    assert "| record-long | 24 | 1,066,101 (1.051× baseline-long†) | 702,635 (1.037× baseline-long†) |" in got
