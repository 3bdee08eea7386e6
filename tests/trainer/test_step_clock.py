"""The training loop's readback (StepClock): the record's, each step read back as soon as it is launched, and the
lagged one (LAGGED_READBACK=1), each step read back once the next is launched. Unit tests on a fake clock, then
train_gpt.py itself on the tiny dataset."""
import re

import pytest
import torch

from tests.trainer.conftest import TINY_ENV, read_results, run_trainer


class FakeTime:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def _clock(tg, monkeypatch, lagged: bool, max_ms=None, log=None):
    fake = FakeTime()
    monkeypatch.setattr(tg.time, "perf_counter", fake.perf_counter)
    h = tg.Hyperparameters(dict(TINY_ENV, LAGGED_READBACK=str(int(lagged))))
    clock = tg.StepClock(h, torch.device("cpu"), 1, max_ms, (log if log is not None else []).append)
    clock.resume()
    return clock, fake, h


class Running:
    """A CUDA event's two methods, for a step the GPU is still on."""

    def synchronize(self):
        pass

    def query(self):
        return False


def _run(tg, step, at, looping=False):
    return tg.launched(step, torch.tensor(3.0), looping, at, torch.device("cpu"))


def _in_flight(tg, step, at):
    return tg.Launched(step, torch.tensor(3.0), False, at, Running())


def test_read_back_at_once_times_each_step_from_its_launch(tg, monkeypatch):
    clock, fake, h = _clock(tg, monkeypatch, lagged=False)
    fake.now = 1.0
    clock.finish(_run(tg, 1, at=0.2), ahead=None)
    fake.now = 3.0
    clock.finish(_run(tg, 2, at=1.5, looping=True), ahead=None)  # the host's 0.5 s between steps is not the step's
    assert clock.tokens == {"pre": [h.train_batch_tokens, 0.8], "loop": [h.train_batch_tokens, 1.5]}
    assert clock.stop_after is None


def test_lagged_times_each_step_from_the_previous_ones_end(tg, monkeypatch):
    clock, fake, h = _clock(tg, monkeypatch, lagged=True)
    first, second = _run(tg, 1, at=0.0), _run(tg, 2, at=0.3)  # the second launched while the first ran
    fake.now = 1.0
    clock.finish(first, ahead=second)
    fake.now = 2.0
    clock.finish(second, ahead=None)
    assert clock.tokens["pre"] == [2 * h.train_batch_tokens, 2.0] and clock.step_s == 1.0


class Marked:
    """A CUDA event with timing at `t` seconds on the GPU's timeline, done."""

    def __init__(self, t):
        self.t = t

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, end):
        return 1000.0 * (end.t - self.t)


def test_on_a_gpu_each_step_takes_its_time_on_the_gpu_timeline(tg, monkeypatch):
    """Lagged, the host sees step 1 done only once it has launched step 2, which blocks until the GPU has nearly
    run it: by the host's clock step 1 would take both steps' time. The GPU's events give each step its own, the
    first from the resume; the phases' split follows the GPU (one step before looping, one with it)."""
    clock, fake, h = _clock(tg, monkeypatch, lagged=True)
    clock.mark = Marked(0.0)
    first = tg.Launched(1, torch.tensor(3.0), False, 0.0, Marked(0.7))
    second = tg.Launched(2, torch.tensor(3.0), True, 0.1, Marked(1.8))
    fake.now = 1.7  # launching the second step returned when the GPU was nearly through it
    clock.finish(first, ahead=second)
    fake.now = 1.8
    clock.finish(second, ahead=None)
    assert clock.tokens == {"pre": [h.train_batch_tokens, pytest.approx(0.7)],
                            "loop": [h.train_batch_tokens, pytest.approx(1.1)]}
    assert clock.mark is second.done


def test_cap_stops_after_the_step_that_crosses_it(tg, monkeypatch):
    clock, fake, _ = _clock(tg, monkeypatch, lagged=False, max_ms=2500.0)
    for step in (1, 2, 3):
        fake.now = float(step)
        clock.finish(_run(tg, step, at=step - 1.0), ahead=None)
        assert clock.stop_after == (3 if step == 3 else None)


def test_lagged_cap_ends_with_the_step_in_flight_when_it_will_cross(tg, monkeypatch):
    """Reading step 2 back at 2.0 s with step 3 in flight: step 3 will end at about 3.0 s, past the 2.5 s cap,
    so step 3 is the last, as when each step is read back at once (above)."""
    log = []
    clock, fake, _ = _clock(tg, monkeypatch, lagged=True, max_ms=2500.0, log=log)
    fake.now = 1.0
    clock.finish(_run(tg, 1, at=0.0), ahead=_in_flight(tg, 2, at=0.9))
    assert clock.stop_after is None  # step 2 will end at 2.0 s
    fake.now = 2.0
    clock.finish(_run(tg, 2, at=0.9), ahead=_in_flight(tg, 3, at=1.9))
    assert clock.stop_after == 3
    fake.now = 3.0
    clock.finish(_run(tg, 3, at=1.9), ahead=None)
    assert clock.stop_after == 3
    assert [re.match(r"(\d+)/", line).group(1) for line in log] == ["1", "2", "3"]  # steps <= 5 are logged


def test_lagged_cap_on_a_step_already_done_stops_after_it(tg, monkeypatch):
    """The step launched after the one read back is done already (as on a CPU, or a GPU ahead of the host): the
    cap is judged by now, so a run under the cap is not cut a step short by a prediction."""
    clock, fake, _ = _clock(tg, monkeypatch, lagged=True, max_ms=2500.0)
    fake.now = 2.0
    clock.finish(_run(tg, 1, at=0.0), ahead=_run(tg, 2, at=1.0))
    assert clock.stop_after is None  # a step in flight would have ended it (2.0 + 2.0 s)
    fake.now = 3.0
    clock.finish(_run(tg, 2, at=1.0), ahead=_run(tg, 3, at=2.0))
    assert clock.stop_after == 3


def test_training_time_leaves_out_pauses(tg, monkeypatch):
    clock, fake, _ = _clock(tg, monkeypatch, lagged=True)
    fake.now = 2.0
    clock.pause()
    fake.now = 10.0  # an evaluation
    clock.resume()
    fake.now = 11.0
    assert clock.training_ms == 2000.0 and clock.elapsed_ms() == 3000.0


def _logged(text: str, kind: str) -> list[str]:
    return re.findall(rf"^\d+/\d+ {kind}_loss: \d+\.\d+", text, re.M)


def test_lagged_run_trains_exactly_as_the_record_loop(tiny_data, tiny_run, tmp_path):
    """The readback changes when the host looks, not what the GPU computes: on a step schedule the lagged run's
    logged losses, its diagnostics and its final score equal the default run's."""
    out_ref, proc_ref = tiny_run
    out = tmp_path / "lagged"
    proc = run_trainer(tiny_data, out, {"LAGGED_READBACK": "1"})
    assert "lagged_readback:1" in proc.stdout and "lagged_readback:0" in proc_ref.stdout
    assert _logged(proc.stdout, "train") == _logged(proc_ref.stdout, "train")
    assert len(_logged(proc.stdout, "train")) == 5 + 6  # steps 1-5 and every 10th of 60
    assert _logged(proc.stdout, "val") == _logged(proc_ref.stdout, "val")
    res, ref = read_results(out), read_results(out_ref)
    assert res["steps"] == ref["steps"] == 60
    assert res["final"]["val_bpb"] == ref["final"]["val_bpb"]
    assert res["tokens_per_s_preloop"] > 0 and res["tokens_per_s_loop"] > 0
    # the whole run's rate, on the throughput line the benchmarks read, is the results' own
    whole = re.search(r"^throughput tok/s preloop:\d+ loop:\d+ priming_s:[\d.]+ all:(\d+)$", proc.stdout, re.M)
    assert whole and int(whole.group(1)) == round(res["tokens_per_s"])


@pytest.mark.parametrize("nproc", [1, 2])
def test_lagged_run_stops_at_the_wallclock_cap(tiny_data, tmp_path, nproc):
    """0.6 s of training: the lagged loop stops early, on every rank after the same step (the flag's all-reduce
    on the host; a rank that disagreed would wait forever in the next step's collectives), and scores. Each rank
    keeps its own clock and the first past the cap stops them all, so rank 0's time can fall short of it."""
    out = tmp_path / f"cap{nproc}"
    proc = run_trainer(tiny_data, out, {"MAX_WALLCLOCK_SECONDS": "13.6", "ITERATIONS": "100000",
                                        "WARMUP_STEPS": "0", "LAGGED_READBACK": "1"}, nproc=nproc, timeout=300)
    stop = re.findall(r"^stopping_early: wallclock_cap train_time: \d+ms step: (\d+)/100000$", proc.stdout, re.M)
    assert len(stop) == 1
    res = read_results(out)
    assert res["stopped_early"] is True and res["steps"] == int(stop[0]) > 0
    assert res["train_time_ms"] >= 600 or nproc > 1
    assert re.search(rf"^{stop[0]}/100000 train_loss: ", proc.stdout, re.M)  # the last step's line
