"""The training loop's readback (StepClock), the record's: each step read back as soon as it is launched. Unit
tests on a fake clock, then train_gpt.py itself on the tiny dataset."""
import re

import pytest
import torch

from tests.trainer.conftest import TINY_ENV, read_results, run_trainer


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def _clock(tg, monkeypatch, max_ms=None, log=None):
    fake = FakeTime()
    monkeypatch.setattr(tg.time, "perf_counter", fake.perf_counter)
    h = tg.Hyperparameters(dict(TINY_ENV))
    clock = tg.StepClock(h, torch.device("cpu"), 1, max_ms, (log if log is not None else []).append)
    clock.resume()
    return clock, fake, h


def _run(tg, step, at, looping=False):
    return tg.launched(step, torch.tensor(3.0), looping, at, torch.device("cpu"))


def test_read_back_at_once_times_each_step_from_its_launch(tg, monkeypatch):
    clock, fake, h = _clock(tg, monkeypatch)
    fake.now = 1.0
    clock.finish(_run(tg, 1, at=0.2))
    fake.now = 3.0
    clock.finish(_run(tg, 2, at=1.5, looping=True))  # the host's 0.5 s between steps is not the step's
    assert clock.tokens == {"pre": [h.train_batch_tokens, 0.8], "loop": [h.train_batch_tokens, 1.5]}
    assert clock.stop_after is None


class Marked:
    """A CUDA event with timing at `t` seconds on the GPU's timeline, done."""

    def __init__(self, t):
        self.t = t

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return 1000.0 * (end.t - self.t)


def test_on_a_gpu_each_step_takes_its_time_on_the_gpu_timeline(tg, monkeypatch):
    """The GPU's events give each step its time on its timeline, the first from the resume, whatever the host's
    clock says (here the host sees step 1 done late, after logging); the phases' split follows the GPU (one step
    before looping, one with it)."""
    clock, fake, h = _clock(tg, monkeypatch)
    clock.mark = Marked(0.0)
    first = tg.Launched(1, torch.tensor(3.0), False, 0.0, Marked(0.7))
    second = tg.Launched(2, torch.tensor(3.0), True, 1.0, Marked(1.8))
    fake.now = 0.9
    clock.finish(first)
    fake.now = 1.85
    clock.finish(second)
    assert clock.tokens == {"pre": [h.train_batch_tokens, pytest.approx(0.7)],
                            "loop": [h.train_batch_tokens, pytest.approx(1.1)]}
    assert clock.mark is second.done


def test_cap_stops_after_the_step_that_crosses_it(tg, monkeypatch):
    log = []
    clock, fake, _ = _clock(tg, monkeypatch, max_ms=2500.0, log=log)
    for step in (1, 2, 3):
        fake.now = float(step)
        clock.finish(_run(tg, step, at=step - 1.0))
        assert clock.stop_after == (3 if step == 3 else None)
    assert [re.match(r"(\d+)/", line).group(1) for line in log] == ["1", "2", "3"]  # steps <= 5 are logged


def test_training_time_leaves_out_pauses(tg, monkeypatch):
    clock, fake, _ = _clock(tg, monkeypatch)
    fake.now = 2.0
    clock.pause()
    fake.now = 10.0  # an evaluation
    clock.resume()
    fake.now = 11.0
    assert clock.training_ms == 2000.0 and clock.elapsed_ms() == 3000.0


def test_the_whole_run_rate_is_the_results_own(tiny_run):
    """The throughput line's `all:`, which the benchmarks read to compare two runs, is results.json's rate."""
    out, proc = tiny_run
    res = read_results(out)
    assert res["steps"] == 60 and res["tokens_per_s_preloop"] > 0 and res["tokens_per_s_loop"] > 0
    whole = re.search(r"^throughput tok/s preloop:\d+ loop:\d+ priming_s:[\d.]+ all:(\d+)$", proc.stdout, re.M)
    assert whole and int(whole.group(1)) == round(res["tokens_per_s"])


def test_two_ranks_stop_after_the_same_step_at_the_wallclock_cap(tiny_data, tmp_path):
    """0.6 s of training on two ranks: the run stops early, every rank after the same step (the flag's MAX
    all-reduce; a rank that disagreed would wait forever in the next step's collectives), and scores. Each rank
    keeps its own clock and the first past the cap stops them all, so rank 0's time can fall short of it."""
    out = tmp_path / "cap2"
    proc = run_trainer(tiny_data, out, {"MAX_WALLCLOCK_SECONDS": "13.6", "ITERATIONS": "100000",
                                        "WARMUP_STEPS": "0"}, nproc=2, timeout=300)
    stop = re.findall(r"^stopping_early: wallclock_cap train_time: \d+ms step: (\d+)/100000$", proc.stdout, re.M)
    assert len(stop) == 1
    res = read_results(out)
    assert res["stopped_early"] is True and res["steps"] == int(stop[0]) > 0
    assert re.search(rf"^{stop[0]}/100000 train_loss: ", proc.stdout, re.M)  # the last step's line
