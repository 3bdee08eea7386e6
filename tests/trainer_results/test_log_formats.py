"""The final-score format table (golfrun/trainer/logformats.py): one fixture log per row
(formats/README.md), the last reported score counts, an unknown score line is an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golfrun.errors import TrainerResultError
from golfrun.trainer.logformats import SCORE_FORMATS, find_format, match_score
from golfrun.trainer.results import ArtifactInfo, EvalScore, load_results, parse_record_log

FORMATS = Path(__file__).parent / "formats"
EXPECTED = json.loads((FORMATS / "expected.json").read_text())
BY_NAME = {f.name: f for f in SCORE_FORMATS}


def test_every_row_has_a_fixture_and_expectations() -> None:
    assert len(BY_NAME) == len(SCORE_FORMATS), "format names must be unique"
    assert set(EXPECTED) == set(BY_NAME)
    assert {p.stem for p in FORMATS.glob("*.log")} == set(BY_NAME)


@pytest.mark.parametrize("fmt", SCORE_FORMATS, ids=lambda f: f.name)
def test_example_line_is_recognised_by_its_own_row(fmt) -> None:  # type: ignore[no-untyped-def]
    line = match_score(fmt.example)
    assert line is not None and line.format is fmt


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_log(name: str) -> None:
    want = EXPECTED[name]
    r = parse_record_log((FORMATS / f"{name}.log").read_text())
    final = want["final"]
    assert r.final == (None if final is None else EvalScore(*final))
    if BY_NAME[name].role == "score":
        assert r.log_format == name
    else:
        diag = want["diagnostic"]
        assert r.eval(diag) is not None  # read, kept among the evals …
        assert r.final is None or r.final.label != diag  # … and never the score
        assert r.log_format == (None if r.final is None else find_format(r.final.label).name)  # type: ignore[union-attr]
    if "artifact" in want:
        assert r.artifact == ArtifactInfo(*want["artifact"])


def test_the_last_score_counts_not_the_first_final_line() -> None:
    r = parse_record_log((FORMATS / "int8-ttt-lora.log").read_text())
    assert [e.label for e in r.evals] == ["final_int8_zlib_roundtrip", "final_int8_zlib_roundtrip_exact",
                                          "final_int8_ttt_lora"]
    assert r.final is not None and r.final.label == "final_int8_ttt_lora"


def test_label_stops_at_key_value_words() -> None:
    line = match_score("final_sliding_window_eval_exact stride:64 val_loss:1.96369923 val_bpb:1.16301431")
    assert line is not None and line.label == "final_sliding_window_eval_exact" and line.eval_time_ms is None
    line = match_score("final_sliding val_loss:2.9869 val_bpb:1.1565 (stride=16, T=0.90) eval_time:429311ms")
    assert line is not None and line.label == "final_sliding" and line.eval_time_ms == 429311.0
    assert match_score("4832/20000 val_loss: 2.7711 val_bpb: 1.0728") is None  # in-training, not a score line


def test_unknown_score_line_after_the_last_known_score_is_an_error() -> None:
    text = (FORMATS / "int6-sliding-window.log").read_text() + \
        "1776200200.000 final_ogd val_loss:1.89120000 val_bpb:1.12010000\n"
    with pytest.raises(TrainerResultError) as exc:
        parse_record_log(text)
    message = str(exc.value)
    assert "unknown final-score format 'final_ogd'" in message
    # the last score-like lines are quoted, the unknown one among them
    assert "final_int6_sliding_window_exact val_loss:1.89430000" in message
    assert message.rstrip().endswith("final_ogd val_loss:1.89120000 val_bpb:1.12010000")


def test_unknown_only_is_an_error_and_load_results_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "train0.txt").write_text("stopping_early: wallclock_cap train_time:1ms step:1/2\n"
                                         "final_mystery_eval val_loss:2.1 val_bpb:1.2\n")
    with pytest.raises(TrainerResultError, match=r"train0\.txt: unknown final-score format 'final_mystery_eval'"):
        load_results(tmp_path)


def test_unknown_line_before_a_known_score_is_harmless() -> None:
    r = parse_record_log("pre_quant_ema val_loss:2.8 val_bpb:1.09\nquantized_ttt val_loss:2.7 val_bpb:1.07 eval_time:5ms\n")
    assert r.final == EvalScore("quantized_ttt", 2.7, 1.07, 5.0)
    assert [e.label for e in r.evals] == ["quantized_ttt"]


def test_log_format_survives_results_json_round_trip() -> None:
    from golfrun.trainer.results import TrainerResult

    r = parse_record_log((FORMATS / "legal-ttt.log").read_text())
    again = TrainerResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again.log_format == "legal-ttt" and again == r
