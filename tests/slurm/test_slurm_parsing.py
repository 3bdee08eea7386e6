"""Parsers and state mapping, on squeue/scontrol/sacct output captured from the real test cluster
(tests/slurm/captured/, written by tests/slurm/capture_slurm_output.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from golfrun.backends.base import JobState
from golfrun.backends.slurm import (
    combine,
    map_state,
    parse_sacct,
    parse_sacct_completion,
    parse_scontrol,
    parse_squeue,
    parse_submit,
    slurm_time,
)
from golfrun.errors import BackendError

CAP = Path(__file__).parent / "captured"
IDS = dict(line.split("=") for line in (CAP / "ids.txt").read_text().split())


def test_parse_submit() -> None:
    assert parse_submit((CAP / "sbatch-plain.txt").read_text()) == "8"
    assert parse_submit("42\n") == "42"
    assert parse_submit("42;cluster2\n") == "42"
    with pytest.raises(BackendError, match="job id"):
        parse_submit("sbatch: error: Batch job submission failed")


def test_squeue_while_running() -> None:
    st = combine(parse_squeue((CAP / "squeue-running.txt").read_text()))
    assert st[IDS["ok"]].state is JobState.SUCCEEDED
    assert st[IDS["fail"]].state is JobState.FAILED
    assert st[IDS["dep"]].state is JobState.CANCELLED
    assert "DependencyNeverSatisfied" in st[IDS["dep"]].reason
    assert st[IDS["stuck"]].state is JobState.PENDING and "for ever" in st[IDS["stuck"]].reason
    assert st[IDS["long"]].state is JobState.RUNNING
    assert st[IDS["gpuwait"]].state is JobState.PENDING and "Dependency" in st[IDS["gpuwait"]].reason
    arr = st[IDS["arr"]]
    assert arr.state is JobState.PENDING  # 2 done, 2 held back by the throttle
    assert "JobArrayTaskLimit" not in arr.reason and "2 PENDING" in arr.reason


def test_squeue_final_array_failure_names_the_task() -> None:
    st = combine(parse_squeue((CAP / "squeue-final.txt").read_text()))
    arr = st[IDS["arr"]]
    assert arr.state is JobState.FAILED
    assert "task 2" in arr.reason
    assert sorted(arr.backend_ids) == [f"{IDS['arr']}_{i}" for i in range(4)]
    assert st[IDS["long"]].state is JobState.CANCELLED


def test_scontrol_exit_codes() -> None:
    jobs = {j["JobId"]: j for j in parse_scontrol((CAP / "scontrol-show-job.txt").read_text())}
    assert jobs[IDS["fail"]]["ExitCode"] == "3:0"
    assert jobs[IDS["long"]]["ExitCode"] == "0:15"
    assert map_state("FAILED", "NonZeroExitCode", jobs[IDS["fail"]]["ExitCode"]).reason == "FAILED with exit code 3"
    assert map_state("CANCELLED", "None", "0:15").reason == "CANCELLED (signal 15)"


def test_sacct_completion_folds_array_tasks() -> None:
    array_of = {"9": IDS["arr"], "10": IDS["arr"], "11": IDS["arr"]}
    st = combine(parse_sacct_completion((CAP / "sacct-completion.txt").read_text(), array_of))
    assert st[IDS["fail"]].state is JobState.FAILED and st[IDS["fail"]].exit_code == 3
    assert st[IDS["ok"]].state is JobState.SUCCEEDED


def test_sacct_with_accounting() -> None:
    # the shape sacct -X -n -P prints with slurmdbd (array tasks as ID_TASK, steps skipped)
    text = "12|12|COMPLETED|0:0\n12.batch|12.batch|COMPLETED|0:0\n13_0|14|COMPLETED|0:0\n13_1|13|TIMEOUT|0:0\n15|15|CANCELLED by 1000|0:0\n"
    st = combine(parse_sacct(text))
    assert st["12"].state is JobState.SUCCEEDED
    assert st["13"].state is JobState.FAILED and "TIMEOUT" in st["13"].reason and "task 1" in st["13"].reason
    assert st["15"].state is JobState.CANCELLED and "by user 1000" in st["15"].reason


@pytest.mark.parametrize(
    "slurm,state,words",
    [
        ("OUT_OF_MEMORY", JobState.FAILED, "mem"),
        ("NODE_FAIL", JobState.FAILED, "NODE_FAIL"),
        ("PREEMPTED", JobState.FAILED, "PREEMPTED"),
        ("REQUEUED", JobState.PENDING, "REQUEUED"),
        ("TIMEOUT", JobState.FAILED, "time limit"),
        ("COMPLETING", JobState.RUNNING, ""),
        ("WEIRD_NEW_STATE", JobState.UNKNOWN, "not known"),
        ("", JobState.UNKNOWN, "not known"),
    ],
)
def test_state_mapping(slurm: str, state: JobState, words: str) -> None:
    st = map_state(slurm)
    assert st.state is state
    assert words in st.reason


def test_slurm_time() -> None:
    assert slurm_time(2100) == "00:35:00"
    assert slurm_time("1-00:00:00") == "1-00:00:00"
    assert slurm_time("35:00") == "35:00"
    with pytest.raises(BackendError, match="backend.slurm.time"):
        slurm_time("35 minutes")
