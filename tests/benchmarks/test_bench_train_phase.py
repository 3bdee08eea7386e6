"""bench_train_phase.read_line: the trainer's log, as captured from a real run on an H100 (the fourteenth session's
`baseline-next`, fixtures/h100-baseline-next.log), folded into a benchmark's summary."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_train_phase  # noqa: E402

LOG = Path(__file__).parent / "fixtures" / "h100-baseline-next.log"
TB = 786432  # TRAIN_BATCH_TOKENS of the captured run


def _fold(lines) -> tuple[dict, int | None]:
    res, done_at = {"losses": {}}, None
    for i, line in enumerate(lines):
        if bench_train_phase.read_line(line, res, 2, TB, 10.0 + i):
            done_at = i
            break
    return res, done_at


def test_a_captured_h100_log_gives_the_losses_settings_and_rates():
    lines = LOG.read_text().splitlines(keepends=True)
    res, done_at = _fold(lines)
    assert done_at == next(i for i, line in enumerate(lines) if line.startswith("throughput tok/s"))
    assert len(res["losses"]) == 24 and res["losses"]["1"] == 8.9934 and res["losses"]["24"] == 3.2797
    assert res["attention_backend"] == "varlen" and res["mlp_kernel"] == "plain"
    assert res["peak_mem_mib"] == 42794 and res["peak_mem_reserved_mib"] == 49554
    assert res["tokens_per_s_preloop"] == 925363 and res["tokens_per_s_loop"] == 758036 and res["priming_s"] == 14.0
    assert res["step_ms_preloop"] == pytest.approx(1000 * TB / 925363)
    # priming less the 2 + 2 warm-up steps at the measured rates
    assert res["compile_s"] == pytest.approx(14.0 - 2 * (TB / 925363 + TB / 758036))
    assert "tokens_per_s_all" not in res  # the log predates the whole run's rate


def test_the_whole_run_rate_is_read_when_the_line_has_it():
    res, done_at = _fold(["throughput tok/s preloop:1041598 loop:694832 priming_s:116.4 all:833399\n"])
    assert done_at == 0 and res["tokens_per_s_all"] == 833399 and res["tokens_per_s_loop"] == 694832


def test_a_run_that_fails_after_its_steps_keeps_its_running_rate():
    """The sixteenth session's `baseline-1mb` (fixtures/h100-baseline-1mb-eval-failed.log): 192 steps, then the
    final eval failed (GRAD_ACCUM enlarged its batch, since fixed), so no throughput line came; the rate of the
    last step line is what the summary keeps."""
    lines = (Path(__file__).parent / "fixtures" / "h100-baseline-1mb-eval-failed.log").read_text().splitlines(True)
    res, done_at = _fold(lines)
    assert done_at is None and "tokens_per_s_all" not in res
    assert len(res["losses"]) == 192 and res["tokens_per_s_running"] == 791718
    assert _fold(["5/24 train_loss: 7.1920 train_time: 0.0m tok/s: 978031\n"])[0]["tokens_per_s_running"] == 978031


def test_the_command_names_every_setting_a_session_varies():
    """A -1mb step's summary must say it ran one microbatch of 98,304 tokens a step; every configuration
    kernel_session.py plans names each setting it sets (its env), and the command records them all."""
    sys.path.insert(0, str(Path(bench_train_phase.__file__).parent))
    import kernel_session
    for step in (s for s in kernel_session.steps({"iters": 24, "equiv_iters": 100}) if s["kind"] == "train"):
        env = step["env"]
        assert bench_train_phase.recorded_settings({**env, "PATH": "/bin"}) == env, step["name"]


def test_steady_rates_leave_out_the_first_step_and_the_step_after_looping_came_on():
    """From the training time at each step (its rate so far): the captured run's first step took 1.5 s, which its
    throughput line counts and the steady rates do not; an interval that mixes the phases is counted in neither."""
    lines = LOG.read_text().splitlines(keepends=True)
    res, _ = _fold(lines)
    e = {int(k): v for k, v in res["elapsed_s"].items()}
    assert sorted(e) == list(range(1, 25)) and res["loop_from_step"] == 12
    assert e[1] == pytest.approx(TB / 523828) and e[24] == pytest.approx(24 * TB / 833383)
    steady = res["steady"]
    assert steady["tokens_per_s_preloop"] == pytest.approx(11 * TB / (e[12] - e[1]))
    assert steady["tokens_per_s_loop"] == pytest.approx(11 * TB / (e[24] - e[13]))
    assert steady["steps_preloop"] == steady["steps_loop"] == 11
    assert steady["tokens_per_s_preloop"] > 1.07 * res["tokens_per_s_preloop"]  # without the slow first step


@pytest.mark.parametrize("drop", ["7/24 train_loss", "layer_loop:enabled"])
def test_steady_rates_need_every_step_and_the_switch(drop):
    lines = [line for line in LOG.read_text().splitlines(keepends=True) if not line.startswith(drop)]
    res, done_at = _fold(lines)
    assert done_at is not None and res["steady"] is None


def test_a_diverged_step_leaves_no_nan_in_the_summary():
    """Step lines are read by golfrun's own parser of the record's log (golfrun.trainer.progress), which reads
    "nan" as a number; the summary is JSON, so a diverged step's line is passed over."""
    res, _ = _fold(["1/24 train_loss: 8.9934 train_time: 0.0m tok/s: 978031\n",
                    "2/24 train_loss: nan train_time: 0.0m tok/s: 977000\n"])
    assert res["losses"] == {"1": 8.9934} and list(res["elapsed_s"]) == ["1"]
    assert res["tokens_per_s_running"] == 978031 and "NaN" not in json.dumps(res)
