"""`golfrun init --from-record`: hand-made records folders (tests/cli/records/, written from the
published layouts of submission-format.md §1) in three styles — a record log with epoch prefixes
(PR #1610's logs/train<i>.txt), the old final_int8_zlib_roundtrip baseline (train.log), and an int6
sliding-window script (train_seed<N>.log) — become campaigns the loader accepts, or that it rejects
naming the key that could not be inferred."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from golfrun.campaign import load_campaign
from golfrun.cli import main
from golfrun.errors import CampaignError
from golfrun.records.folder import read_record_folder

RECORDS = Path(__file__).parent / "records"
PR1610 = RECORDS / "2026-04-13_VarLenAttn_PhasingTTT2000"
BASELINE = RECORDS / "2026-03-17_NaiveBaseline"
SLIDING = RECORDS / "2026-03-25_Int6_SlidingWindow"


def _init(tmp_path: Path, folder: Path, *extra: str) -> tuple[int, str, Path]:
    out = tmp_path / "camp.toml"
    r = CliRunner().invoke(main, ["init", "--from-record", str(folder), "--out", str(out), *extra])
    return r.exit_code, r.output, out


def test_record_log_with_epoch_prefixes(tmp_path: Path) -> None:
    code, output, out = _init(tmp_path, PR1610)
    assert code == 0, output
    c = load_campaign(out)
    assert Path(c.trainer) == PR1610 / "train_gpt.py"
    assert c.trainer_env == {"PHASED_TTT_ENABLED": "1", "PHASED_TTT_PREFIX_DOCS": "2000"}
    assert c.backend.local.nproc_per_node == 8 and c.verify_pod.gpu_count == 8
    assert (c.data.source, c.data.variant, c.data.train_shards) == ("hf:kevclark/parameter-golf", "sp8192", 128)
    assert c.reference.seeds == [0, 1, 2]
    assert c.reference.val_bpb == [1.07216564, 1.07300174, 1.07325147]  # the logs', not submission.json's
    assert c.reference.val_loss == [2.76951521, 2.77167493, 2.77232]
    assert c.reference.artifact_bytes == [15996697, 15995985, 15988805]
    assert c.reference.name == "VarLenAttn + PhasingTTT" and c.gate_a.seed == 0
    # submission.json claims 1.07325100 for seed 2: reported, in the output and the file
    diff = "seed 2 val_bpb: log 1.07325147 (train2.txt), submission.json 1.073251"
    assert diff in output and diff in out.read_text()
    assert "score format: record-ttt-phased" in out.read_text()


def test_old_int8_zlib_roundtrip_baseline(tmp_path: Path) -> None:
    code, output, out = _init(tmp_path, BASELINE)
    assert code == 0, output
    c = load_campaign(out)
    assert c.reference.seeds == [1337] and c.reference.val_bpb == [1.2243657]
    assert c.reference.artifact_bytes == [15863489]
    assert c.trainer_env == {"DATA_PATH": "./data/datasets/fineweb10B_sp1024/", "MAX_WALLCLOCK_SECONDS": "600",
                             "TOKENIZER_PATH": "./data/tokenizers/fineweb_1024_bpe.model", "VOCAB_SIZE": "1024"}
    assert "RUN_ID" not in c.trainer_env  # per-run: golfrun sets it for each job
    assert "# note: README: DATA_PATH=./data/datasets/fineweb10B_sp1024/ is relative to the folder" in out.read_text()
    assert (c.data.source, c.data.variant, c.data.train_shards) == ("hf:willdepueoai/parameter-golf", "sp1024", 80)
    assert c.backend.local.nproc_per_node == 8
    # an early submission.json without seed_results: only its mean is compared, and said so
    assert "submission.json has no seed_results" in output
    assert "mean val_bpb: logs" not in output  # 1.22436570 against 1.2243657: they agree


def test_sliding_window_script_leaves_the_unknown_variant_marked(tmp_path: Path) -> None:
    code, output, out = _init(tmp_path, SLIDING)
    assert code == 0, output
    text = out.read_text()
    assert "UNRESOLVED data.variant: no log names a dataset" in output
    assert "# UNRESOLVED data.variant:" in text
    doc = tomllib.loads(text)
    assert doc["reference"]["seeds"] == [42, 0, 1234]  # submission.json's run order
    by_seed = dict(zip(doc["reference"]["seeds"], doc["reference"]["val_bpb"]))
    assert by_seed == {42: 1.1219, 0: 1.12237, 1234: 1.12166}  # the sliding-window exact lines, not the roundtrip
    assert doc["trainer_env"] == {"EVAL_STRIDE": "64", "NUM_LAYERS": "11"}  # SEED=$seed is the loop's
    assert doc["backend"]["local"]["nproc_per_node"] == 8
    assert "score format: int6-sliding-window" in text
    # the marked key stops the campaign from loading, naming it
    with pytest.raises(CampaignError, match=r"data\.(variant|source): 'UNRESOLVED: "):
        load_campaign(out)


def test_missing_run_command_marks_the_gpu_count(tmp_path: Path) -> None:
    folder = tmp_path / "rec"
    shutil.copytree(BASELINE, folder)
    (folder / "README.md").write_text("No command here.\n")
    rec = read_record_folder(folder)
    assert "backend.local.nproc_per_node" in rec.unresolved and "trainer_env" in rec.unresolved
    code, output, out = _init(tmp_path, folder)
    assert code == 0 and "UNRESOLVED backend.local.nproc_per_node" in output
    with pytest.raises(CampaignError, match=r"nproc_per_node"):
        load_campaign(out)


def test_bad_folders_are_usage_errors(tmp_path: Path) -> None:
    code, output, _ = _init(tmp_path, tmp_path / "nope")
    assert code == 2 and "not a folder" in output
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output, _ = _init(tmp_path, empty)
    assert code == 2 and "no train_gpt.py" in output
    (empty / "train_gpt.py").write_text("print()\n")
    (empty / "train.log").write_text("final_mystery val_loss:2.0 val_bpb:1.2\n")
    code, output, _ = _init(tmp_path, empty)
    assert code == 2 and "no log with a final score" in output and "unknown final-score format 'final_mystery'" in output
    code, output, out = _init(tmp_path, BASELINE)
    assert code == 0
    code, output, _ = _init(tmp_path, BASELINE)
    assert code == 2 and "exists" in output


def test_a_named_data_variant_is_marked_not_guessed(tmp_path: Path) -> None:
    """A record on the CaseOps export names a variant golfrun's downloader does not know."""
    folder = tmp_path / "caseops"
    shutil.copytree(PR1610, folder)
    for log in (folder / "logs").glob("*.txt"):
        log.write_text(log.read_text().replace("fineweb10B_sp8192", "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"))
    rec = read_record_folder(folder)
    assert rec.variant == "sp8192_lossless_caps_caseops_v1_reserved"
    code, output, out = _init(tmp_path, folder)
    assert code == 0
    assert "UNRESOLVED data.variant: the logs name the variant 'sp8192_lossless_caps_caseops_v1_reserved'" in output
    with pytest.raises(CampaignError, match=r"data\.(variant|source): 'UNRESOLVED: "):
        load_campaign(out)
