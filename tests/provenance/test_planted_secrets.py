"""Planted secrets never reach anything a campaign run writes.

The real `golfrun run-all` runs a whole campaign (every stage, the real engine, the local backend,
the preserve stage with a folder target and a Hub target) in a subprocess, with secrets in its
environment. The trainer is the pipeline's fake (tests/fixtures/pipeline_trainer.py), which keeps
the trainer contract but here prints its whole environment and a private key file's contents. Then every file
under the test's folder, every member of every tarball and every file the Hub received is scanned
for the secret values. The Hub is the loopback server of tests/fixtures/hf_hub_server.py (the real
Hub is unreachable from here).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.hf_hub_server import HubServer

ROOT = Path(__file__).resolve().parents[2]
FAKE_TRAINER = ROOT / "tests" / "fixtures" / "pipeline_trainer.py"
KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQyNTUxOQPLANTED"
PRIVATE_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_BODY}\n-----END OPENSSH PRIVATE KEY-----\n"
SECRETS = {
    "HF_TOKEN": "hf_PLANTEDhubtoken0123456789",
    "RUNPOD_API_KEY": "rpa_PLANTEDrunpodkey0123456789",
    "MY_SECRET": "planted-secret-value-42",
    "DB_PASSWORD": "hunter2-PLANTED-password",
}

CAMPAIGN = """
name = "secrets"
trainer = "{trainer}"
[trainer_env]
NUM_LAYERS = "2"
TRAIN_BATCH_TOKENS = "8192"
[backend]
kind = "local"
[verify_pod]
gpu_count = 0
required_packages = []
min_free_disk_gb = 0.0
[data]
source = "synthetic"
variant = "sp512"
train_shards = 1
min_free_disk_gb = 0.0
[data.synthetic]
vocab_size = 512
train_docs = 300
val_docs = 50
[reference]
seeds = [0, 1, 2]
val_loss = [5.0, 5.0025, 5.005]
val_bpb = [2.0, 2.001, 2.002]
artifact_bytes = [100000, 100000, 100000]
[gate_a]
seed = 0
bpb_tolerance = 0.01
[ablation]
mode = "eval_only"
promote_delta_bpb = -0.002
hold_delta_bpb = -0.001
[[ablation.variants]]
name = "better"
env = {{ FAKE_DELTA = "-0.01" }}
[gate_b]
seeds = [0, 1, 2]
mean_tolerance_bpb = 0.05
[preserve]
targets = ["dir:{kept}", "hf:golfer/secrets-evidence"]
"""


def _blobs(path: Path) -> list[tuple[str, bytes]]:
    """A file's bytes, plus every member of it when it is a (gzipped) tarball, plus gunzipped data."""
    data = path.read_bytes()
    out = [(str(path), data)]
    out += _inner(str(path), data)
    return out


def _inner(name: str, data: bytes) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    if data[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(data)
            out.append((f"{name}!gunzip", raw))
            data = raw
        except (OSError, EOFError):
            return out
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m)
                if f is not None:
                    out.append((f"{name}!{m.name}", f.read()))
    except tarfile.TarError:
        pass
    return out


def _scan(blobs: list[tuple[str, bytes]], needles: list[str]) -> list[str]:
    return [f"{name}: contains {needle[:12]}…" for name, data in blobs for needle in needles if needle.encode() in data]


@dataclass
class Run:
    root: Path
    camp: Path
    key_file: Path
    hub: HubServer
    env: dict[str, str]
    proc: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def campaign_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One whole campaign through `golfrun run-all` (a subprocess), secrets in its environment."""
    tmp_path = tmp_path_factory.mktemp("secrets-campaign")
    key_file = tmp_path / "keys" / "id_planted"
    key_file.parent.mkdir()
    key_file.write_text(PRIVATE_KEY)
    camp = tmp_path / "camp.toml"
    camp.write_text(CAMPAIGN.format(trainer=FAKE_TRAINER, kept=tmp_path / "kept"))
    hub = HubServer().start()
    env = {
        **os.environ,
        **SECRETS,
        "GOLFRUN_SSH_KEY": str(key_file),  # a private key file's path: secret by name
        "FAKE_PRINT_ENV": "*",  # the trainer prints every variable, secrets included
        "FAKE_DUMP_FILE": str(key_file),  # and the key itself
        "PYTHONPATH": str(ROOT),
        "HF_ENDPOINT": hub.endpoint,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    try:
        proc = subprocess.run([sys.executable, "-m", "golfrun.cli", "run-all", "--campaign", str(camp), "--runs-dir", "runs"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        yield Run(tmp_path, camp, key_file, hub, env, proc)
    finally:
        hub.stop()


def test_no_planted_secret_in_anything_a_campaign_writes(campaign_run: Run) -> None:
    run, tmp_path, camp, key_file, hf_hub = campaign_run.proc, campaign_run.root, campaign_run.camp, campaign_run.key_file, campaign_run.hub
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "runs/secrets/05-preserve/summary.json").read_text())
    assert summary["verdict"] == "PASS", summary["reasons"]

    needles = [*SECRETS.values(), str(key_file)]
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "keys")
             and not p.is_relative_to(tmp_path / "hf-home") and not p.is_relative_to(tmp_path / "pg") and p != camp]
    assert any(p.name.endswith(".tar.gz") for p in files) and any(p.name == "job.log" for p in files)
    blobs = [b for p in files for b in _blobs(p)]
    assert len(blobs) > len(files)  # tarball members were opened
    hub = []
    for name, data in hf_hub.files("golfer/secrets-evidence").items():
        hub.append((f"hub:{name}", data))
        hub += _inner(f"hub:{name}", data)
    assert any(n.startswith("hub:secrets-preserve.tar.gz!") for n, _ in hub)
    leaks = _scan(blobs + hub, needles)
    assert leaks == [], "\n".join(leaks)
    # what the redaction left is visible: the variables were set, their values are gone
    job_logs = "".join(p.read_text() for p in files if p.name == "job.log")
    assert "MY_SECRET=***REDACTED***" in job_logs and "TRAIN_BATCH_TOKENS=8192" in job_logs
    # the console output of the run is scrubbed too
    assert _scan([("stdout", run.stdout.encode()), ("stderr", run.stderr.encode())], needles) == []

    # The private key's body, printed by the trainer over several lines: everything preserve writes
    # (tarball members, the bundle, uploads) is scrubbed of whole PEM blocks, and so are the job logs (below)
    preserved = [b for b in blobs if "05-preserve" in b[0] or "/kept/" in b[0]] + hub
    assert _scan(preserved, [KEY_BODY]) == []


def test_a_private_key_printed_by_the_trainer_stays_out_of_job_logs(campaign_run: Run) -> None:
    logs = [(str(p), p.read_bytes()) for p in (campaign_run.root / "runs").rglob("job.log")]
    assert logs
    assert _scan(logs, [KEY_BODY]) == []


def test_a_campaign_with_a_secret_in_trainer_env_is_refused(tmp_path: Path) -> None:
    camp = tmp_path / "camp.toml"
    camp.write_text(CAMPAIGN.format(trainer=FAKE_TRAINER, kept=tmp_path / "kept")
                    .replace('NUM_LAYERS = "2"', 'NUM_LAYERS = "2"\nWANDB_API_TOKEN = "planted-campaign-token-77"'))
    run = subprocess.run([sys.executable, "-m", "golfrun.cli", "run-all", "--campaign", str(camp), "--runs-dir", "runs"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert "WANDB_API_TOKEN" in run.stderr and "looks like a secret" in run.stderr
    assert "planted-campaign-token-77" not in run.stderr + run.stdout
    assert not (tmp_path / "runs").exists() or not any(
        b"planted-campaign-token-77" in p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file())


def test_package_of_a_real_run_matches_its_summaries(campaign_run: Run) -> None:
    """`golfrun package` (a subprocess) on the campaign that run-all just finished."""
    assert campaign_run.proc.returncode == 0
    root = campaign_run.root
    out = subprocess.run([sys.executable, "-m", "golfrun.cli", "package", "--campaign", str(campaign_run.camp),
                          "--runs-dir", "runs", "--out", "pg", "--date", "2026-11-24"],
                         cwd=root, env=campaign_run.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    folder = root / "pg/records/track_10min_16mb/2026-11-24_secrets"
    sub = json.loads((folder / "submission.json").read_text())
    gb = json.loads((root / "runs/secrets/04-gate-b/summary.json").read_text())["decision"]
    per_seed = {str(p["seed"]): p for p in gb["per_seed"]}
    assert sub["seeds"] == gb["seeds"] == [0, 1, 2]
    for seed, p in per_seed.items():
        assert sub["seed_results"][seed]["val_bpb"] == p["val_bpb"]
        assert sub["seed_results"][seed]["val_loss"] == p["val_loss"]
        assert sub["seed_results"][seed]["artifact_bytes"] == p["artifact_bytes"]
    assert sub["val_bpb"] == round(gb["val_bpb"]["mean"], 8)
    assert sub["val_loss"] == round(gb["val_loss"]["mean"], 8)
    rt = gb["record_test"]
    assert (sub["t_statistic"], sub["welch_df"], sub["p_value"]) == (rt.get("t"), rt.get("df"), rt.get("p"))
    readme = (folder / "README.md").read_text()
    for seed, p in per_seed.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| {seed} | "))
        assert f"| {p['val_loss']:.8f} | {p['val_bpb']:.8f} |" in row
    assert f"**{gb['val_bpb']['mean']:.8f}**" in readme
    assert "FAKE_DELTA=-0.01" in readme  # the promoted variant's env is in the command to reproduce
    for seed in per_seed:
        assert "diagnostic quantized val_loss:" in (folder / f"train_seed{seed}.log").read_text()
    assert (folder / "train_gpt.py").read_bytes() == FAKE_TRAINER.read_bytes()
    # the fake runs beat the reference by 0.025 nats with little spread: every rule is met
    assert rt["passed"] and sub["p_value"] < 0.01
    assert all(sub["compliance"].values()) and "rule not met" not in out.stderr
    assert "preserve.submission.author is empty" in out.stderr  # the campaign names no author
    # seed 0 was evaluated on gate-a's checkpoint: its training figures are gate-a's
    assert gb["per_seed"][0]["mode"] == "eval_only"
    assert sub["seed_results"]["0"]["train_time_s"] == 1.0 and sub["seed_results"]["0"]["steps"] == 3
    text = "".join(p.read_text() for p in folder.iterdir())
    assert not [v for v in SECRETS.values() if v in text]
