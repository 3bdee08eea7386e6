"""The kernel measurements of train_gpt.py on one GPU, planned for device calls of at most ten minutes.

Steps, most valuable first (each training configuration = bench_train_phase.train_phase: the record
configuration on one GPU, stopped once training has reported its throughput):

  baseline        MLP_KERNEL=plain ATTN_BACKEND=varlen LOSS_KERNEL=plain (the record's kernels), ITERS steps,
                  compile cache cold: the reference throughput and the cold time to the first step. Every speed-up
                  waits for it, so it is a "try" step (below) too
  loss-check      kernel_checks.py loss: the fused soft-capped loss against Inductor's, values and time, and its
                  kernels' launch sweep
  qk-check        kernel_checks.py qk: the fused q/k norm + RoPE against Inductor's, values and time, and its
                  kernels' launch sweep (seconds, no flash-attn-4 needed)
  xsa-check       kernel_checks.py xsa: the fused XSA against Inductor's, values and time, and its kernels'
                  launch sweep (seconds, no flash-attn-4 needed)
  baseline-next   only while PENDING holds candidates that apply to the record's kernels (PENDING_ON_PLAIN):
                  baseline with them, on baseline's graphs when PENDING_IN_OPS, no flash-attn-4 needed
  baseline-1mb    baseline as one rank's step of an 8-GPU run: GRAD_ACCUM=1, a step of one microbatch of the
                  record's size, 8 × ITERS steps (the same tokens), on baseline's graphs
  fp8-check       kernel_checks.py fp8: every matmul cuBLAS runs in a micro-step, in bf16 and as FP8 _scaled_mm with
                  its casts: what FP8 matmuls would save per step (seconds, no flash-attn-4 needed)
  mlp-signs-check kernel_checks.py mlp-signs: the fused MLP keeping pre's signs (MLP_SAVE_SIGNS) against keeping
                  pre, each kernel and the op forward + backward (seconds, no flash-attn-4 needed)
  mlp-tiles       kernel_checks.py mlp-tiles: each fused MLP kernel under every candidate launch configuration,
                  the persistent TMA kernels among them (seconds, no flash-attn-4 needed)
  plain-loss      baseline with LOSS_KERNEL=triton, if its check passed: new graphs, so a compile. It needs no
                  flash-attn-4, so the first call (one .fa4 part) can time it. Measured in four sessions, so it
                  starts only where its estimate fits (as a "try" it was killed at a deadline in the tenth)
  fa4-checks      only where flash-attn-4 is unpacked (FA4_SITE, from the .fa4 parts of benchmarks/fa4_wheels.sh):
                  kernel_checks.py fa4, FA4 against both varlen paths at the record's shape
  default         MLP_KERNEL=triton ATTN_BACKEND=fa4 LOSS_KERNEL=triton QK_KERNEL=triton ATTN_CU_TRIM=1 (what
                  `auto` picks on Hopper with flash-attn-4), ITERS steps, if its checks passed; tried past its estimate like `plain-loss`
  next            only while PENDING holds candidates for the defaults: default with them; tried past its estimate.
                  A candidate inside the custom ops (PENDING_IN_OPS) compiles default's graphs, warm; a form of
                  the loss kernels (PENDING_LOSS_TILES) runs at the loss check's fastest launches
  default-1mb     default as one rank's step of an 8-GPU run (as baseline-1mb), on default's graphs
  tiled           next (else default) with the sweep's fastest launch configurations where they are not the
                  default's (the tiles live inside the custom ops: the same graphs, a warm compile)
  profile         profile_step.py with next's (else default's) kernels: where a step's GPU time goes now
  bytes           profile with TORCHINDUCTOR_BENCHMARK_KERNEL=1 (its own compile): how far each Inductor kernel is
                  from the bandwidth of a device copy, and what that bounds (inductor_bytes.py); tried past its
                  estimate
  baseline-equiv  baseline, EQUIV_ITERS steps, on the warm cache: the loss reference and the warm time to first step
  next-equiv      next, EQUIV_ITERS steps: the loss equivalence against baseline-equiv, per step; without
                  candidates, default-equiv (default, EQUIV_ITERS steps) stands here
  plain-loss-equiv  plain-loss, EQUIV_ITERS steps: the fused loss's equivalence alone, without flash-attn-4
  baseline-noise  baseline-equiv again: the run-to-run noise floor of the losses and the throughput
  baseline-long   baseline on documents of FineWeb's length (DATA_LONG, DATA_DIR-long: about 135 a microbatch, the
                  main data's are six times shorter), ITERS steps: the reference where the record is scored
  next-long       next (else default: default-long) on the same documents, ITERS steps, if its checks passed;
                  with a candidate, default-long runs first (both tried past their estimates: new graphs)
  profile-long    profile on the same documents (NAME-profile-long.json)
  baseline-long-1mb, next-long-1mb (else default-long-1mb)
                  the -long steps as one rank's step of an 8-GPU run (as baseline-1mb), on their graphs: the
                  closest to a rank of the scored run, whose step the record's logs give (96-97 ms before looping)
  record-long, record
                  the record's own script (RECORD_TRAINER, PR #1610's; record_phase.py, FA3 replaced by torch's
                  varlen kernel with K/V repeated, as in `baseline`) on each data, ITERS steps: the issue's
                  yardstick. Its first run compiles eight graphs (four cu_seqlens lengths, each way), and the main
                  data's 775 documents a microbatch make it compile more lengths on the way
  record-profile-long
                  record-long again under record_profile.py: a step before looping and one with it profiled, by
                  kind (NAME-record-profile-long.json)
  baseline-profile-long
                  profile on the long documents with the record's kernels (NAME-baseline-profile-long.json): beside
                  record-profile-long, why the record's script is faster than its kernels in our trainer
  then what earlier sessions measured (benchmarks/README.md), for a machine with time to spare:
  tuned           next (else default) with TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE=1 (Inductor times block sizes
                  for its pointwise and reduction kernels), ITERS steps; tried past its estimate
  gemm            next (else default) with TORCHINDUCTOR_MAX_AUTOTUNE_GEMM=1 (Inductor's Triton GEMM templates
                  against cuBLAS, with the pointwise work around a winning template fused into it), ITERS steps;
                  tried past its estimate (its compile outlasted two calls in the eighth session)
  both            MLP_KERNEL=triton ATTN_BACKEND=varlen_gqa LOSS_KERNEL=plain: the speed-up without flash-attn-4
  both-tiled      both with the sweep's fastest launch configurations (both's graphs, a warm compile)
  fa4             baseline with ATTN_BACKEND=fa4: flash-attn-4 alone
  checks          kernel_checks.py mlp,gqa,fa3: fused MLP vs plain Inductor, golf::flash_varlen vs varlen with
                  K/V repeated, the FA3 branch through its stand-in compiled fullgraph vs varlen (own compile cache)
  triton, gqa     each change alone
  both-equiv      both, EQUIV_ITERS steps: its loss equivalence

A step starts only if its estimate (from what this machine has measured so far, else conservative H200
defaults) fits before the call's deadline (DEADLINE_S after start); otherwise it waits for the next call, unless
it is a "try" step (may_start).
Steps of the new kernels whose check failed are skipped, with the reason; a step that failed is not retried.
State lives in STATE (default /tmp/kbench), which a warm machine keeps between calls: calling again continues
where the last call stopped, with the compile caches warm. Each call writes to OUT every result so far (up to 8
files; a call brings back at most 8): NAME-configs.json, one entry per configuration (device, command, date,
tokens_per_s_preloop, tokens_per_s_loop, peak_mem_mib, compile_s, compile_cache, time_to_first_step_s,
attention and MLP kernels, the losses), NAME-checks.json, NAME-profile.json, NAME-bytes.json,
NAME-profile-long.json, NAME-record-profile-long.json, NAME-baseline-profile-long.json and
NAME-session.tar.gz
(session.json: every step's status, estimates, the equivalence; and all logs).

Usage: python3 benchmarks/kernel_session.py DATA_DIR NAME
  env: OUT (/tmp/bench) STATE (/tmp/kbench) DEADLINE_S (560) ITERS (24) EQUIV_ITERS (100) WARMUP (2) DATA_LONG
       RECORD_TRAINER (.record/pr1610/train_gpt.py: the record's script, not in the repository; README)
       FA4_SITE (/tmp/fa4site) SMOKE=1 (CPU: the tests' tiny model, few steps, requirements not enforced)
       FIRST (step names, comma-separated: run these first, in this order, each after the checks it needs;
       e.g. baseline,both when a session may get one call, which cannot carry flash-attn-4 whole)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_train_phase import gpu_name, train_phase  # noqa: E402
from record_phase import record_phase  # noqa: E402
from session_table import render as ratio_table  # noqa: E402

MARGIN_S = 20  # left at the deadline for packing and copying OUT
# Before anything is measured on this machine. H200 (benchmarks/README.md): cold compile of the two training
# graphs ≈ 204 s in the gpu1 campaign, 302 s from launch to the first step in the run; a step ≈ 0.69 s
# before looping and ≈ 1.04 s with it. On the high side, but not so high that call 1 leaves the cold baseline out.
DEFAULTS = {"overhead_s": 20.0, "cold_compile_s": 280.0, "warm_compile_s": 45.0, "step_pre_s": 0.8,
            "step_loop_s": 1.15, "checks_s": 120.0, "fa4_checks_s": 150.0, "mlp_tiles_s": 90.0, "loss_check_s": 120.0,
            "profile_s": 150.0, "fp8_check_s": 90.0, "qk_check_s": 90.0, "mlp_signs_s": 90.0, "xsa_check_s": 90.0,
            # the record's script to its first step, cold: over 560 s on the H200 with the main data (the issue)
            "record_start_s": 450.0}
# a hung check or profile must not take the whole call
CHECKS_CAP_S = {"checks": 180.0, "fa4-checks": 240.0, "mlp-tiles": 180.0, "loss-check": 240.0, "profile": 240.0,
                "profile-long": 240.0, "baseline-profile-long": 240.0,
                "fp8-check": 180.0, "qk-check": 180.0, "mlp-signs-check": 180.0, "xsa-check": 180.0,
                "bytes": 480.0}  # bytes: a compile of its own (~250 s) and the profile
# A step on the FineWeb-length documents against one on the main data (-long steps teach no step time): measured
# 1.03 on the record's kernels (fourteenth session) and 0.98 on the default's (fifteenth); a margin above both, so
# that a -long step does not start where it cannot finish.
LONG_STEP_FACTOR = 1.25
TRY_LEFT_S = 200.0  # a "try" step starts with at least this left: a compile of new graphs after the baseline's
# Loss equivalence on the GPU (bf16, different kernels: different rounding and summation order). Stated
# before measuring; baseline-noise's difference to baseline-equiv is recorded beside it as the noise floor.
EQUIV_TOL = {"max_abs": 0.05, "mean_abs_last10": 0.02}
# The noise floor itself, measured after EQUIV_TOL was stated (first session, H100: plain against a rerun of plain,
# results/h100-kernels-1gpu-baseline-noise.json); its max |Δ| is above EQUIV_TOL's. `within_noise`: the mean
# |Δ| over all steps and over the last 10 no larger than plain's own (this session's baseline-noise when it ran).
# The max of 100 noisy differences is recorded beside it but not judged: between two reruns of plain it was
# 0.040 and 0.056.
NOISE_FLOOR = {"max_abs": 0.0561, "mean_abs": 0.0112, "mean_abs_last10": 0.0079,
               "source": "results/h100-kernels-1gpu-baseline-noise.json"}


# Settings that are candidates for the trainer's defaults, not yet defaults: `next` is `default` with them, and the
# checks they need (PENDING_NEEDS, names of kernel_checks.py's checks) gate every step that runs them. Without
# candidates the plan has no `next` and builds the tiles, the profile and the autotuning on `default`. The
# nineteenth session's candidate: the fused XSA (golf::xsa, train_gpt.py's FUSED XSA), where Inductor's kernels for
# it took 29-37 ms of the default's 647 ms step on FineWeb-length documents. (None was pending from the sixteenth
# session, which ended the thirteenth's training loop that read each step back after launching the next.)
PENDING: dict[str, str] = {"XSA_KERNEL": "triton"}
PENDING_NEEDS: list[str] = ["xsa"]
# A candidate read inside the custom ops when they run (the ninth session's, a form of the loss kernels; the
# eleventh's, the cut of cu_seqlens) changes no compiled graph: `next` then compiles default's graphs, warm. False
# for a candidate that changes what the compiler traces (the twelfth's: the op saves a uint8 tensor, not pre). A
# change of the training loop around the graphs (the thirteenth's) compiles no graph either.
PENDING_IN_OPS = False  # the fused XSA replaces ops the compiler traced: new graphs
# A candidate that applies to the record's kernels too (the thirteenth's changed the loop, not a kernel) also runs
# as `baseline-next`: baseline with it, on baseline's graphs when PENDING_IN_OPS, and without flash-attn-4, so that
# the first call of a session (which carries one .fa4 part) measures what the candidate buys.
PENDING_ON_PLAIN = True
# A candidate that is a form of the loss kernels runs at the loss check's fastest launches (loss_tiles), as its
# check timed it; any other keeps default's, so that `next` differs from `default` by the candidate alone.
PENDING_LOSS_TILES = False
RECORD_BATCH_TOKENS = 786432  # TRAIN_BATCH_TOKENS of the record: eight microbatches of 98,304 tokens


def steps(cfg: dict) -> list[dict]:
    n, n_eq = cfg["iters"], cfg["equiv_iters"]
    # Every configuration names each kernel setting, so that a change of the trainer's defaults (auto) leaves
    # the reference and the single changes as they were measured in earlier sessions
    plain = {"MLP_KERNEL": "plain", "ATTN_BACKEND": "varlen", "LOSS_KERNEL": "plain", "QK_KERNEL": "plain",
             "XSA_KERNEL": "plain", "ATTN_CU_TRIM": "0", "MLP_SAVE_SIGNS": "0"}
    both = {**plain, "MLP_KERNEL": "triton", "ATTN_BACKEND": "varlen_gqa"}
    loss = {"LOSS_KERNEL": "triton"}
    # what `auto` picks on Hopper with flash-attn-4 (the fused loss since the sixth session's next-equiv, the fused
    # q/k norm since the tenth's, the cu_seqlens cut since the eleventh's)
    default = {"MLP_KERNEL": "triton", "ATTN_BACKEND": "fa4", "QK_KERNEL": "triton", "XSA_KERNEL": "plain",
               "ATTN_CU_TRIM": "1", "MLP_SAVE_SIGNS": "0", **loss}
    nxt = {**default, **PENDING}
    top = "next" if PENDING else "default"  # the fastest configuration: the profile's, tiles' and autotuning's base
    fast = {"needs": ["fa4", "loss", "qk"], "needs_fa4": True}  # with flash-attn-4, the fused loss and q/k norm
    top_fast = {**fast, "needs": fast["needs"] + PENDING_NEEDS}  # those with the candidates
    # default with the candidates and their equivalence; without candidates, default's own equivalence
    tiles_of_top = {"loss_tiles": True} if PENDING and PENDING_LOSS_TILES else {}  # next's kernels at its launches
    in_ops = {"same_graphs_as": "default", **tiles_of_top} if PENDING and PENDING_IN_OPS else {}
    top_run = [{"name": "next", "kind": "train", "env": nxt, "iters": n, "try": True, **top_fast, **in_ops}] \
        if PENDING else []
    plain_next = [{"name": "baseline-next", "kind": "train", "env": {**plain, **PENDING}, "iters": n,
                   **({"needs": PENDING_NEEDS} if PENDING_NEEDS else {}),
                   **({"same_graphs_as": "baseline"} if PENDING_IN_OPS else {})}] \
        if PENDING and PENDING_ON_PLAIN else []
    # One rank's step of an 8-GPU run: one microbatch of the same size, eight times the steps for the same tokens,
    # the optimizer's step taken after each (on one GPU, not shared out among eight as in a scored run)
    one_mb = {"GRAD_ACCUM": "1", "TRAIN_BATCH_TOKENS": str(RECORD_BATCH_TOKENS // 8)}

    def one_rank(name: str, env: dict, graphs: str, **needs) -> dict:
        return {"name": name, "kind": "train", "env": {**env, **one_mb}, "iters": 8 * n, "microbatches": 1,
                "same_graphs_as": graphs, **needs}
    top_equiv = {"name": f"{top}-equiv", "kind": "train", "env": nxt, "iters": n_eq, "same_graphs_as": top,
                 **top_fast, **tiles_of_top}
    return [
        # the reference every speed-up waits for: started past its estimate too (a cold compile varies,
        # 191-291 s to the first step on the H100), and killed at the deadline it leaves its compile cached
        {"name": "baseline", "kind": "train", "env": plain, "iters": n, "try": True, "reference": True},
        {"name": "loss-check", "kind": "checks", "only": "loss"},  # seconds, and no flash-attn-4 needed
        {"name": "qk-check", "kind": "checks", "only": "qk"},  # the same
        {"name": "xsa-check", "kind": "checks", "only": "xsa"},  # the same
        *plain_next,  # the candidate on the record's kernels: a warm start, no flash-attn-4
        one_rank("baseline-1mb", plain, "baseline"),  # one rank's step on the record's kernels: warm, no flash-attn-4
        {"name": "fp8-check", "kind": "checks", "only": "fp8"},  # the same
        {"name": "mlp-tiles", "kind": "checks", "only": "mlp-tiles"},  # the persistent kernels' first timing
        {"name": "mlp-signs-check", "kind": "checks", "only": "mlp-signs"},  # the same
        # new graphs, so a compile; no flash-attn-4 needed, so the first call (which carries one .fa4 part) has it.
        # Measured in the sixth to ninth sessions: no longer a "try" (the tenth's call 2 started it with 200 s left
        # and lost them at the deadline)
        {"name": "plain-loss", "kind": "train", "env": {**plain, **loss}, "iters": n, "needs": ["loss"]},
        {"name": "fa4-checks", "kind": "checks", "only": "fa4", "needs_fa4": True},
        {"name": "default", "kind": "train", "env": default, "iters": n, "try": True, **fast},
        *top_run,
        one_rank("default-1mb", default, "default", **fast),  # the same on the default's kernels: a warm start
        # the top configuration's graphs (the tiles live inside the custom ops) with the sweep's fastest tiles
        {"name": "tiled", "kind": "train", "env": nxt, "iters": n, "same_graphs_as": top, "tiles": True,
         "needs": [*top_fast["needs"], "mlp-tiles"], "needs_fa4": True, **tiles_of_top},
        {"name": "profile", "kind": "profile", "env": nxt, **top_fast, **tiles_of_top},
        # the profile's Inductor kernels against their own byte counts: the most that hand-written versions of
        # them could save (the eighth session found autotuning no faster). Inductor's configuration changes, so
        # a compile of its own that teaches nothing about the others'
        {"name": "bytes", "kind": "profile", "env": {**nxt, "TORCHINDUCTOR_BENCHMARK_KERNEL": "1"}, "try": True,
         **top_fast},
        {"name": "baseline-equiv", "kind": "train", "env": plain, "iters": n_eq, "same_graphs_as": "baseline"},
        top_equiv,
        # the fused loss's equivalence without flash-attn-4: plain-loss differs from baseline by that kernel alone
        {"name": "plain-loss-equiv", "kind": "train", "env": {**plain, **loss}, "iters": n_eq,
         "same_graphs_as": "plain-loss", "needs": ["loss"]},
        {"name": "baseline-noise", "kind": "train", "env": plain, "iters": n_eq, "same_graphs_as": "baseline"},
        # documents of FineWeb's length (about 135 a microbatch of 98,304 tokens, not the main data's 775): the
        # ratio where the record is scored. Attention does more per token, and flash-attn-4's accumulators carry
        # less slack; the cu_seqlens padding (512 entries, not 1,024) makes new graphs
        {"name": "baseline-long", "kind": "train", "env": plain, "iters": n, "data": "long"},
        # with a candidate, default-long too: what the candidate buys where the record is scored, on one machine.
        # Both new graphs, so tries (the nineteenth's default-long waited a call on a cold compile's estimate)
        *([{"name": "default-long", "kind": "train", "env": default, "iters": n, "data": "long", "try": True,
            **fast}] if PENDING else []),
        {"name": f"{top}-long", "kind": "train", "env": nxt, "iters": n, "data": "long",
         **({"try": True} if PENDING else {}), **top_fast},
        # where the long documents' step goes (after the -long step, on its graphs): the fifteenth session found our
        # kernels faster on them and the record's slower, and had no profile to say how attention's time moved
        {"name": "profile-long", "kind": "profile", "env": nxt, "data": "long", **top_fast, **tiles_of_top},
        # one rank of the scored run: its microbatch, its documents (the optimizer's whole step on one GPU still)
        one_rank("baseline-long-1mb", plain, "baseline-long", data="long"),
        one_rank(f"{top}-long-1mb", nxt, f"{top}-long", data="long", **top_fast),
        # the record's own script: the yardstick, on the documents where the record is scored first (their
        # cu_seqlens lengths are among the four its priming compiles). A reference, so a try before the baseline
        {"name": "record-long", "kind": "record", "iters": n, "data": "long", "try": True, "reference": True},
        {"name": "record", "kind": "record", "iters": n, "try": True, "reference": True},
        # where the record's step goes (record_profile.py: steps 6 and 19 under torch.profiler, in the kinds of
        # profile_kinds.py, as ours), on record-long's graphs: why the record's script beats its kernels in our trainer
        {"name": "record-profile-long", "kind": "record", "iters": n, "data": "long", "profile": True},
        # the record's kernels in our trainer profiled the same way, on baseline-long's graphs: beside the record's
        # profile, where its script's 5 % over them goes (the nineteenth session had only the record's)
        {"name": "baseline-profile-long", "kind": "profile", "env": plain, "data": "long"},
        # measured by earlier sessions (benchmarks/README.md); here for a machine with time to spare.
        # Inductor benchmarks block sizes of its pointwise and reduction kernels (no GEMM autotuning): the
        # default's speed in the eighth session (1.000× / 1.003×), after a cold-length compile
        {"name": "tuned", "kind": "train", "env": {**nxt, "TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE": "1"}, "iters": n,
         "try": True, **top_fast},
        # Inductor benchmarks its Triton GEMM templates against cuBLAS for every matmul; where a template wins,
        # the norms and residual updates around it can fuse into its prologue and epilogue. Eighth session:
        # cuBLAS was the fastest choice for each of the model's 12 matmul shapes (templates 8-30 % slower), and
        # the compile was unfinished after 560 s over two calls (the optimizer's Newton-Schulz matmuls were being timed)
        {"name": "gemm", "kind": "train", "env": {**nxt, "TORCHINDUCTOR_MAX_AUTOTUNE_GEMM": "1"}, "iters": n,
         "try": True, **top_fast},
        {"name": "both", "kind": "train", "env": both, "iters": n},
        # both's graphs with the sweep's fastest tiles: the tiles' gain in training without flash-attn-4, so that
        # one call can measure it (FIRST=mlp-tiles,both,both-tiled: a sweep, a cold compile, a warm one)
        {"name": "both-tiled", "kind": "train", "env": both, "iters": n, "same_graphs_as": "both", "tiles": True,
         "needs": ["mlp-tiles"]},
        {"name": "fa4", "kind": "train", "env": {**plain, "ATTN_BACKEND": "fa4"}, "iters": n, "needs": ["fa4"],
         "needs_fa4": True},
        {"name": "checks", "kind": "checks", "only": "mlp,gqa,fa3"},
        {"name": "triton", "kind": "train", "env": {**plain, "MLP_KERNEL": "triton"}, "iters": n,
         "needs": ["mlp"]},
        {"name": "gqa", "kind": "train", "env": {**plain, "ATTN_BACKEND": "varlen_gqa"}, "iters": n,
         "needs": ["gqa"]},
        {"name": "both-equiv", "kind": "train", "env": both, "iters": n_eq, "same_graphs_as": "both",
         "needs": ["mlp", "gqa"]},
    ]


def ordered(plan: list[dict], first: str) -> list[dict]:
    """The plan with the steps named in FIRST (comma-separated) moved to its front, in that order: a session
    that may get one call puts there what that call can finish. A check that a named step needs goes just
    before it, unless already there: the plan is one pass, and a step whose check has not run waits a call."""
    names = [n for n in first.split(",") if n]
    known = {s["name"]: s for s in plan}
    if unknown := [n for n in names if n not in known]:
        raise SystemExit(f"FIRST names unknown steps {unknown}; the steps are {list(known)}")
    front: list[str] = []
    for name in names:
        checks = [check_source(need) for need in known[name].get("needs", [])]
        front += [c for c in dict.fromkeys([*checks, name]) if c not in front]
    return [known[n] for n in front] + [s for s in plan if s["name"] not in front]


def config() -> dict:
    smoke = os.environ.get("SMOKE") == "1"
    state = Path(os.environ.get("STATE", "/tmp/kbench"))
    return {"data": sys.argv[1], "name": sys.argv[2], "out": Path(os.environ.get("OUT", "/tmp/bench")),
            # the FineWeb-length documents of the -long steps (bench_kernels_1gpu.sh builds them there)
            "data_long": os.environ.get("DATA_LONG", sys.argv[1].rstrip("/") + "-long"),
            "state": state, "deadline_s": float(os.environ.get("DEADLINE_S", "560")),
            "iters": int(os.environ.get("ITERS", "4" if smoke else "24")),
            "equiv_iters": int(os.environ.get("EQUIV_ITERS", "6" if smoke else "100")),
            "warmup": int(os.environ.get("WARMUP", "1" if smoke else "2")),
            "fa4_site": Path(os.environ.get("FA4_SITE", "/tmp/fa4site")), "smoke": smoke,
            "first": os.environ.get("FIRST", ""),
            "record_trainer": Path(os.environ.get("RECORD_TRAINER", HERE.parent / ".record/pr1610/train_gpt.py")),
            # bench_kernels_1gpu.sh unpacked an earlier session's compile cache (.kcache, benchmarks/kcache.py)
            "carried": (state / "kcache-carried").is_file()}


def smoke_env() -> dict:
    """SMOKE=1: the tests' tiny configuration on a CPU (Triton through its interpreter)."""
    sys.path.insert(0, str(HERE.parent))
    from tests.trainer.conftest import TINY_ENV
    keep = ("VOCAB_SIZE", "NUM_LAYERS", "MODEL_DIM", "EMBEDDING_DIM", "NUM_HEADS", "NUM_KV_HEADS", "XSA_LAST_N",
            "ROPE_DIMS", "NUM_LOOPS", "LOOP_START", "LOOP_END", "PARALLEL_START_LAYER", "TRAIN_SEQ_LEN",
            "EVAL_SEQ_LEN", "TRAIN_BATCH_TOKENS", "VAL_BATCH_TOKENS")
    return {**{k: TINY_ENV[k] for k in keep}, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}


def fa4_ready(cfg: dict) -> bool:
    site = cfg["fa4_site"]
    return (site / "flash_attn" / "cute" / "interface.py").is_file() and any(
        (site / "nvidia_cutlass_dsl" / "dsl_packages" / "cutlass" / "_mlir" / "_mlir_libs").glob("_cutlass_ir*.so"))


def fa4_env(cfg: dict) -> dict:
    site = cfg["fa4_site"]
    paths = [str(site), str(site / "nvidia_cutlass_dsl" / "dsl_packages"), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def load_state(cfg: dict) -> dict:
    path = cfg["state"] / "session.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {"name": cfg["name"], "device": gpu_name(), "measured": {}, "steps": {}, "calls": []}


def estimate(step: dict, state: dict) -> float:
    m = {**DEFAULTS, **state["measured"]}
    if step["kind"] == "checks":
        return m[check_time_key(step)]
    if step["kind"] == "profile":
        return m["profile_s"] + (m["cold_compile_s"] if own_inductor_config(step) else 0.0)
    if step["kind"] == "record":  # its start as last measured (its priming included), then the timed steps
        return m["overhead_s"] + m["record_start_s"] + LONG_STEP_FACTOR * step["iters"] / 2 * (
            m["step_pre_s"] + m["step_loop_s"])
    warm = step.get("same_graphs_as") in state["steps"] and state["steps"][step["same_graphs_as"]]["status"] == "done"
    # new graphs after other configurations share many Triton kernels with them: the last such compile, once known
    compile_s = m["warm_compile_s"] if warm else m.get("shared_compile_s", m["cold_compile_s"])
    if own_inductor_config(step):  # autotuning times its kernels afresh: 249 s for `tuned`, not 27
        compile_s = max(compile_s, m["cold_compile_s"])
    half = step["iters"] / 2  # ENABLE_LOOPING_AT=0.5
    slower = LONG_STEP_FACTOR if step.get("data") == "long" else 1.0
    slower *= step.get("microbatches", 8) / 8  # a -1mb step: one microbatch of the eight measured
    priming = 2 * m["step_pre_s"] + 2 * m["step_loop_s"]
    return m["overhead_s"] + compile_s + slower * (priming + half * (m["step_pre_s"] + m["step_loop_s"]))


def own_inductor_config(step: dict) -> bool:
    """A step that sets Inductor's configuration (tuned, gemm, bytes): the configuration is part of Inductor's cache
    key, so it compiles everything afresh, at least as long as a cold compile, and its time says nothing about the
    other steps'."""
    return any(key.startswith("TORCHINDUCTOR_") for key in step.get("env", {}))


def may_start(step: dict, est: float, left: float, state: dict) -> bool:
    """Whether a step starts with `left` seconds of the call to go: when its estimate fits, or, for a "try" step,
    with TRY_LEFT_S left; killed at the deadline, a try leaves its compile cached for the next call. The tries
    that are not references (baseline, the record's script) wait for the baseline: a speed-up without its
    baseline beside it is worth nothing."""
    if est <= left - MARGIN_S:
        return True
    baseline_done = state["steps"].get("baseline", {}).get("status") == "done"
    return bool(step.get("try")) and left - MARGIN_S >= TRY_LEFT_S and (step.get("reference") or baseline_done)


def learn(step: dict, res: dict, state: dict, cache: str) -> None:
    """What a finished configuration tells about the next ones' durations (`cache`: cold, warm or shared). Not
    the -long steps (other data) nor the -1mb ones (one microbatch a step): other step times."""
    if not res.get("complete") or step.get("data") == "long" or "microbatches" in step:
        return
    m = state["measured"]
    m["step_pre_s"] = res["step_ms_preloop"] / 1000
    m["step_loop_s"] = res["step_ms_loop"] / 1000
    m["overhead_s"] = max(10.0, res["wall_s"] - res["priming_s"] - step["iters"] / 2 * (m["step_pre_s"] + m["step_loop_s"]))
    if not own_inductor_config(step):  # an autotuned compile says nothing about the others'
        m[f"{cache}_compile_s"] = res["compile_s"]


def blocked(step: dict, state: dict, cfg: dict) -> str | None:
    """Why a step cannot run at all (this call), or None."""
    if step.get("needs_fa4") and not fa4_ready(cfg):
        return f"flash-attn-4 is not unpacked in {cfg['fa4_site']} (carry the .fa4 parts: benchmarks/README.md)"
    if step.get("data") == "long" and not (Path(cfg["data_long"]) / "manifest.json").is_file():
        return f"no FineWeb-length dataset in {cfg['data_long']} (bench_kernels_1gpu.sh builds it)"
    if step["kind"] == "record" and cfg["smoke"]:
        return "the record's script trains on CUDA only"
    if step["kind"] == "record" and not cfg["record_trainer"].is_file():
        return (f"no record script at {cfg['record_trainer']} (RECORD_TRAINER; benchmarks/README.md, "
                "\"The record's own script\")")
    if cfg["smoke"] or waiting_for(step, state):  # a check not run yet defers the step instead
        return None
    for need in step.get("needs", []):
        source = check_source(need)
        res = state["steps"].get(source, {}).get("result", {})
        if not res.get(need, {}).get("ok"):
            return f"the {need} check did not pass ({source}: {res.get(need, {}).get('error', 'not run or failed')})"[:300]
    if step.get("tiles") and not best_tiles(state):
        return f"the mlp-tiles sweep found the default launch configurations fastest: `{step['same_graphs_as']}` is this run"
    return None


def check_time_key(step: dict) -> str:
    return {"fa4": "fa4_checks_s", "mlp-tiles": "mlp_tiles_s", "loss": "loss_check_s",
            "fp8": "fp8_check_s", "qk": "qk_check_s", "mlp-signs": "mlp_signs_s",
            "xsa": "xsa_check_s"}.get(step["only"], "checks_s")


def check_source(need: str) -> str:
    """The checks step whose result a configuration's `needs` entry reads."""
    return {"fa4": "fa4-checks", "mlp-tiles": "mlp-tiles", "loss": "loss-check", "qk": "qk-check",
            "mlp-signs": "mlp-signs-check", "xsa": "xsa-check"}.get(need, "checks")


def best_loss_tiles(state: dict) -> dict:
    """LOSS_TILE_FWD / LOSS_TILE_BWD from the loss check's sweep: the fastest launches whose outputs match the
    built-in launches', where they are not the built-in ones."""
    best = state["steps"].get("loss-check", {}).get("result", {}).get("loss", {}).get("kernels", {}).get("best", {})
    return {f"LOSS_TILE_{w.upper()}": best[w]["tile"] for w in ("fwd", "bwd")
            if w in best and best[w]["tile"] != best[w].get("default_tile")}


def step_env(step: dict, state: dict) -> dict:
    """The trainer settings a step runs with: its own, and the sweeps' fastest launches where it takes them."""
    return {**step["env"], **(best_tiles(state) if step.get("tiles") else {}),
            **(best_loss_tiles(state) if step.get("loss_tiles") else {})}


def best_tiles(state: dict) -> dict:
    """MLP_TILE_UP / MLP_TILE_GRAD from the mlp-tiles sweep: its fastest configurations with the default's bits,
    where they are not the default (none: `default` is already the run with the fastest tiles)."""
    best = state["steps"].get("mlp-tiles", {}).get("result", {}).get("mlp-tiles", {}).get("best", {})
    return {f"MLP_TILE_{w.upper()}": best[w]["tile"] for w in ("up", "grad")
            if w in best and best[w]["tile"] != best[w].get("default_tile")}


def waiting_for(step: dict, state: dict) -> str | None:
    """The check a step needs that has not run yet (deferred with it, not a failed check), or None."""
    for need in step.get("needs", []):
        source = check_source(need)
        if state["steps"].get(source, {}).get("status") not in ("done", "failed", "timed_out"):
            return source
    return None


def run_checks(step: dict, cfg: dict, timeout_s: float) -> dict:
    path = cfg["state"] / f"{step['name']}.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCHINDUCTOR_CACHE_DIR": "/tmp/kbench-checks-inductor",
           "TRITON_CACHE_DIR": "/tmp/kbench-checks-triton"}  # keeps the training baseline's compile cold
    if step.get("needs_fa4"):
        env.update(fa4_env(cfg))
    rc = None
    path.unlink(missing_ok=True)  # a retry must not read the partial JSON of a timed-out earlier call
    with open(cfg["state"] / f"{step['name']}.log", "w") as log:
        try:
            rc = subprocess.run([sys.executable, str(HERE / "kernel_checks.py"), str(path), step["only"]], env=env,
                                stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            pass
    res = json.loads(path.read_text()) if path.is_file() else {}
    res["returncode"] = rc  # negative: killed by that signal (an extension built for another Python: SIGBUS)
    res["complete"] = all(k in res for k in step["only"].split(","))
    return res


def run_profile(step: dict, cfg: dict, state: dict, timeout_s: float) -> dict:
    """profile_step.py for the step's kernels: where one optimizer step's GPU time goes, before and with looping.
    It compiles as the trainer does, into the same Inductor cache, so the training step before it made it warm."""
    path = cfg["state"] / f"{step['name']}.json"
    data = cfg["data_long"] if step.get("data") == "long" else cfg["data"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DATA_DIR": data, **step_env(step, state)}
    if step["env"].get("ATTN_BACKEND") == "fa4":
        env.update(fa4_env(cfg))
    rc = None
    path.unlink(missing_ok=True)
    with open(cfg["state"] / f"{step['name']}.log", "w") as log:
        try:
            rc = subprocess.run([sys.executable, str(HERE / "profile_step.py"), str(path)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, timeout=timeout_s, start_new_session=True).returncode
        except subprocess.TimeoutExpired:
            pass
    res = json.loads(path.read_text()) if path.is_file() else {}
    res["returncode"] = rc
    res["complete"] = "loop" in res.get("phases", {})
    return res


def run_train(step: dict, cfg: dict, state: dict, timeout_s: float) -> dict:
    extra = {"ITERS": str(step["iters"]), "WARMUP": str(cfg["warmup"]), **step_env(step, state)}
    if cfg["smoke"]:
        extra.update(smoke_env())
    if step["env"].get("ATTN_BACKEND") == "fa4":
        extra.update(fa4_env(cfg))
    before = [n for n, s in state["steps"].items() if s.get("kind") == "train" and s["status"] in ("done", "timed_out")]
    same = step.get("same_graphs_as")
    cache = ("warm (this configuration's graphs compiled before)" if same in before
             else "carried (an earlier session's compile cache, .kcache" + (f"; after {', '.join(before)})" if before else ")")
             if cfg["carried"]
             else "cold" if not before else f"shared (after {', '.join(before)}: kernels in common are cached)")
    data = cfg["data_long"] if step.get("data") == "long" else cfg["data"]
    return train_phase(data, str(cfg["state"] / f"{cfg['name']}-{step['name']}.json"), extra,
                       timeout_s=timeout_s, cache_state=cache, echo=False)


def run_record(step: dict, cfg: dict, state: dict, timeout_s: float) -> dict:
    before = [n for n, s in state["steps"].items() if s.get("kind") == "record" and s["status"] in ("done", "timed_out")]
    cache = f"after {', '.join(before)}: its graphs compiled, other cu_seqlens lengths may compile" if before \
        else "carried (.kcache)" if cfg["carried"] else "cold (the record's graphs)"
    data = cfg["data_long"] if step.get("data") == "long" else cfg["data"]
    extra = {"ITERS": str(step["iters"]), "WARMUP": str(cfg["warmup"])}
    if not step.get("profile"):
        return record_phase(str(cfg["record_trainer"]), data,
                            str(cfg["state"] / f"{cfg['name']}-{step['name']}.json"), extra, timeout_s=timeout_s,
                            cache_state=cache, echo=False)
    # the profile where publish() finds it; the run's own summary out of NAME-configs.json (the profiler's rates)
    profile = cfg["state"] / f"{step['name']}.json"
    profile.unlink(missing_ok=True)
    res = record_phase(str(cfg["record_trainer"]), data, str(cfg["state"] / f"{step['name']}-run.json"), extra,
                       timeout_s=timeout_s, cache_state=cache, echo=False, profile_to=str(profile))
    found = json.loads(profile.read_text())["phases"] if profile.is_file() else {}
    return {**res, "complete": res.get("complete", False) and "loop" in found, "profiled": sorted(found)}


# each against baseline-equiv, step by step
EQUIV_COMPARED = ("next-equiv", "plain-loss-equiv", "default-equiv", "both-equiv")
# the steps whose losses an equivalence reads: after any of them the verdicts are made again, so that one comes out
# whichever of its steps runs last (the twelfth session ran baseline-equiv after next-equiv, and got none)
EQUIV_INPUTS = (*EQUIV_COMPARED, "baseline-equiv", "baseline-noise")


def equivalence(cfg: dict, compared: str) -> dict | None:
    """Per-step losses of `compared` (the new kernels, EQUIV_ITERS steps) against `baseline-equiv`, and
    `baseline-noise` (the baseline again) against it as the noise floor."""
    def losses(name):
        path = cfg["state"] / f"{cfg['name']}-{name}.json"
        return json.loads(path.read_text())["losses"] if path.is_file() else {}

    def diff(a, b):
        common = sorted(set(a) & set(b), key=int)
        if not common:
            return None
        d = [abs(a[s] - b[s]) for s in common]
        return {"steps": len(common), "max_abs": max(d), "mean_abs": sum(d) / len(d),
                "mean_abs_last10": sum(d[-10:]) / len(d[-10:]), "last_step": int(common[-1]),
                "loss_last": {"reference": b[common[-1]], "compared": a[common[-1]]}}
    base = losses("baseline-equiv")
    res = {"reference": "baseline-equiv", "compared": compared, "tolerance": EQUIV_TOL,
           "diff": diff(losses(compared), base), "noise_floor_baseline_noise": diff(losses("baseline-noise"), base)}
    if res["diff"] is None:
        return None
    complete = res["diff"]["steps"] == cfg["equiv_iters"]
    res["within_tolerance"] = (complete and res["diff"]["max_abs"] <= EQUIV_TOL["max_abs"]
                               and res["diff"]["mean_abs_last10"] <= EQUIV_TOL["mean_abs_last10"])
    floor = res["noise_floor_baseline_noise"] or NOISE_FLOOR
    res["noise_floor"] = {**floor, "source": floor.get("source", "baseline-noise (this session)")}
    res["within_noise"] = complete and all(res["diff"][k] <= floor[k] for k in ("mean_abs", "mean_abs_last10"))
    return res


def record_equivalence(state: dict, cfg: dict) -> None:
    """Each compared configuration's equivalence, into the session state and its own result file."""
    state["equivalence"] = {}
    for compared in EQUIV_COMPARED:
        eq = equivalence(cfg, compared)
        if eq is None:
            continue
        state["equivalence"][compared] = eq
        path = cfg["state"] / f"{cfg['name']}-{compared}.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "equivalence": eq}, indent=2))


def publish(state: dict, cfg: dict) -> None:
    """Copy what exists to OUT: one JSON per configuration, the checks, and a tarball of everything."""
    out, st = cfg["out"], cfg["state"]
    out.mkdir(parents=True, exist_ok=True)
    (st / "session.json").write_text(json.dumps(state, indent=2))
    checks = {}
    for name in (s["name"] for s in steps({"iters": 0, "equiv_iters": 0}) if s["kind"] == "checks"):
        if (st / f"{name}.json").is_file():
            checks[name] = json.loads((st / f"{name}.json").read_text())
    if checks:
        (out / f"{cfg['name']}-checks.json").write_text(json.dumps(checks, indent=2))
    for name in ("profile", "bytes", "profile-long", "record-profile-long", "baseline-profile-long"):
        if (st / f"{name}.json").is_file():
            (out / f"{cfg['name']}-{name}.json").write_text((st / f"{name}.json").read_text())
    # one file for every configuration: a device call brings back at most 8 files, and there are 8 configurations
    if configs := read_configs(cfg):
        (out / f"{cfg['name']}-configs.json").write_text(json.dumps(configs, indent=2))
    with tarfile.open(out / f"{cfg['name']}-session.tar.gz", "w:gz") as tar:
        for path in sorted(st.iterdir()):
            if path.suffix in (".json", ".log"):
                tar.add(path, arcname=f"{cfg['name']}/{path.name}")


def read_configs(cfg: dict) -> dict[str, dict]:
    """Every training configuration's summary so far, by step name (NAME-configs.json)."""
    return {path.stem.removeprefix(f"{cfg['name']}-"): json.loads(path.read_text())
            for path in sorted(cfg["state"].glob(f"{cfg['name']}-*.json"))}


def run_step(step: dict, cfg: dict, state: dict, left: float) -> dict:
    timeout_s = left - MARGIN_S
    t0 = time.perf_counter()
    if step["kind"] == "checks":
        res = run_checks(step, cfg, min(timeout_s, CHECKS_CAP_S[step["name"]]))
    elif step["kind"] == "profile":
        res = run_profile(step, cfg, state, min(timeout_s, CHECKS_CAP_S[step["name"]]))
    elif step["kind"] == "record":
        res = run_record(step, cfg, state, timeout_s)
        if res.get("complete"):
            state["measured"]["record_start_s"] = res["time_to_first_step_s"]
    else:
        res = run_train(step, cfg, state, timeout_s)
        learn(step, res, state, res.get("compile_cache", "cold").split(" ")[0])
    wall = time.perf_counter() - t0
    if step["kind"] in ("checks", "profile"):
        # `bytes` includes a compile of its own, and `profile-long` may compile the long documents' graphs
        if not own_inductor_config(step) and step.get("data") != "long":
            key = "profile_s" if step["kind"] == "profile" else check_time_key(step)
            state["measured"][key] = max(wall, 30.0)
        timeout_s = min(timeout_s, CHECKS_CAP_S[step["name"]])
    status = "done" if res.get("complete") else ("timed_out" if wall >= timeout_s - 1 else "failed")
    out = {"status": status, "kind": step["kind"], "wall_s": round(wall, 1),
           "result": {k: v for k, v in res.items() if k not in ("losses",)}}
    if status != "done":  # why, from the step's own log
        logs = [p for p in (cfg["state"] / f"{step['name']}.log", cfg["state"] / f"{cfg['name']}-{step['name']}.log",
                            cfg["state"] / f"{step['name']}-run.log") if p.is_file()]  # -run: record-profile-long's
        out["log_tail"] = logs[0].read_text(errors="replace")[-1500:] if logs else ""
    return out


def defer(state: dict, call: dict, step: dict, why: str) -> None:
    """Leave a step for the next call; one skipped by an earlier call (flash-attn-4 not there yet) says so now."""
    call["deferred"][step["name"]] = why
    entry = state["steps"].get(step["name"])
    if entry is None or entry["status"] == "skipped":
        state["steps"][step["name"]] = {"status": "deferred", "kind": step["kind"], "reason": why}


def after_step(name: str, state: dict, cfg: dict) -> None:
    """The loss verdicts that step `name` may complete (whichever of their steps ran last), then OUT brought up to date."""
    if name in EQUIV_INPUTS:
        record_equivalence(state, cfg)
    publish(state, cfg)


def main() -> None:
    cfg = config()
    t_start = time.monotonic()
    cfg["state"].mkdir(parents=True, exist_ok=True)
    state = load_state(cfg)
    call = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "deadline_s": cfg["deadline_s"], "ran": [],
            "deferred": {}, "skipped": {}}
    state["calls"].append(call)
    for step in ordered(steps(cfg), cfg["first"]):
        name = step["name"]
        if state["steps"].get(name, {}).get("status") in ("done", "failed"):
            continue
        left = cfg["deadline_s"] - (time.monotonic() - t_start)
        if why := blocked(step, state, cfg):
            call["skipped"][name] = why
            state["steps"].setdefault(name, {"status": "skipped", "kind": step["kind"]})["reason"] = why
            continue
        if source := waiting_for(step, state):
            defer(state, call, step, f"waits for {source}")
            continue
        est = estimate(step, state)
        if not may_start(step, est, left, state):
            defer(state, call, step, f"estimated {est:.0f} s, {left - MARGIN_S:.0f} s left in this call")
            continue
        print(f"[kernel_session] {name}: starting (estimated {est:.0f} s, {left:.0f} s left)", flush=True)
        state["steps"][name] = {**run_step(step, cfg, state, left), "estimated_s": round(est, 1)}
        call["ran"].append(name)
        r = state["steps"][name]["result"]
        print(f"[kernel_session] {name}: {state['steps'][name]['status']} in {state['steps'][name]['wall_s']} s; "
              + ", ".join(f"{k} {r[k]:.6g}" if isinstance(r[k], float) else f"{k} {r[k]}" for k in (
                  "tokens_per_s_preloop", "tokens_per_s_loop", "compile_s", "time_to_first_step_s", "peak_mem_mib",
                  "attention_backend", "mlp_kernel", "mlp_save_signs", "loss_kernel", "qk_kernel", "xsa_kernel")
                  if k in r),
              flush=True)
        after_step(name, state, cfg)
    call["wall_s"] = round(time.monotonic() - t_start, 1)
    publish(state, cfg)
    summary = {n: {k: s.get(k) for k in ("status", "wall_s", "estimated_s", "reason")} for n, s in state["steps"].items()}
    print(json.dumps({"call": call, "steps": summary, "equivalence": state.get("equivalence"),
                      "measured": state["measured"]}, indent=1))
    if configs := read_configs(cfg):  # last, so that it is in the device's output tail: the ratios to read
        print(ratio_table(configs), end="")


if __name__ == "__main__":
    main()
