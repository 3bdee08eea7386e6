"""The report of a fake-trainer campaign (tests/fixtures/pipeline_campaign.py), finished and
killed, rendered by a real headless Chromium (Debian's `chromium`, installed by
scripts/ci/install-services.sh): the screenshot is not blank, the page's text names every stage
and verdict, and the page loads nothing from outside."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.fixtures.pipeline_campaign import TWIN_VARIANT, run_golfrun, write_campaign

STAGES = ("verify-pod", "download-data", "gate-a", "ablation", "gate-b", "preserve")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(|<link\b|<script\b""", re.I)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                "(scripts/ci/install-services.sh installs Debian's chromium)")


def _chromium(tmp: Path, page: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    argv = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1200,3000", *mode, page.as_uri()]
    return subprocess.run(argv, capture_output=True, text=True, timeout=240)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _render(tmp: Path, page: Path) -> str:
    """Screenshot and DOM of the page as Chromium draws it; asserts the screenshot is not blank."""
    shot = tmp / "shot.png"
    done = _chromium(tmp, page, f"--screenshot={shot}")
    assert shot.is_file(), done.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    assert pixels.var() > 0.01  # a blank page is one colour
    assert (pixels.min(axis=2) < 0.9).mean() > 0.05  # and more than a sliver of it is drawn on
    dom = _chromium(tmp, page, "--dump-dom")
    assert dom.returncode == 0 and "<img" in dom.stdout, dom.stderr[-2000:]
    parser = _Text()
    parser.feed(dom.stdout)
    return " ".join(parser.parts)


def _summaries(runs: Path) -> dict[str, str]:
    return {s: json.loads(next(runs.glob(f"*-{s}/summary.json")).read_text())["verdict"] for s in STAGES}


def test_report_of_a_finished_campaign_renders(tmp_path: Path, campaign: Path) -> None:
    ran = run_golfrun(["run-all", "--campaign", str(campaign)], cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    runs = tmp_path / "runs" / "t"
    with tarfile.open(runs / "05-preserve" / "t-preserve.tar.gz") as tar:  # preserve archived its report
        names = tar.getnames()
    assert {"t-preserve/05-preserve/report/report.html", "t-preserve/05-preserve/report/bpb.png"} <= set(names)

    made = run_golfrun(["report", "--campaign", str(campaign)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    page = runs / "report" / "report.html"
    assert f"report: {page}" in made.stdout
    pngs = {p.name for p in (runs / "report").glob("*.png")}
    assert {"curves.png", "bpb.png", "gpu.png", "timeline.png"} <= pngs  # + looks.png when gate-b looked
    html = page.read_text()
    assert not EXTERNAL.search(html) and html.count('src="data:image/png;base64,') == len(pngs)

    text = _render(tmp_path, page)
    for stage, verdict in _summaries(runs).items():
        assert verdict == "PASS"
        assert re.search(rf"{re.escape(stage)}\s+{verdict}", text), stage
    assert "promoted" in text and "Provenance" in text

    status = run_golfrun(["status", "--campaign", str(campaign), "--json"], cwd=tmp_path)
    assert json.loads(status.stdout)["report"] == str(page)


def test_report_of_a_killed_campaign_renders(tmp_path: Path, campaign: Path) -> None:
    ran = run_golfrun(["run-all", "--campaign", str(campaign), "--set", "gate_a.bpb_tolerance=-1.0"], cwd=tmp_path)
    assert ran.returncode == 10, ran.stdout[-3000:] + ran.stderr[-3000:]  # gate-a KILL
    runs = tmp_path / "runs" / "t"
    verdicts = _summaries(runs)
    assert verdicts == {"verify-pod": "PASS", "download-data": "PASS", "gate-a": "KILL", "ablation": "SKIPPED",
                        "gate-b": "SKIPPED", "preserve": "PASS"}
    out = tmp_path / "out"
    made = run_golfrun(["report", "--campaign", str(campaign), "--set", "gate_a.bpb_tolerance=-1.0", "--out", str(out)],
                       cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "missing: ablation: SKIPPED" in made.stdout
    html = (out / "report.html").read_text()
    assert not EXTERNAL.search(html)

    text = _render(tmp_path, out / "report.html")
    for stage, verdict in verdicts.items():
        assert re.search(rf"{re.escape(stage)}\s+{verdict}", text), stage
    assert "What this report cannot show" in text and "gate-b: SKIPPED" in text
    status = run_golfrun(["status", "--campaign", str(campaign), "--set", "gate_a.bpb_tolerance=-1.0"], cwd=tmp_path)
    assert "report: " + str(runs / "05-preserve" / "report" / "report.html") in status.stdout  # preserve's


def test_report_shows_the_failed_attempt_of_a_stage_that_passed_on_its_rerun(tmp_path: Path, shared_data: Path) -> None:
    """gate-a's job fails once (exit 3), the rerun passes: gate-a's summary tells only the passing run,
    but the report's spend (the ledger's, as `golfrun spend` counts it) shows both attempts and their time."""
    from golfrun import budget
    from tests.fixtures.pipeline_campaign import write_campaign

    campaign = write_campaign(tmp_path, shared_data, trainer_env={"FAKE_CRASH_ONCE": str(tmp_path / "crashed")})
    assert run_golfrun(["run-all", "--campaign", str(campaign)], cwd=tmp_path).returncode == 12  # gate-a ERROR
    again = run_golfrun(["run-all", "--campaign", str(campaign)], cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    out = tmp_path / "out"
    made = run_golfrun(["report", "--campaign", str(campaign), "--out", str(out)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr

    runs = tmp_path / "runs" / "t"
    data = json.loads((out / "report.json").read_text())["spend"]
    assert [(a["stage"], a["job"], a["state"]) for a in data["attempts"] if a["stage"] == "gate-a"] == \
        [("gate-a", "seed0", "FAILED"), ("gate-a", "seed0", "SUCCEEDED")]
    gate_a = {r["stage"]: r for r in data["stages"]}["gate-a"]
    assert (gate_a["attempts"], gate_a["failed"], gate_a["source"]) == (2, 1, "attempts")
    failed = next(a for a in data["attempts"] if a["state"] == "FAILED")
    assert failed["device_seconds"] > 0  # a CPU campaign: its device-seconds are CPU-seconds
    latest = json.loads((runs / "02-gate-a" / "summary.json").read_text())["cpu_seconds_total"]
    assert gate_a["cpu_seconds"] == pytest.approx(latest + failed["device_seconds"], abs=1e-3)
    spent = budget.spent(runs)  # the same sum as `golfrun spend` and the [budget] check, not a second one
    assert (data["cpu_seconds"], data["attempts_total"], data["attempts_failed"]) == \
        (spent.cpu_seconds, spent.attempts, 1) and data["pod_idle_gpu_seconds"] is None

    text = _render(tmp_path, out / "report.html")
    assert "Spent: every attempt" in text
    assert re.search(r"gate-a/seed0\s+FAILED\s+\S+\s+\S+", text) and re.search(r"gate-a/seed0\s+SUCCEEDED\s+\d{4}-", text)
    assert re.search(r"gate-a\s+2\s+1\s+[\d.]+\s+[\d.]+", text), text  # stage, attempts, failed, GPU-, CPU-minutes


def test_report_shows_the_rungs_of_paired_halving(tmp_path: Path, shared_data: Path) -> None:
    """An ablation halved by the paired rule (tests/stages/test_ablation_halving.py's variants): the page has a
    table per rung with every variant's p-value and whether it went on, as the browser draws it."""
    campaign = write_campaign(tmp_path, shared_data, extra=TWIN_VARIANT)
    paired = ["--set", "ablation.halving_fractions=[0.25]", "--set", 'ablation.halving_rule="paired"',
              "--set", "ablation.halving_chunks=16"]
    ran = run_golfrun(["run-all", "--campaign", str(campaign), *paired], cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    made = run_golfrun(["report", "--campaign", str(campaign), *paired], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    text = _render(tmp_path, tmp_path / "runs" / "t" / "report" / "report.html")
    assert "Successive halving" in text and "Rung 1: 0.25 of the validation documents." in text
    assert "p (worse than best)" in text and "over 16 chunks of documents" in text
    rows = re.findall(r"(good|twin|bad)\s+(\d\.\d+)\s+(-?\d\.\d+(?:e-?\d+)?)\s+(best|\d\.\d+(?:e-?\d+)?)\s+(yes|dropped)", text)
    assert sorted((name, kept) for name, *_, kept in rows) == [("bad", "dropped"), ("good", "yes"), ("twin", "yes")]
    assert [p for name, _, _, p, _ in rows if name == "bad"][0] != "best"
