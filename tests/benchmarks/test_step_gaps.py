"""step_gaps.py: the GPU's idle time in a profiled step, from the kernels' intervals (profile_step.py's `idle`)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import step_gaps  # noqa: E402


def _kind(name: str) -> str:
    return name.split("_")[0]


def test_idle_gaps_counts_overlaps_once_and_names_the_neighbours():
    rows = [(0.0, 100.0, "mm_a"), (50.0, 150.0, "mm_b"),  # overlap: busy 150 µs, no gap
            (400.0, 500.0, "fa_fwd"),                      # 250 µs after mm_b
            (510.0, 520.0, "opt_step"),                     # 10 µs
            (2520.0, 2600.0, "mm_c")]                       # 2 ms: the largest
    got = step_gaps.idle_gaps(rows, _kind, top=2)
    assert got["kernels"] == 5 and got["gaps"] == 3
    assert got["busy_ms"] == 0.34 and got["span_ms"] == 2.6 and got["idle_ms"] == 2.26
    assert got["largest_gaps"] == [[2.0, "opt_step", "mm_c"], [0.25, "mm_b", "fa_fwd"]]
    assert got["idle_by_neighbours_ms"] == {"opt -> mm": 2.0, "mm -> fa": 0.25, "fa -> opt": 0.01}


def test_a_kernel_inside_another_neither_adds_busy_time_nor_moves_the_end():
    rows = [(0.0, 1000.0, "long"), (100.0, 200.0, "inside"), (1500.0, 1600.0, "next")]
    got = step_gaps.idle_gaps(rows, _kind)
    assert got["busy_ms"] == 1.1 and got["idle_ms"] == 0.5
    assert got["largest_gaps"] == [[0.5, "long", "next"]]


def test_no_kernels_is_an_empty_report():
    got = step_gaps.idle_gaps([], _kind)
    assert got["kernels"] == 0 and got["span_ms"] == 0.0 and got["largest_gaps"] == []


def test_intervals_reads_a_real_profiler_capture():
    """The event fields intervals() reads, on this torch: a CPU capture (the GPU's kernels are the same events
    with device_type CUDA)."""
    a = torch.randn(64, 64)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        b = a @ a
        torch.relu(b)
    rows = step_gaps.intervals(prof, torch.autograd.DeviceType.CPU)
    names = [n for _, _, n in rows]
    assert "aten::mm" in names and "aten::relu" in names
    assert all(s <= e for s, e, _ in rows) and [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert names.index("aten::relu") > names.index("aten::mm")
    assert step_gaps.intervals(prof) == []  # no CUDA kernels in a CPU capture


def test_busy_ms_counts_the_devices_time_not_the_hosts():
    """busy_ms on a CPU capture (the CPU standing for the device): a call whose host sleeps between two matmuls is
    charged the matmuls' time, not the sleep, and each call once."""
    import time
    a = torch.randn(128, 128)
    calls = []

    def fn():
        calls.append(1)
        torch.mm(a, a)
        time.sleep(0.1)
        torch.mm(a, a)
    busy = step_gaps.busy_ms(fn, runs=3, device_type=torch.autograd.DeviceType.CPU)
    assert len(calls) == 4  # a warm call, then the three profiled
    assert 0.0 < busy < 50.0  # two 128³ matmuls, not the 100 ms sleep between them
    assert step_gaps.busy_ms(lambda: None, runs=2, device_type=torch.autograd.DeviceType.CPU) == 0.0


def test_profile_phase_takes_the_steps_it_is_given(tmp_path, monkeypatch):
    """profile_step.profile_phase on the CPU at the tests' tiny size (no CUDA kernels: its idle report is empty):
    six optimizer steps of h.grad_accum_steps microbatches each, so the one-microbatch phase (an 8-GPU run's
    step on one GPU) really takes one microbatch a step."""
    from golfrun.data.synthetic import build_dataset
    from tests.trainer.conftest import TINY_ENV

    import profile_step as P
    T = P.T
    build_dataset(tmp_path, vocab_size=512, train_docs=400, val_docs=40, train_shards=1, seed=3)
    h = T.Hyperparameters(dict(TINY_ENV, DATA_DIR=str(tmp_path), TTT_ENABLED="0", COMPILE_ENABLED="0"))
    dev = torch.device("cpu")
    torch.manual_seed(0)
    model = T.build_model(h, dev)
    fn, _ = T.compile_model(h, model, dev)
    opt = T.Optimizers(model, h, 0, 1, dev)
    loader = T.DocumentPackingLoader(T.list_shards(h.train_files, "train"), h.train_batch_tokens // 8,
                                     h.train_seq_len, 0, 1, dev)
    taken = []
    monkeypatch.setattr(loader, "next_batch", lambda f=loader.next_batch: taken.append(1) or f())
    for hh, batches in ((h, 6 * 8), (P.one_microbatch(h), 6 * 8 + 6)):
        got, inductor = P.profile_phase(hh, fn, opt, loader, T.EMA(model, h.ema_decay))
        assert len(taken) == batches
        assert got["tokens_per_s"] == pytest.approx(hh.grad_accum_steps * loader.L / (got["step_ms"] / 1000))
        assert got["idle"]["kernels"] == 0 and got["idle"]["outside_kernel_span_ms"] == round(got["step_ms"], 3)
        assert inductor == []
