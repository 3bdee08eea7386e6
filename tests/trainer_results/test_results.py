"""results.json reading and the record/baseline log parser, against golden logs (golden/README.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from golfrun.errors import TrainerResultError
from golfrun.trainer.results import (
    RESULTS_SCHEMA,
    ArtifactInfo,
    ChunkSums,
    EvalScore,
    TrainerResult,
    load_results,
    parse_record_log,
    strip_prefix,
)

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def test_full_record_console_capture_with_epoch_prefixes() -> None:
    r = parse_record_log(golden("record_seed0_console.txt"))
    assert r.source == "log"
    assert r.mode == "train"
    assert r.run_id == "train0"
    assert r.seed == 0
    assert r.world_size == 8
    assert r.model_params == 35_944_602
    assert r.steps == 4832
    assert r.stopped_early is True
    assert r.train_time_ms == 587_091
    assert r.tokens_per_s == 6_552_777  # the last logged cumulative average
    assert r.peak_mem_mib == 40_029
    assert r.hyperparameters["TRAIN_BATCH_TOKENS"] == 786_432
    assert r.hyperparameters["PHASED_TTT_ENABLED"] is True
    assert r.hyperparameters["EVAL_ONLY_PATH"] == ""
    assert r.hyperparameters["EMA_DECAY"] == 0.9965
    # diagnostics and the final score, in order
    assert [e.label for e in r.evals] == [
        "diagnostic pre-quantization post-ema",
        "diagnostic quantized",
        "quantized_ttt_phased",
    ]
    assert r.eval("diagnostic pre-quantization post-ema") == EvalScore(
        "diagnostic pre-quantization post-ema", 2.76990528, 1.07228209, 6424.0
    )
    assert r.eval("diagnostic quantized") == EvalScore("diagnostic quantized", 2.79852399, 1.08336093, 55851.0)
    assert r.final == EvalScore("quantized_ttt_phased", 2.76951521, 1.07216564, 500104.0)
    assert r.artifact == ArtifactInfo(
        path="final_model.int6.ptz",
        model_bytes=15_968_098,
        code_bytes=28_599,
        total_bytes=15_996_697,
        compressor="brotli",
    )


def test_prefix_is_optional_and_gives_the_same_result() -> None:
    prefixed = golden("record_seed0_console.txt")
    plain = "\n".join(strip_prefix(line) for line in prefixed.splitlines())
    assert "1776142" not in plain
    assert parse_record_log(plain) == parse_record_log(prefixed)


def test_strip_prefix_only_strips_epoch_seconds() -> None:
    assert strip_prefix("1776142360.538 model_params:35944602\n") == "model_params:35944602"
    assert strip_prefix("1776142360.538   seed: 0") == "  seed: 0"
    assert strip_prefix("4832/20000 val_loss: 2.7711 val_bpb: 1.0728") == "4832/20000 val_loss: 2.7711 val_bpb: 1.0728"
    assert strip_prefix("0/20000 val_loss: 9.0086 val_bpb: 3.4874") == "0/20000 val_loss: 9.0086 val_bpb: 3.4874"


def test_naive_baseline_log() -> None:
    r = parse_record_log(golden("baseline.txt"))
    assert r.model_params == 17_059_912
    assert r.seed == 1337
    assert r.world_size == 8
    assert r.steps == 13_780
    assert r.stopped_early is True
    assert r.train_time_ms == 600_038
    assert r.tokens_per_s == pytest.approx(524_288 * 13_780 / 600.038)
    assert r.peak_mem_mib == 10_184
    # the exact line is the score; its eval time comes from the rounded line
    assert r.final == EvalScore("final_int8_zlib_roundtrip_exact", 2.07269931, 1.22436570, 1401.0)
    assert r.eval("final_int8_zlib_roundtrip") == EvalScore("final_int8_zlib_roundtrip", 2.0727, 1.2244, 1401.0)
    assert r.artifact is not None
    assert r.artifact.total_bytes == 15_863_489
    assert r.artifact.model_bytes == 15_815_847
    assert r.artifact.code_bytes == 47_642
    assert r.artifact.compressor == "zlib"
    assert r.artifact.path == "final_model.int8.ptz"


def test_eval_only_quantized_log() -> None:
    r = parse_record_log(golden("cor_eval_only_quantized_1a.txt"))
    assert r.mode == "eval_only_quantized"
    assert r.run_id == "abl_1a"
    assert r.seed == 1337
    assert r.steps is None and r.train_time_ms is None and r.model_params is None
    assert r.final == EvalScore("quantized_ttt_phased", 2.81238776, 1.08876294, 462840.0)
    assert r.hyperparameters["CORRECTOR_ALPHA"] == 0.3
    assert r.artifact is None  # no size lines: unknown, never 0


def test_crash_during_training_has_no_final_and_no_artifact() -> None:
    r = parse_record_log(golden("record_crash_in_training.txt"))
    assert r.final is None
    assert r.artifact is None
    assert r.steps == 2000
    assert r.stopped_early is False
    assert r.train_time_ms == pytest.approx(3.2 * 60_000)  # from the last train line, 0.1 min resolution
    assert r.model_params == 35_944_602


def test_crash_during_ttt_is_not_scored_by_the_quantized_diagnostic() -> None:
    r = parse_record_log(golden("record_crash_in_ttt.txt"))
    assert r.eval("diagnostic quantized") is not None
    assert r.final is None
    assert r.artifact is not None and r.artifact.total_bytes == 15_996_697


def test_without_ttt_the_quantized_diagnostic_is_the_final_score() -> None:
    text = "\n".join(
        [
            "model_params:35944602",
            "diagnostic pre-quantization post-ema val_loss:2.76990528 val_bpb:1.07228209 eval_time:6424ms",
            "Serialized model quantized+brotli: 15968098 bytes",
            "diagnostic quantized val_loss:2.79852399 val_bpb:1.08336093 eval_time:55851ms",
        ]
    )
    r = parse_record_log(text)
    assert r.final == EvalScore("diagnostic quantized", 2.79852399, 1.08336093, 55851.0)
    # the size lines that were not printed stay unknown
    assert r.artifact == ArtifactInfo("final_model.int6.ptz", 15_968_098, None, None, "brotli")


def test_lora_ttt_line_is_a_final_score() -> None:
    r = parse_record_log("quantized_ttt_lora val_loss:2.77000000 val_bpb:1.07300000 eval_time:480000ms\n")
    assert r.final == EvalScore("quantized_ttt_lora", 2.77, 1.073, 480000.0)


def test_garbage_gives_an_empty_result() -> None:
    r = parse_record_log("hello\nTraceback (most recent call last):\n  File x\nValueError: nope\n")
    assert r.final is None and r.artifact is None and r.steps is None and r.evals == []


# ------------------------------------------------------------------ results.json


def full_result() -> TrainerResult:
    return TrainerResult(
        run_id="train0",
        seed=0,
        mode="train",
        steps=4832,
        train_time_ms=587091.0,
        stopped_early=True,
        tokens_per_s=6.47e6,
        peak_mem_mib=40029.0,
        model_params=35944602,
        evals=[
            EvalScore("diagnostic quantized", 2.79852399, 1.08336093, 55851.0),
            EvalScore("quantized_ttt_phased", 2.76951521, 1.07216564, 500104.0),
        ],
        final=EvalScore("quantized_ttt_phased", 2.76951521, 1.07216564, 500104.0,
                        chunks=ChunkSums(nll=[10.5, 12.25], targets=[4, 5], bytes=[14, 16])),
        artifact=ArtifactInfo("final_model.int6.ptz", 15968098, 28599, 15996697, "brotli"),
        hyperparameters={"SEED": 0, "RUN_ID": "train0"},
        versions={"python": "3.11.9", "torch": "2.9.1+cu128", "cuda": "12.8", "attention": "fa3"},
        world_size=8,
        device="NVIDIA H100 80GB HBM3",
    )


def test_results_json_round_trip(tmp_path: Path) -> None:
    original = full_result()
    data = original.to_dict()
    assert data["schema"] == RESULTS_SCHEMA
    (tmp_path / "results.json").write_text(json.dumps(data))
    # results.json wins over a log that says something else
    (tmp_path / "job.log").write_text(golden("baseline.txt"))
    assert load_results(tmp_path) == original


def test_results_json_unknown_schema_names_the_file(tmp_path: Path) -> None:
    data = full_result().to_dict()
    data["schema"] = "golfrun.trainer-results/99"
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(TrainerResultError, match=r"results\.json.*unknown schema 'golfrun.trainer-results/99'"):
        load_results(tmp_path)


def test_results_json_malformed_is_an_error_not_a_log_fallback(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"schema": "golfrun.trainer-results/1", "final": ')
    (tmp_path / "train0.txt").write_text(golden("record_seed0_console.txt"))
    with pytest.raises(TrainerResultError, match=r"results\.json: not readable JSON"):
        load_results(tmp_path)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"final": {"label": "x", "val_loss": "2.7", "val_bpb": 1.07}}, r"final: key 'val_loss' has the wrong type"),
        ({"evals": [{"label": "x", "val_bpb": 1.0}]}, r"evals\[0\]: missing key 'val_loss'"),
        ({"mode": "sometimes"}, r"mode 'sometimes' is not one of"),
        ({"artifact": {"total_bytes": 1.5}}, r"artifact: key 'total_bytes' must be an integer"),
        ({"steps": "many"}, r"key 'steps' has the wrong type"),
        ({"final": {"label": "x", "val_loss": 2.7, "val_bpb": 1.07, "chunks": {"nll": [1.0], "targets": [1],
                                                                               "bytes": [1, 2]}}},
         r"final: chunks: nll, targets and bytes must have one entry per chunk \(got nll 1, targets 1, bytes 2\)"),
        ({"final": {"label": "x", "val_loss": 2.7, "val_bpb": 1.07, "chunks": {"nll": ["a"], "targets": [1],
                                                                               "bytes": [1]}}},
         r"final: chunks: key 'nll\[0\]' must be a number"),
        ({"final": {"label": "x", "val_loss": 2.7, "val_bpb": 1.07, "chunks": {"nll": [1.0], "targets": [-1],
                                                                               "bytes": [1]}}},
         r"final: chunks: targets and bytes must be >= 0"),
        ({"final": {"label": "x", "val_loss": 2.7, "val_bpb": 1.07, "chunks": {"nll": [1.0], "targets": [1]}}},
         r"final: chunks: missing key 'bytes'"),
    ],
)
def test_results_json_bad_values_name_the_key(tmp_path: Path, patch: dict, message: str) -> None:
    data = full_result().to_dict()
    data.update(patch)
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(TrainerResultError, match=message):
        load_results(tmp_path)


def test_chunk_sums_bpb_and_a_diverged_chunk() -> None:
    """A chunk's bits per byte; a chunk the evaluation scored nothing of has none; a non-finite NLL, which the
    trainer writes as null, reads back as NaN."""
    chunks = ChunkSums.from_dict({"nll": [math.log(2) * 8.0, None, 0.0], "targets": [3, 2, 0], "bytes": [4, 5, 0]})
    bpb = chunks.bpb()
    assert bpb[0] == pytest.approx(2.0) and math.isnan(bpb[1]) and bpb[2] is None


def test_missing_artifact_sizes_stay_none_in_results_json(tmp_path: Path) -> None:
    data = full_result().to_dict()
    data["artifact"] = {"path": "final_model.int6.ptz", "compressor": "brotli"}
    (tmp_path / "results.json").write_text(json.dumps(data))
    r = load_results(tmp_path)
    assert r.artifact is not None
    assert r.artifact.total_bytes is None and r.artifact.model_bytes is None


# ------------------------------------------------------------------ log fallback


def test_log_fallback_from_run_id_txt(tmp_path: Path) -> None:
    (tmp_path / "train0.txt").write_text(golden("record_seed0_console.txt"))
    (tmp_path / "final_model.int6.ptz").write_bytes(b"x")
    r = load_results(tmp_path)
    assert r.source == "log"
    assert r.final is not None and r.final.val_bpb == 1.07216564
    assert r.artifact is not None and r.artifact.path == str(tmp_path / "final_model.int6.ptz")


def test_log_fallback_from_job_log(tmp_path: Path) -> None:
    (tmp_path / "job.log").write_text(golden("baseline.txt"))
    r = load_results(tmp_path)
    assert r.final is not None and r.final.label == "final_int8_zlib_roundtrip_exact"


def test_log_fallback_named_logs(tmp_path: Path) -> None:
    (tmp_path / "custom.out").write_text(golden("cor_eval_only_quantized_1a.txt"))
    assert load_results(tmp_path, log_names=("custom.out",)).final.val_bpb == 1.08876294  # type: ignore[union-attr]


def test_crashed_run_error_quotes_the_log_tail(tmp_path: Path) -> None:
    (tmp_path / "train0.txt").write_text(golden("record_crash_in_training.txt"))
    (tmp_path / "job.log").write_text("")
    with pytest.raises(TrainerResultError) as info:
        load_results(tmp_path)
    message = str(info.value)
    assert "no final score in train0.txt" in message
    assert "torch.OutOfMemoryError: CUDA out of memory" in message


def test_nothing_at_all(tmp_path: Path) -> None:
    with pytest.raises(TrainerResultError, match=r"no results\.json and no trainer log"):
        load_results(tmp_path)


def test_unknown_keys_are_kept_through_a_round_trip(tmp_path: Path) -> None:
    data = full_result().to_dict()
    data["tokens_per_s_loop"] = 5.6e6
    (tmp_path / "results.json").write_text(json.dumps(data))
    r = load_results(tmp_path)
    assert r.extra == {"tokens_per_s_loop": 5.6e6}
    assert r.to_dict() == data
