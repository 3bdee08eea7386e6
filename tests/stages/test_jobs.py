"""Per-job records: secrets never reach job.json, logs or summaries; the job key tracks inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from golfrun.cli import main
from tests.fixtures.pipeline_campaign import write_campaign

SECRET = "sk-verysecretvalue-0123456789"


def test_secret_values_stay_out_of_every_file_golfrun_writes(tmp_path: Path, shared_data: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_KEY", SECRET)  # inherited by the trainer, which prints it and crashes
    write_campaign(tmp_path, shared_data, trainer_env={"FAKE_PRINT_ENV": "MY_API_KEY", "FAKE_CRASH": "1"})
    result = CliRunner().invoke(main, ["run-all", "--campaign", str(tmp_path / "campaign.toml"),
                                       "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 12
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file() and p.suffix in (".json", ".log", ".txt", ".toml")]
    assert any(p.name == "job.log" for p in files)
    assert any(p.name == "summary.json" and "02-gate-a" in str(p) for p in files)
    for path in files:
        assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in result.output


def test_plan_keys_change_with_env_and_checkpoint(tmp_path: Path, shared_data: Path) -> None:
    import json

    write_campaign(tmp_path, shared_data)
    base = ["--campaign", str(tmp_path / "campaign.toml"), "--runs-dir", str(tmp_path / "runs")]

    def keys(*sets: str) -> dict[str, str]:
        args = ["plan", "ablation", "--json", *base]
        for s in sets:
            args += ["--set", s]
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 0, out.output
        return {j["name"]: j["key"] for j in json.loads(out.output)["jobs"]}

    a = keys()
    b = keys("trainer_env.FAKE_BPB=2.5")
    assert set(a) == {"baseline", "good", "bad"} and all(a[n] != b[n] for n in a)
    assert keys() == a  # deterministic
