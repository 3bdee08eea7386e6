"""The report's pure parts: curves from log lines, defensive reading, golden page and data.

tests/report/fixtures/campaign/ is a fake-trainer campaign captured from `golfrun run-all`
(tests/fixtures/pipeline_campaign.py), with two additions that campaign cannot produce: a
reference log in the record's line format (reference/train0.txt, values invented) and gate-b's
sequential looks in the shape `decision.looks` carries them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from golfrun.report.collect import collect, parse_curve
from golfrun.report.data import CurvePoint
from golfrun.report.figures import FIGURE_TITLES, figures
from golfrun.report.render import render_html

HERE = Path(__file__).parent
FIXTURE = HERE / "fixtures" / "campaign"
GOLDEN = HERE / "golden"
STAGES = ("verify-pod", "download-data", "gate-a", "ablation", "gate-b", "preserve")
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(|<link\b|<script\b""", re.I)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if not path.exists() or os.environ.get("GOLFRUN_REGEN_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"differs from {path} (GOLFRUN_REGEN_GOLDEN=1 to accept)"


def _fixture_data():  # type: ignore[no-untyped-def]
    return dataclasses.replace(collect(FIXTURE), campaign_dir="<fixture>")


def test_curve_from_record_lines_interpolates_validation_times() -> None:
    lines = [
        "0/100 val_loss: 9.0000 val_bpb: 3.6000",
        "1/100 train_loss: 9.0000 train_time: 0.0m tok/s: 1000",
        "50/100 train_loss: 4.0000 train_time: 1.0m tok/s: 1000",
        "75/100 val_loss: 3.5000 val_bpb: 1.4000",
        "1700000000.123 100/100 train_loss: nan train_time: 2.0m tok/s: 1000",  # console capture prefix
        "stopping_early: wallclock_cap train_time: 130000ms step: 110/100",
        "110/100 val_loss: 3.0000 val_bpb: 1.2000",
        "diagnostic quantized val_loss:3.10000000 val_bpb:1.25000000 eval_time:900ms",
    ]
    assert parse_curve(lines) == [
        CurvePoint(0, 0.0, None, 3.6),
        CurvePoint(1, 0.0, 9.0, None),
        CurvePoint(50, 60.0, 4.0, None),
        CurvePoint(75, 90.0, None, 1.4),  # halfway between 60 s at step 50 and 120 s at step 100
        CurvePoint(110, 130.0, None, 1.2),  # the stopping line's exact time
    ]


def test_curve_of_the_real_trainer_on_the_tiny_preset() -> None:
    """The tail of train_gpt.py's log of a tiny-preset gate-a run (captured on this project's CPU
    build machine; the full log also holds the source dump, which parses to nothing)."""
    lines = (HERE / "fixtures" / "tiny-gate-a-seed0-tail.txt").read_text().splitlines()
    points = parse_curve(lines)
    assert [p.step for p in points] == [1, 2, 3, 4, 5, 10, 20, 30, 30]
    assert points[0] == CurvePoint(1, 36.0, 6.2378, None)
    assert points[-2] == CurvePoint(30, 732.0, 3.3006, None)
    assert points[-1] == CurvePoint(30, 732.0, None, 2.3557)  # the end-of-training validation
    assert all(p.val_bpb is None for p in points[:-1])  # diagnostics are final scores, not curve points


def test_baseline_lines_give_a_curve_with_their_own_times() -> None:
    lines = ["step:1/20 train_loss:6.9000 train_time:500ms step_avg:500.00ms",
             "step:20/20 val_loss:3.0000 val_bpb:1.5000 train_time:9000ms step_avg:450.00ms"]
    assert parse_curve(lines) == [CurvePoint(1, 0.5, 6.9, None), CurvePoint(20, 9.0, None, 1.5)]


def test_collect_reads_every_part_of_the_fixture() -> None:
    data = collect(FIXTURE)
    assert [s.stage for s in data.stages] == list(STAGES)
    assert [s.verdict for s in data.stages] == ["PASS"] * 5 + [None]
    assert [c.label for c in data.curves] == ["gate-a/seed0", "gate-b/seed1", "gate-b/seed2", "reference/train0"]
    assert data.promoted == data.gate_b_variant == "good"
    gate_b_scores = [s for s in data.scores if s.group == "gate-b"]
    assert [s.seed for s in gate_b_scores] == [0, 1, 2]
    assert [s.val_bpb for s in gate_b_scores] == pytest.approx([1.99, 1.991, 1.992])
    th = data.thresholds
    assert (th.gate_a_limit_bpb, th.reference_mean_bpb, th.ablation_baseline_bpb) == (2.01, 2.001, 2.0)
    assert th.promote_bpb == pytest.approx(1.998)
    gate_b = data.stage("gate-b")
    assert gate_b is not None and gate_b.stats is not None
    assert gate_b.stats.p == pytest.approx(0.000304, rel=1e-2) and [lk.n for lk in gate_b.stats.looks] == [2, 3]
    assert data.provenance.trainer_sha256 and len(data.provenance.trainer_sha256) == 64
    assert data.provenance.torch == "2.13.0+cpu" and data.provenance.hardware.startswith("CPU only")
    assert data.missing == ["preserve: not run"]
    json.dumps(data.to_dict(), allow_nan=False)  # plain JSON, no NaN


def test_collect_survives_old_broken_and_absent_files(tmp_path: Path) -> None:
    cdir = tmp_path / "half"
    shutil.copytree(FIXTURE, cdir)
    shutil.rmtree(cdir / "04-gate-b")
    shutil.rmtree(cdir / "05-preserve")
    (cdir / "03-ablation" / "summary.json").write_text("{ not json")
    old = json.loads((cdir / "02-gate-a" / "summary.json").read_text())
    for job in old["jobs"]:  # an older summary: no ledger, no result details
        for key in ("gpus", "gpu_seconds", "gpu_seconds_original", "compile", "result"):
            job.pop(key, None)
    for key in ("decision", "checks", "gpu_seconds_total", "cpu_seconds_total", "usd"):
        old.pop(key, None)
    (cdir / "02-gate-a" / "summary.json").write_text(json.dumps(old))
    vp = json.loads((cdir / "00-verify-pod" / "summary.json").read_text())
    vp["decision"]["facts"]["attention"] = ["sdpa", "fa3"]
    (cdir / "00-verify-pod" / "summary.json").write_text(json.dumps(vp))
    data = collect(cdir)
    assert data.provenance.attention == "available: sdpa, fa3"  # no results.json says which one ran
    assert [s.verdict for s in data.stages] == ["PASS", "PASS", "PASS", None, None, None]
    assert data.stage("ablation").problem.startswith("unreadable summary.json")  # type: ignore[union-attr]
    assert "gate-b: not run" in data.missing and "gate-a/seed0: SUCCEEDED, no final score" in data.missing
    assert any(m.startswith("no 05-preserve/provenance.json") for m in data.missing)
    assert data.provenance.trainer_sha256  # from verify-pod's decision instead
    assert data.stage("gate-a").jobs[0].gpu.from_ledger is False  # type: ignore[union-attr]
    pngs = figures(data)
    assert set(pngs) <= set(FIGURE_TITLES) and "curves" in pngs and "looks" not in pngs
    html = render_html(data, pngs)
    assert "NO SUMMARY" in html and "What this report cannot show" in html


def test_golden_page_and_data() -> None:
    data = _fixture_data()
    placeholders = {name: name.encode() for name in FIGURE_TITLES}  # the figures' bytes are not the page's concern
    html = render_html(data, placeholders)
    _golden("report.html", html)
    _golden("report.json", json.dumps(data.to_dict(), indent=2, sort_keys=True) + "\n")
    assert not EXTERNAL.search(html)
    for stage in STAGES:
        assert f"<td>{stage}</td>" in html


def test_page_without_any_figure_says_what_is_absent() -> None:
    html = render_html(_fixture_data(), {})
    assert "<img" not in html
    assert "No curve" in html and "No final score yet" in html and "No job times" in html


def test_figures_are_pngs_and_deterministic() -> None:
    data = _fixture_data()
    first, second = figures(data), figures(data)
    assert set(first) == set(FIGURE_TITLES)  # the fixture has data for every figure, looks included
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000 for png in first.values())
    assert first == second


@pytest.mark.parametrize("overrides, verdicts, missing_line", [
    (['ablation.variants=[{name="grey", env={FAKE_DELTA="-0.0015"}}]'],
     {"gate-a": "PASS", "ablation": "HOLD", "gate-b": "SKIPPED"}, "gate-b: SKIPPED — ablation is HOLD"),
    (["trainer_env.FAKE_CRASH=1"],
     {"gate-a": "ERROR", "ablation": "SKIPPED", "gate-b": "SKIPPED"}, "gate-a/seed0: FAILED, no final score"),
])
def test_a_held_or_crashed_campaign_is_drawn_as_far_as_it_got(tmp_path: Path, campaign: Path, overrides: list[str],
                                                               verdicts: dict[str, str], missing_line: str) -> None:
    from tests.fixtures.pipeline_campaign import run_golfrun

    sets = [arg for o in overrides for arg in ("--set", o)]
    run_golfrun(["run-all", "--campaign", str(campaign), *sets], cwd=tmp_path)
    data = collect(tmp_path / "runs" / "t")
    assert {s.stage: s.verdict for s in data.stages if s.stage in verdicts} == verdicts
    assert any(m.startswith(missing_line) for m in data.missing), data.missing
    pngs = figures(data)
    assert "curves" in pngs  # gate-a's training lines were logged before the hold or the crash
    html = render_html(data, pngs)
    for stage, verdict in verdicts.items():
        assert re.search(rf"<td>{stage}</td>\s*<td><span class=\"verdict \w+\">{verdict}</span>", html), stage
    assert not EXTERNAL.search(html)
