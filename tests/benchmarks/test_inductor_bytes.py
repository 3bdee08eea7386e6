"""benchmarks/inductor_bytes.py: reading Inductor's own byte estimates out of its generated kernels and joining them
with a profile. The GPU run is the real check (its kernels are generated only for a GPU); here the kernel source is
a sample in the form torch/_inductor/codegen/triton.py writes with TORCHINDUCTOR_BENCHMARK_KERNEL=1: the decorator's
`inductor_meta` on one line, as the repr of a dict."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import inductor_bytes as ib  # noqa: E402


def kernel_source(name: str, gb: float | None) -> str:
    extra = f", 'kernel_num_gb': {gb}, 'kernel_flop': 0" if gb is not None else ""
    return f"""
import triton
from torch._inductor.runtime import triton_heuristics

@triton_heuristics.persistent_reduction(
    size_hints={{'x': 131072, 'r0_': 512}},
    reduction_hint=ReductionHint.INNER,
    filename=__file__,
    triton_meta={{'signature': {{'in_ptr0': '*bf16', 'out_ptr0': '*bf16', 'xnumel': 'i32'}}, 'device': DeviceProperties(type='cuda', index=0, multi_processor_count=132, cc=90, major=9, regs_per_multiprocessor=65536, max_threads_per_multi_processor=2048, warp_size=32), 'constants': {{}}}},
    inductor_meta={{'grid_type': 'Grid1D', 'autotune_hints': set(), 'kernel_name': '{name}', 'mutated_arg_names': [], 'optimize_mem': False, 'no_x_dim': None, 'num_load': 2, 'num_reduction': 1{extra}}}
)
@triton.jit
def {name}(in_ptr0, out_ptr0, xnumel, r0_numel, XBLOCK: tl.constexpr):
    pass
"""


def test_reads_each_kernels_estimate_and_keeps_names_with_two():
    got = ib.kernel_gb([kernel_source("triton_per_fused_rms_norm_3", 0.2013),
                        kernel_source("triton_poi_fused_add_0", 1.5e-05),
                        kernel_source("triton_poi_fused_add_0", 0.3),  # the same name in another graph
                        kernel_source("triton_poi_fused_mul_1", None)])  # compiled without the setting
    assert got == {"triton_per_fused_rms_norm_3": {0.2013}, "triton_poi_fused_add_0": {1.5e-05, 0.3}}


def test_read_cache_scans_the_folder(tmp_path):
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / "cabc.py").write_text(kernel_source("triton_red_fused_sum_9", 0.1))
    (tmp_path / "ab" / "coutput.py").write_text("def call(args):\n    pass\n")
    assert ib.read_cache(tmp_path) == {"triton_red_fused_sum_9": {0.1}}


def test_bandwidth_joins_the_profile_and_bounds_the_gain():
    gb = {"k_fast": {0.3}, "k_slow": {0.1}, "k_twice": {0.1, 0.2}}
    rows = [("k_fast", 1.0, 10), ("k_slow", 2.0, 10), ("k_twice", 0.5, 4), ("k_new", 0.25, 1)]
    got = ib.bandwidth(rows, gb, copy_gb_per_s=3000.0)
    assert got["matched"] == {"kernels": 2, "ms": 3.0, "gb": 4.0, "floor_ms": pytest.approx(1.33, abs=0.01),
                              "gb_per_s": pytest.approx(1333.3, abs=0.1)}
    # 3 GB at 3,000 GB/s is 1 ms, k_fast's own time: at its floor. k_slow takes 2 ms for a third of a ms
    assert [r[3] for r in got["furthest_above_floor"]] == ["k_slow", "k_fast"]
    assert got["furthest_above_floor"][0] == [2.0, 0.33, 500.0, "k_slow"]
    assert got["unmatched"]["kernels"] == 2 and got["unmatched"]["ms"] == 0.75
    assert got["unmatched"]["largest"] == [[0.5, "ambiguous", "k_twice"], [0.25, "no estimate", "k_new"]]
