"""A relative `dir:` preserve target lies in the campaign's run folder, whatever folder golfrun
was started from: two runs folders never share (and overwrite) one preserved bundle."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.pipeline_campaign import run_golfrun, write_campaign


def test_relative_dir_target_lands_in_each_runs_folder(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, tmp_path / "data")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for runs in ("runs-a", "runs-b"):
        proc = run_golfrun(["run-all", "--campaign", str(campaign), "--runs-dir", str(tmp_path / runs),
                            "--set", 'preserve.targets=["dir:preserved"]'], cwd=cwd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    bundles = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("runs-*/t/preserved/*.tar.gz"))
    assert bundles == ["runs-a/t/preserved/t-preserve.tar.gz", "runs-b/t/preserved/t-preserve.tar.gz"]
    assert not (cwd / "preserved").exists() and not (cwd / "runs").exists()
