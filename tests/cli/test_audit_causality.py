"""`golfrun audit --causality`: the real tiny CPU trainer passes (its TTT evaluation rerun twice,
bit for bit on the CPU); a planted violation fails — tests/fixtures/trainers/fake_scoring_trainer.py
scoring real val shards with a target that reads a later token — and the pure cut, perturbation and
verdict (golfrun/audit/causality.py) do what they say; a job the reruns cannot serve is refused,
naming what is missing, before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from golfrun.audit.causality import Cut, Scores, Tolerance, choose_cut, judge, later_targets, perturb_stream
from golfrun.cli import main
from golfrun.data.shards import write_shard

FAKE = Path(__file__).resolve().parents[1] / "fixtures" / "trainers" / "fake_scoring_trainer.py"
RECORD_SCRIPT = Path(__file__).resolve().parents[1] / "fixtures" / "trainers" / "fake_record_trainer.py"
V = 64


# --------------------------------------------------------------------------- the pure parts


def _docs(lengths: list[int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([np.concatenate([[1], rng.integers(2, V, n - 1)]) for n in lengths]).astype(np.int64)


def test_the_cut_is_inside_a_chunk_of_a_document_scored_again_later() -> None:
    tokens = _docs([4, 20, 4, 20])  # documents at 0, 4, 24, 28
    n = tokens.size - 1
    step = np.full(n, -1)
    step[0:4], step[4:12], step[12:20], step[20:24] = 0, 1, 3, 5  # doc 1 in three chunks (events 1, 3, 5)
    step[24:28], step[28:36], step[36:44], step[44:47] = 2, 4, 6, 7
    scored = np.ones(n, bool)
    cut = choose_cut(step, scored, tokens, seq_len=8)
    # the middle event (4) is doc 3's first chunk, scored again at events 6 and 7: cut mid-chunk
    assert cut == Cut(32, 4)
    later = later_targets(step, scored, cut)
    assert not later[28:32].any() and later[32:36].all()  # the chunk split at the cut
    assert later[step > 4].all() and not later[step < 4].any()


def test_a_dump_without_steps_is_cut_mid_window() -> None:
    tokens = _docs([30, 40, 30])
    n = tokens.size - 1
    cut = choose_cut(np.full(n, -1), np.ones(n, bool), tokens, seq_len=16)
    assert cut == Cut(56, None) and cut.position % 16 == 8
    later = later_targets(np.full(n, -1), np.ones(n, bool), cut)
    assert later.sum() == n - 56 and later[56:].all()
    with pytest.raises(ValueError, match="1 target"):
        choose_cut(np.full(3, -1), np.array([True, False, False]), tokens[:4], 16)


def test_perturb_replaces_exactly_the_later_targets_and_keeps_every_bos() -> None:
    tokens = _docs([10, 12, 9])
    later = np.zeros(tokens.size - 1, bool)
    later[7:20] = True  # targets 8..20; token 10 is the second document's BOS
    out = perturb_stream(tokens, later, V)
    changed = np.flatnonzero(out != tokens)
    assert list(changed) == [k for k in range(8, 21) if tokens[k] != 1]
    assert np.array_equal(out == 1, tokens == 1) and out.min() >= 0 and out.max() < V
    assert np.array_equal(out, perturb_stream(tokens, later, V))  # seeded: the same copy each time
    with pytest.raises(ValueError, match="vocabulary"):
        perturb_stream(tokens, later, 3)


def _scores(nll: np.ndarray, step: np.ndarray | None = None) -> Scores:
    return Scores(nll, np.full(nll.size, -1) if step is None else step)


def test_judge_against_the_control_noise_floor() -> None:
    cut = Cut(50)
    run = np.linspace(1.0, 3.0, 100)
    moved_after = run.copy()
    moved_after[50:] += 0.5
    ok = judge(_scores(run), _scores(run.copy()), _scores(moved_after), cut)
    assert (ok.ok, ok.observed, ok.limit, ok.check) == (True, 0.0, 1e-9, "causality")
    assert "50 targets before, 50 after" in ok.detail and "50 of 50 after the cut changed" in ok.detail
    leaked = moved_after.copy()
    leaked[49] += 1e-6
    bad = judge(_scores(run), _scores(run.copy()), _scores(leaked), cut)
    assert bad.ok is False and bad.observed == pytest.approx(1e-6) and "first: target 49" in bad.detail
    # a GPU-like control off by 1e-4: the scores before the cut may move by 4x that, not more
    noisy = run + 1e-4
    within, beyond = moved_after.copy(), moved_after.copy()
    within[:50] += 3e-4
    beyond[:50] += 5e-4
    assert judge(_scores(run), _scores(noisy), _scores(within), cut).ok is True
    f = judge(_scores(run), _scores(noisy), _scores(beyond), cut)
    assert f.ok is False and f.limit == pytest.approx(4e-4)
    # nothing moved after the cut, a control that is not the scored evaluation, other targets: not shown
    assert judge(_scores(run), _scores(run.copy()), _scores(run.copy()), cut).ok is None
    assert judge(_scores(run), _scores(run + 0.1), _scores(moved_after), cut).ok is None
    holed = moved_after.copy()
    holed[70] = np.nan
    assert "other targets" in judge(_scores(run), _scores(run.copy()), _scores(holed), cut).detail


# --------------------------------------------------------------------------- a job folder of the test trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two val shards of BOS-started documents (the split falls inside a document) and a tokenizer file."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    stream = _docs([int(x) for x in rng.integers(5, 60, 30)], seed=3)
    folder = root / "datasets" / f"fineweb10B_sp{V}"
    write_shard(folder / "fineweb_val_000000.bin", stream[:401])
    write_shard(folder / "fineweb_val_000001.bin", stream[401:])
    write_shard(folder / "fineweb_train_000000.bin", stream)
    (root / "tokenizers").mkdir()
    (root / "tokenizers" / f"fineweb_{V}_bpe.model").write_bytes(b"x")
    return root


def _fake_job(folder: Path, data: Path, **env: str) -> Path:
    folder.mkdir(parents=True)
    full = {**os.environ, "DATA_DIR": str(data), "ARTIFACT_DIR": str(folder), "RUN_ID": "seed0", "SEED": "0",
            "VOCAB_SIZE": str(V), "SCORE_DUMP_PATH": "scores.npz", **env}
    subprocess.run([sys.executable, str(FAKE)], cwd=folder, env=full, check=True, capture_output=True)
    return folder


def _audit(*args: str) -> tuple[int, dict | str]:
    r = CliRunner().invoke(main, ["audit", *args])
    try:
        return r.exit_code, json.loads(r.stdout)
    except ValueError:
        return r.exit_code, r.output


def _causality(report: dict) -> dict:
    (f,) = [f for f in report["findings"] if f["check"] == "causality"]
    return f


@pytest.mark.parametrize("ttt", ["1", "0"])
def test_a_clean_run_passes_and_a_planted_violation_fails(tmp_path: Path, data: Path, ttt: str) -> None:
    clean = _fake_job(tmp_path / "clean", data, TTT_ENABLED=ttt)
    code, report = _audit(str(clean), "--causality", "--trainer", str(FAKE), "--json")
    assert code == 0, report
    f = _causality(report)
    assert (f["ok"], f["observed"], f["limit"]) == (True, 0.0, 1e-9)
    assert report["compliance"]["no_val_token_used_before_scored"] is True
    assert ("inside scoring event" in f["detail"]) == (ttt == "1")
    leaky = _fake_job(tmp_path / "leaky", data, TTT_ENABLED=ttt, FAKE_LEAK_AHEAD="1")
    code, report = _audit(str(leaky), "--causality", "--trainer", str(FAKE), "--json")
    assert code == 10, report
    f = _causality(report)
    assert f["ok"] is False and f["observed"] > f["limit"] == 1e-9
    assert "1 target(s) before the cut moved past it" in f["detail"]  # the one reading the token after the cut
    assert report["compliance"]["no_val_token_used_before_scored"] is False


def test_refusals_name_what_is_missing(tmp_path: Path, data: Path) -> None:
    no_dump = _fake_job(tmp_path / "nodump", data, SCORE_DUMP_PATH="")
    code, out = _audit(str(no_dump), "--causality", "--trainer", str(FAKE))
    assert code == 2 and "no score dump of the final score 'diagnostic quantized'" in str(out)
    job = _fake_job(tmp_path / "job", data)
    code, out = _audit(str(job), "--causality", "--trainer", str(RECORD_SCRIPT))
    assert code == 2 and "declares no _ENV_SPEC" in str(out)
    code, out = _audit(str(job), "--causality", "--trainer", str(FAKE), "--data-dir", str(tmp_path))
    assert code == 2 and "no val shards of sp64" in str(out)
    (job / "job.json").write_text(json.dumps({"trainer": str(FAKE), "trainer_sha256": "0" * 64}))
    code, out = _audit(str(job), "--causality")
    assert code == 2 and "not the trainer that ran this job" in str(out)
    records = Path(__file__).parent / "records" / "2026-04-13_VarLenAttn_PhasingTTT2000"
    code, out = _audit(str(records), "--causality")
    assert code == 2 and "a records folder" in str(out)
    subset = _fake_job(tmp_path / "subset", data, VAL_DOC_FRACTION="0.5")
    code, out = _audit(str(subset), "--causality", "--trainer", str(FAKE))
    assert code == 2 and "VAL_DOC_FRACTION=0.5" in str(out)
    code, out = _audit(str(job), "--data-dir", str(data))
    assert code == 2 and "go with --causality" in str(out)


# --------------------------------------------------------------------------- the real trainer


def test_the_real_tiny_trainer_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train_gpt.py at tiny sizes on the CPU with phased TTT: its scored TTT evaluation, rerun by the
    audit, reproduces the run bit for bit (one thread, as the run had) and keeps every score before a
    mid-chunk cut while the ones after it move."""
    from golfrun.data.synthetic import build_dataset
    from tests.trainer.conftest import run_trainer

    build_dataset(tmp_path / "data", vocab_size=512, train_docs=400, val_docs=30, train_shards=1, seed=1234)
    ttt = {"TTT_ENABLED": "1", "TTT_LORA_RANK": "4", "TTT_CHUNK_SIZE": "32", "TTT_EVAL_SEQ_LEN": "128",
           "TTT_BATCH_SIZE": "8", "PHASED_TTT_ENABLED": "1", "PHASED_TTT_PREFIX_DOCS": "8",
           "GLOBAL_TTT_CHUNK_TOKENS": "512", "GLOBAL_TTT_BATCH_SEQS": "2", "TTT_DEBUG_BYPASS": "1",
           "ITERATIONS": "8", "GPTQ_CALIBRATION_BATCHES": "2", "SCORE_DUMP_PATH": "scores.npz"}
    job = tmp_path / "job"
    run_trainer(tmp_path / "data", job, ttt)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    trainer = Path(__file__).resolve().parents[2] / "train_gpt.py"
    code, report = _audit(str(job), "--causality", "--trainer", str(trainer), "--json")
    assert code == 0, [x for x in report["findings"] if not x["ok"]] if isinstance(report, dict) else report
    f = _causality(report)
    assert (f["ok"], f["observed"], f["limit"]) == (True, 0.0, 1e-9), f
    assert "inside scoring event" in f["detail"] and "control max |Δnll| 0 " in f["detail"]
    assert report["compliance"]["score_every_target_once"] is True  # the whole split, scored by TTT
