"""`golfrun package`: the submission folder matches the summaries it was made from."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from golfrun.campaign import load_campaign
from golfrun.provenance.package import build_package, folder_name
from golfrun.summary import STAGE_DIRS
from tests.provenance.campaign_dir import (
    ARTIFACT,
    EVAL_MS,
    SEEDS,
    STEPS,
    TRAIN_MS,
    VAL_BPB,
    VAL_LOSS,
    write_campaign_dir,
)

REF_LOSS = [2.7725, 2.7731, 2.7728]
REF_BPB = [1.0733, 1.0736, 1.0734]
SETS = [
    'name="camp"',
    f"reference.val_loss={REF_LOSS}",
    f"reference.val_bpb={REF_BPB}",
    'reference.name="PR #1530"',
    'preserve.submission.name="VarLen + Corrector"',
    'preserve.submission.author="Jane Doe"',
    'preserve.submission.github_id="janedoe"',
    'preserve.submission.blurb="Corrector on top of phased TTT."',
    "trainer_env={NUM_LAYERS = \"11\", TRAIN_BATCH_TOKENS = \"786432\"}",
]


def _trainer(folder: Path) -> Path:
    """A trainer file of the code size PR #1610 counts (28,599 bytes), so shipped sizes equal the logs'."""
    path = folder / "trainer" / "train_gpt.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "# a stand-in for a packed train_gpt.py\n"
    path.write_text(body + "#" * (28_599 - len(body) - 1) + "\n")
    return path


def _campaign(tmp_path: Path, extra: list[str] = []):  # type: ignore[no-untyped-def]
    return load_campaign(None, SETS + [f'trainer="{_trainer(tmp_path)}"'] + extra)


def test_submission_json_matches_the_summaries(tmp_path: Path) -> None:
    c = _campaign(tmp_path)
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", c)
    pkg = build_package(c, cdir, tmp_path / "pg", date="2026-11-24")
    assert pkg.folder == tmp_path / "pg" / "records" / "track_10min_16mb" / "2026-11-24_VarLen_Corrector"
    sub = json.loads((pkg.folder / "submission.json").read_text())
    gb = json.loads((cdir / STAGE_DIRS["gate-b"] / "summary.json").read_text())["decision"]
    assert sub["name"] == "VarLen + Corrector" and sub["author"] == "Jane Doe" and sub["github_id"] == "janedoe"
    assert sub["date"] == "2026-11-24" and sub["track"] == "10min_16mb"
    assert sub["seeds"] == SEEDS == gb["seeds"]
    assert sub["val_bpb"] == round(statistics.fmean(VAL_BPB), 8)
    assert sub["val_loss"] == round(statistics.fmean(VAL_LOSS), 8)
    assert sub["val_bpb_std"] == pytest.approx(0.00046433, abs=5e-9)  # population std, as PR #1610 reports
    assert sub["std_convention"] == "population, ddof 0"
    assert sub["artifact_bytes_max"] == max(ARTIFACT)
    assert sub["based_on"] == "PR #1530"  # reference.name when preserve.submission.based_on is empty
    assert set(sub["seed_results"]) == {"0", "1", "2"}
    for i, s in enumerate(SEEDS):
        r = sub["seed_results"][str(s)]
        assert (r["val_bpb"], r["val_loss"], r["artifact_bytes"], r["eval_time_s"]) == (VAL_BPB[i], VAL_LOSS[i], ARTIFACT[i], EVAL_MS[i] / 1000)
        assert (r["steps"], r["train_time_s"]) == (STEPS[i], TRAIN_MS[i] / 1000)
        assert not any(k.endswith("_ms") for k in r)  # seconds everywhere
    assert (sub["t_statistic"], sub["welch_df"], sub["p_value"]) == (gb["record_test"]["t"], gb["record_test"]["df"], gb["record_test"]["p"])
    assert sub["delta_bpb"] == round(statistics.fmean(VAL_BPB) - statistics.fmean(REF_BPB), 8)
    assert sub["delta_nats"] == round(statistics.fmean(VAL_LOSS) - statistics.fmean(REF_LOSS), 8)
    assert sub["pytorch_version"] == "2.9.1+cu128"
    assert sub["hardware"].startswith("8x")
    assert sub["compliance"] == {"train_under_600s": True, "artifact_under_16mb": True, "eval_under_600s": True,
                                 "three_seeds": True}
    # the only rule not met: the record test's p = 0.987
    assert pkg.warnings == ["rule not met: record test p < 0.01 (p = 0.987000)"]


def test_readme_logs_trainer_and_requirements(tmp_path: Path) -> None:
    c = _campaign(tmp_path)
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", c)
    pkg = build_package(c, cdir, tmp_path / "pg", date="2026-11-24")
    readme = (pkg.folder / "README.md").read_text()
    assert readme.startswith("# Record: VarLen + Corrector — val_bpb 1.07280628 (3-seed mean)")
    for i, s in enumerate(SEEDS):
        assert f"| {s} | {STEPS[i]:,} | {TRAIN_MS[i] / 1000:.1f} | {VAL_LOSS[i]:.8f} | {VAL_BPB[i]:.8f} | {EVAL_MS[i] / 1000:.1f} |" in readme
    assert "| **mean** | | | **2.77117005** | **1.07280628** |" in readme
    for section in ("## Results", "## What changed against PR #1530", "## Legality", "## How to reproduce", "## Credits"):
        assert section in readme
    assert "val_bpb 0.00046433" in readme
    assert "t = -3.5000, df = 3.90, p = 0.987000" in readme
    assert f"| val_bpb | {statistics.fmean(REF_BPB):.8f} | 1.07280628 | {statistics.fmean(VAL_BPB) - statistics.fmean(REF_BPB):+.8f} |" in readme
    assert "| record test p < 0.01 | **no** |" in readme
    assert "CORRECTOR_ALPHA=0.3" in readme and "NUM_LAYERS=11" in readme and "TRAIN_BATCH_TOKENS=786432" in readme
    assert "torchrun --standalone --nproc_per_node=8 train_gpt.py > train_seed$seed.log" in readme
    # per-seed logs at the top level (logs/ is ignored by the competition's .gitignore)
    for i, s in enumerate(SEEDS):
        log = (pkg.folder / f"train_seed{s}.log").read_text()
        assert f"val_bpb:{VAL_BPB[i]:.8f}" in log
    assert not (pkg.folder / "logs").exists()
    assert (pkg.folder / "train_gpt.py").read_bytes() == Path(c.trainer).read_bytes()
    reqs = (pkg.folder / "requirements.txt").read_text().splitlines()
    assert {"torch", "numpy", "sentencepiece", "brotli", "python-minifier"} <= {r.split("==")[0] for r in reqs[1:]}
    assert sorted(pkg.files) == sorted(["README.md", "submission.json", "train_gpt.py", "train_seed0.log",
                                        "train_seed1.log", "train_seed2.log", "requirements.txt"])


def test_rules_not_met_are_warnings(tmp_path: Path) -> None:
    c = _campaign(tmp_path)
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", c)
    path = cdir / STAGE_DIRS["gate-b"] / "summary.json"
    data = json.loads(path.read_text())
    data["decision"]["per_seed"][1]["artifact_bytes"] = 16_000_001
    data["decision"]["per_seed"][2]["eval_time_ms"] = 612_000.0
    path.write_text(json.dumps(data))
    pkg = build_package(c, cdir, tmp_path / "pg", date="2026-11-24")
    text = "\n".join(pkg.warnings)
    assert "artifact ≤ 16,000,000 bytes (max 16,000,001)" in text
    assert "eval ≤ 600 s (max 612.0 s)" in text
    assert pkg.submission["compliance"]["artifact_under_16mb"] is False
    assert pkg.submission["compliance"]["eval_under_600s"] is False


def test_one_seed_from_gate_a_when_gate_b_never_ran(tmp_path: Path) -> None:
    c = _campaign(tmp_path)
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", c, gate_b=False)
    pkg = build_package(c, cdir, tmp_path / "pg", date="2026-11-24")
    assert pkg.submission["seeds"] == [0]
    assert pkg.submission["val_bpb"] == VAL_BPB[0]
    assert any("≥ 3 seeds (1 seed(s) from gate-a)" in w for w in pkg.warnings)
    assert any("record test p < 0.01" in w for w in pkg.warnings)
    assert pkg.submission["p_value"] is None


def test_folder_name_is_safe() -> None:
    assert folder_name("2026-05-10", "MyStack + Phased TTT") == "2026-05-10_MyStack_Phased_TTT"
    assert folder_name("2026-05-10", "a/b c..1.06") == "2026-05-10_a_b_c..1.06"


def test_cli_package_and_verify_tarball(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from golfrun.cli import main

    monkeypatch.chdir(tmp_path)
    c = _campaign(tmp_path)
    write_campaign_dir(tmp_path / "runs" / "camp", c)
    args = [a for s in SETS + [f'trainer="{_trainer(tmp_path)}"'] for a in ("--set", s)]
    r = CliRunner().invoke(main, ["package", *args, "--runs-dir", "runs", "--out", "pg", "--date", "2026-11-24"])
    assert r.exit_code == 0, r.output
    assert "warning: rule not met: record test p < 0.01" in r.output
    assert (tmp_path / "pg/records/track_10min_16mb/2026-11-24_VarLen_Corrector/submission.json").is_file()
    r = CliRunner().invoke(main, ["package", *args, "--runs-dir", "runs", "--date", "24.11.2026"])
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.output

    from golfrun.provenance.tarball import Member, build_tarball

    info = build_tarball(tmp_path / "t.tar.gz", "camp-preserve", [Member("a.txt", data=b"x" * 5000)])
    ok = CliRunner().invoke(main, ["verify-tarball", str(info.path)])
    assert ok.exit_code == 0 and "OK (1 members" in ok.output
    data = bytearray(info.path.read_bytes())
    data[len(data) // 2] ^= 0x10
    info.path.write_bytes(bytes(data))
    bad = CliRunner().invoke(main, ["verify-tarball", str(info.path)])
    assert bad.exit_code == 12 and "FAILED" in bad.output


GOLDEN = Path(__file__).parent / "golden" / "package"


def test_package_golden_files(tmp_path: Path) -> None:
    """README.md and submission.json of the fixture campaign, byte for byte (regenerate after a
    deliberate change with GOLFRUN_UPDATE_GOLDEN=1 and read the diff)."""
    import os

    c = _campaign(tmp_path, ['preserve.submission.technique_summary="An n-gram posterior corrector after phased TTT."',
                             'preserve.submission.attribution={"phased TTT" = "@romeerp (PR #1610)"}',
                             "preserve.submission.base_pr=1530"])
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", c)
    pre_ttt = [1.08336093, 1.08592, 1.08561]  # the record's quantized scores before TTT (trainer-facts §5)
    for res_path in sorted(cdir.glob("*/jobs/*/results.json")):
        res = json.loads(res_path.read_text())
        res["evals"].insert(0, {"label": "diagnostic quantized", "val_loss": 2.8, "val_bpb": pre_ttt[res["seed"]],
                                "eval_time_ms": 55851.0})
        res_path.write_text(json.dumps(res))
    pkg = build_package(c, cdir, tmp_path / "pg", date="2026-11-24")
    for i, s in enumerate(SEEDS):
        assert pkg.submission["seed_results"][str(s)]["pre_ttt_val_bpb"] == pre_ttt[i]
    for name in ("README.md", "submission.json"):
        got = (pkg.folder / name).read_text()
        assert str(tmp_path) not in got
        if os.environ.get("GOLFRUN_UPDATE_GOLDEN"):
            GOLDEN.mkdir(parents=True, exist_ok=True)
            (GOLDEN / name).write_text(got)
        assert got == (GOLDEN / name).read_text(), name


def test_code_shipped_raw_counts_against_the_cap(tmp_path: Path) -> None:
    """The trainer counts a minified 28,599-byte code size; the folder ships a 40,000-byte file:
    the shipped count is what the cap applies to."""
    c = _campaign(tmp_path)
    Path(c.trainer).write_text("#" * 39_999 + "\n")
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", c)
    pkg = build_package(c, cdir, tmp_path / "pg", date="2026-11-24")
    assert pkg.submission["compliance"]["artifact_under_16mb"] is False
    shipped = ARTIFACT[0] - 28_599 + 40_000
    assert any(f"artifact ≤ 16,000,000 bytes (max {shipped:,})" in w for w in pkg.warnings)
    readme = (pkg.folder / "README.md").read_text()
    assert "| artifact ≤ 16,000,000 bytes | **no** |" in readme


def test_non_finite_statistics_never_reach_json(tmp_path: Path) -> None:
    c = _campaign(tmp_path)
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", c)
    path = cdir / STAGE_DIRS["gate-b"] / "summary.json"
    data = json.loads(path.read_text())
    data["decision"]["record_test"].update({"t": 1e400, "df": 1e400, "p": 0.0})  # json reads 1e400 as inf
    path.write_text(json.dumps(data).replace('"t": Infinity', '"t": 1e400').replace('"df": Infinity', '"df": 1e400'))
    pkg = build_package(c, cdir, tmp_path / "pg", date="2026-11-24")
    text = (pkg.folder / "submission.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    sub = json.loads(text)
    assert sub["t_statistic"] is None and sub["welch_df"] is None and sub["p_value"] == 0.0


def test_compliance_comes_from_the_audit_of_each_seeds_log(tmp_path: Path) -> None:
    """Seed 1's job log shows (by its own timestamps) 587.1 s of training and 14 s of Hessians and
    GPTQ after it, and a validation split cut to half: the package says so, from the audit."""
    from golfrun.data.shards import write_shard

    c = _campaign(tmp_path)
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", c)
    write_shard(cdir / "data" / "fineweb_val_000000.bin", [1] * 4097)  # 4,096 targets
    stamp = 1_776_140_000
    log = cdir / STAGE_DIRS["gate-b"] / "jobs" / "seed1" / "train_seed1.txt"
    log.write_text("".join(f"{stamp + t:.3f} {line}\n" for t, line in [
        (0.0, "val_tokens: 2048"),
        (600.0, f"stopping_early: wallclock_cap train_time: {TRAIN_MS[1]:.0f}ms step: 4834/20000"),
        (601.0, "GPTQ:collecting Hessians from calibration data..."),
        (615.0, "Quantized weights:"),
        (700.0, f"quantized_ttt_phased val_loss:{VAL_LOSS[1]:.8f} val_bpb:{VAL_BPB[1]:.8f} eval_time:{EVAL_MS[1]:.0f}ms"),
    ]))
    pkg = build_package(c, cdir, tmp_path / "pg", date="2026-11-24")
    assert pkg.submission["compliance"]["train_under_600s"] is False
    assert pkg.submission["compliance"]["full_validation_split"] is False
    text = "\n".join(pkg.warnings)
    assert "train (incl. GPTQ) ≤ 600 s (max 601.1 s)" in text
    assert "whole validation split scored (seed 1: full_validation: VIOLATED (2,048 targets against 4,096)" in text


def test_a_record_script_without_results_json_is_packaged_from_its_logs(tmp_path: Path) -> None:
    """A campaign whose trainer is a published record's script (init --from-record): its jobs leave
    only the trainer's output in job.log; the package still finds and ships each seed's log."""
    c = _campaign(tmp_path)
    cdir = write_campaign_dir(tmp_path / "runs" / "camp", c)
    for folder in sorted(cdir.glob("*/jobs/*")):
        seed = json.loads((folder / "results.json").read_text())["seed"]
        i = SEEDS.index(seed)
        (folder / "results.json").unlink()
        for txt in folder.glob("*.txt"):
            txt.unlink()
        (folder / "job.log").write_text(
            f"Hyperparameters:\n  seed: {seed}\n  run_id: train_seed{seed}\n"
            f"final_int6_roundtrip_exact val_loss:2.9 val_bpb:1.1\n"
            f"final_int6_sliding_window_exact val_loss:{VAL_LOSS[i]:.8f} val_bpb:{VAL_BPB[i]:.8f}\n")
    pkg = build_package(c, cdir, tmp_path / "pg", date="2026-11-24")
    assert not [w for w in pkg.warnings if "no trainer log" in w]
    for i, s in enumerate(SEEDS):
        assert f"final_int6_sliding_window_exact val_loss:{VAL_LOSS[i]:.8f}" in (pkg.folder / f"train_seed{s}.log").read_text()
