"""What a healthy machine measures in the preflight benchmark (golfrun/preflight_probe.py), per GPU
model and form factor, with where each figure came from.

verify-pod KILLs a machine whose figure is below `verify_pod.min_perf_fraction` × the figure here.
The figures are what a healthy machine *measures* with the preflight's own method, not datasheet
peaks (a bf16 8192³ matrix multiply through torch reaches about 70–80 % of the dense datasheet
peak on Hopper); the datasheet peak is kept beside each for reference. A figure marked "estimate"
has not yet been measured by this project: replace it with a measured run (benchmarks/results/,
`golfrun preflight --json`) and say so in `source`.

Units: matmul_bf16_tflops (per GPU, TFLOP/s), h2d_gbs (GB/s, pinned, GPU 0), allreduce_busbw_gbs
(GB/s, NCCL all-reduce of 256 MiB across all the machine's GPUs, nccl-tests' bus bandwidth).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Expected:
    matmul_bf16_tflops: float
    matmul_peak_tflops: float  # datasheet, dense bf16 (half the "with sparsity" figure)
    h2d_gbs: float
    allreduce_busbw_gbs: float | None  # None: no NVLink figure to hold the machine to
    source: str


_H100_SHEET = "NVIDIA H100 datasheet (dense bf16 = 1/2 of the sparsity figure: SXM 989, PCIe 756, NVL 835 TFLOP/s)"
_H200_SHEET = "NVIDIA H200 datasheet (dense bf16: SXM 989, NVL 835 TFLOP/s)"
_MEASURED_FRACTION = ("estimate: ~72 % of the dense peak, what torch's bf16 8192³ matmul reaches on a healthy "
                      "Hopper GPU; host-to-device: ~50 GB/s of PCIe Gen5 x16's 64; all-reduce: NCCL bus bandwidth "
                      "of an 8-GPU NVSwitch (NV18) node, 350–480 GB/s in nccl-tests reports, torch at 256 MiB lower")

# (model, form factor) as golfrun/machine.py names them.
EXPECTED: dict[tuple[str, str], Expected] = {
    ("H100", "SXM"): Expected(710.0, 989.4, 45.0, 330.0, f"{_H100_SHEET}; {_MEASURED_FRACTION}"),
    ("H100", "PCIe"): Expected(540.0, 756.0, 45.0, None, f"{_H100_SHEET}; {_MEASURED_FRACTION}"),
    ("H100", "NVL"): Expected(600.0, 835.0, 45.0, None, f"{_H100_SHEET}; {_MEASURED_FRACTION}"),
    ("H200", "SXM"): Expected(800.0, 989.4, 55.0, 330.0,
                              f"{_H200_SHEET}; matmul and host-to-device measured: 801.6 TFLOP/s and 55.4 GB/s on "
                              "one H200 SXM, torch 2.11.0+cu130, driver 580.159.04 (benchmarks/results/"
                              "h200-preflight.json); all-reduce: estimate as for the H100 SXM"),
    ("H200", "NVL"): Expected(600.0, 835.0, 45.0, None, f"{_H200_SHEET}; {_MEASURED_FRACTION}"),
    ("A100", "SXM"): Expected(230.0, 312.0, 22.0, 200.0,
                              "NVIDIA A100 datasheet (dense bf16 312 TFLOP/s); estimate: ~74 % of peak, PCIe Gen4 "
                              "~22 GB/s pinned, NV12 all-reduce ~200 GB/s"),
}


def expected_for(model: str, form_factor: str) -> Expected | None:
    return EXPECTED.get((model, form_factor))
