"""Trainer output lines → Progress, and the plain (non-TTY) progress display fed by them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from golfrun.pipeline.progress import JobView, ProgressDisplay, apply, format_view
from golfrun.trainer.progress import Progress, parse_progress_line

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("warmup_step: 6/20", Progress("warmup", 6, 20, label="warmup")),
        ("loop_warmup_step: 20/20", Progress("warmup", 20, 20, label="loop_warmup")),
        ("warmup_step:1/20", Progress("warmup", 1, 20, label="warmup")),  # baseline
        (
            "1776142360.538 500/20000 train_loss: 3.2523 train_time: 0.8m tok/s: 8203641",
            Progress("train", 500, 20000, train_loss=3.2523, train_time_min=0.8, tok_s=8203641.0),
        ),
        ("4000/20000 val_loss: 2.8723 val_bpb: 1.1119", Progress("train", 4000, 20000, val_loss=2.8723, val_bpb=1.1119, label="val")),
        (
            "step:200/20000 train_loss:2.8694 train_time:8699ms step_avg:43.50ms",
            Progress("train", 200, 20000, train_loss=2.8694, train_time_min=8699 / 60000),
        ),
        (
            "stopping_early: wallclock_cap train_time: 587091ms step: 4832/20000",
            Progress("train", 4832, 20000, train_time_min=587091 / 60000, label="stopping_early"),
        ),
        ("Serialized model quantized+brotli: 15968098 bytes", Progress("serialize", label="Serialized model")),
        ("GPTQ:collected 67 Hessians in 12.7s", Progress("serialize", label="GPTQ")),
        (
            "diagnostic quantized val_loss:2.79852399 val_bpb:1.08336093 eval_time:55851ms",
            Progress("eval", val_loss=2.79852399, val_bpb=1.08336093, label="diagnostic quantized"),
        ),
        ("ttp: b2/782 bl:2.7562 bb:1.0701 rl:2.7840 rb:1.0787 dl:4213-6011 gd:0", Progress("eval", 2, 782, val_loss=2.7840, val_bpb=1.0787, label="ttp")),
        ("tttg: c212/213 lr:0.000012 t:47.7s", Progress("eval", 212, 213, label="global_sgd")),
        (
            "quantized_ttt_phased val_loss:2.76951521 val_bpb:1.07216564 eval_time:500104ms",
            Progress("eval", val_loss=2.76951521, val_bpb=1.07216564, label="quantized_ttt_phased", final=True),
        ),
        (
            "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570",
            Progress("eval", val_loss=2.07269931, val_bpb=1.2243657, label="final_int8_zlib_roundtrip_exact", final=True),
        ),
        (
            "final_sliding_window_eval_exact stride:64 val_loss:1.96369923 val_bpb:1.16301431",
            Progress("eval", val_loss=1.96369923, val_bpb=1.16301431, label="final_sliding_window_eval_exact", final=True),
        ),
        (
            "ttt_sliding:done val_loss=1.8899 val_bpb=1.1193",
            Progress("eval", val_loss=1.8899, val_bpb=1.1193, label="ttt_sliding:done"),  # a diagnostic
        ),
        ("beginning TTT eval timer", Progress("eval", label="beginning TTT eval timer")),
        ("  seed: 0", None),
        ("Hyperparameters:", None),
        ("Traceback (most recent call last):", None),
        ("", None),
        ("1776142360.538 ", None),
    ],
)
def test_parse_progress_line(line: str, expected: Progress | None) -> None:
    assert parse_progress_line(line) == expected


def test_every_golden_line_parses_without_error() -> None:
    phases = set()
    for name in ("record_seed0_console.txt", "baseline.txt", "cor_eval_only_quantized_1a.txt"):
        for line in (GOLDEN / name).read_text().splitlines():
            p = parse_progress_line(line)
            if p is not None:
                phases.add(p.phase)
    assert phases == {"setup", "warmup", "train", "serialize", "eval"}


def test_eta_from_the_step_rate() -> None:
    view = JobView("seed0")
    apply(view, Progress("train", 500, 20000, train_loss=3.25, tok_s=8.2e6), now=100.0)
    assert view.eta_s is None  # one point gives no rate
    apply(view, Progress("train", 1000, 20000, train_loss=3.01, tok_s=8.1e6), now=150.0)
    assert view.eta_s == pytest.approx(50.0 / 500 * 19000)
    apply(view, Progress("train", 1000, 20000, val_loss=3.0, val_bpb=1.16, label="val"), now=160.0)
    assert (view.train_loss, view.val_bpb) == (3.01, 1.16)
    # a new phase measures its own rate
    apply(view, Progress("eval", 1, 782, label="ttp"), now=200.0)
    assert view.eta_s is None and view.phase == "eval"
    apply(view, Progress("eval", 2, 782, label="ttp"), now=201.0)
    assert view.eta_s == pytest.approx(780.0)
    apply(view, Progress("eval", val_loss=2.77, val_bpb=1.0722, label="quantized_ttt_phased", final=True), now=500.0)
    assert view.phase == "done"
    assert format_view(view) == "seed0  done  2/782  loss 3.0100  val_bpb 1.0722  8.10M tok/s"


def test_ttt_batches_are_counted_not_read_from_their_length_rank() -> None:
    """Phased TTT logs `ttp: bK/N` with K the batch's length rank, longest (K = N) first; the view counts
    finished batches across the global-SGD pause, so the step rises and the ETA comes from the rate."""
    view = JobView("seed0")
    ttp = "ttp: b{}/4 bl:3.4000 bb:2.4000 rl:3.4000 rb:2.4000 dl:10-20 gd:{}"
    for t, line in enumerate([ttp.format(4, 0), ttp.format(3, 0), "tttg: c1/2 lr:0.001000 t:0.1s",
                              ttp.format(2, 1), ttp.format(1, 1)]):
        apply(view, parse_progress_line(line), now=10.0 * t)
        if line.startswith("ttp: b2/"):
            assert (view.step, view.iterations) == (3, 4) and view.eta_s is None  # a new rate origin after the pause
    assert (view.step, view.iterations) == (4, 4) and view.eta_s == 0.0


def test_plain_display_is_throttled_one_line_per_update() -> None:
    out = io.StringIO()
    clock = iter([float(t) for t in range(0, 1000)])
    display = ProgressDisplay(stream=out, live=False, min_interval_s=5.0, clock=lambda: next(clock))
    with display:
        display.set_stage("gate-a")
        display.on_line("seed0", "hello")  # not progress: nothing
        for i in range(1, 8):
            display.on_line("seed0", f"warmup_step: {i}/20")
        display.on_line("seed0", "0/20000 val_loss: 9.0086 val_bpb: 3.4874")
        display.job_finished("seed0", "SUCCEEDED")
    lines = out.getvalue().splitlines()
    assert lines == [
        "[gate-a] seed0  warmup  1/20",
        "[gate-a] seed0  warmup  6/20  ETA 14s",
        "[gate-a] seed0  train  0/20000  val_bpb 3.4874",
        "[gate-a] seed0  done  0/20000  val_bpb 3.4874  SUCCEEDED",
    ]


def test_live_display_renders_a_table() -> None:
    out = io.StringIO()
    with ProgressDisplay(stream=out, live=True) as display:
        display.set_stage("gate-b")
        display.on_line("seed1", "500/20000 train_loss: 3.2579 train_time: 0.8m tok/s: 8203641")
        display.log("a message")
    text = out.getvalue()
    assert "seed1" in text and "3.2579" in text and "8.20M" in text and "a message" in text


def test_wallclock_cap_bounds_the_training_eta() -> None:
    assert parse_progress_line("1776142350.1   max_wallclock_seconds: 600.0") == Progress(
        "setup", label="max_wallclock_seconds", wallclock_cap_s=600.0
    )
    baseline = "train_batch_tokens:524288 train_seq_len:1024 iterations:20000 warmup_steps:20 max_wallclock_seconds:600.000"
    assert parse_progress_line(baseline) == Progress("setup", label="max_wallclock_seconds", wallclock_cap_s=600.0)
    view = JobView("seed0")
    apply(view, Progress("setup", label="max_wallclock_seconds", wallclock_cap_s=600.0), now=0.0)
    assert view.phase == "starting"
    apply(view, Progress("train", 500, 20000, train_time_min=0.8), now=100.0)
    apply(view, Progress("train", 1000, 20000, train_time_min=1.6), now=148.0)
    # 19000 steps at 0.096 s/step would be 1824 s; the cap ends training 504 s of train_time later
    assert view.eta_s == pytest.approx(600.0 - 96.0)


def test_plain_display_keeps_stages_apart() -> None:
    out = io.StringIO()
    display = ProgressDisplay(stream=out, live=False, min_interval_s=0.0)
    display.set_stage("gate-a")
    display.on_line("seed0", "  max_wallclock_seconds: 600.0")  # setup lines print nothing
    display.on_line("seed0", "quantized_ttt_phased val_loss:2.76951521 val_bpb:1.07216564 eval_time:500104ms")
    display.job_finished("seed0", "SUCCEEDED")
    display.set_stage("gate-b")
    display.on_line("seed0", "warmup_step: 1/20")
    assert out.getvalue().splitlines() == [  # one closing line per job, not "done" twice
        "[gate-a] seed0  done  val_bpb 1.0722  SUCCEEDED",
        "[gate-b] seed0  warmup  1/20",
    ]
    assert set(display.jobs) == {"gate-a/seed0", "gate-b/seed0"}


def test_eval_counters_are_named_so_they_never_seem_to_jump() -> None:
    out = io.StringIO()
    display = ProgressDisplay(stream=out, live=False, min_interval_s=0.0)
    display.set_stage("ablation")
    for line in ("ttp: b7/7 bl:1.0 bb:1.0 rl:1.0 rb:1.0", "ttp: b6/7 bl:1.0 bb:1.0 rl:1.0 rb:1.0",
                 "ttpp: phase:1/2 gd:2 t:1.0s"):
        display.on_line("ttt", line)
    lines = [ln for ln in out.getvalue().splitlines() if "eval" in ln]
    assert lines[0].startswith("[ablation] ttt  eval ttp  1/7") and lines[1].startswith("[ablation] ttt  eval ttp  2/7")
