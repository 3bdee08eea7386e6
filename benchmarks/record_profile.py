"""Where a step of a record's own train_gpt.py spends the GPU's time, with the script unchanged: runs it as __main__
and watches what it prints. At the line of step S (RECORD_PROFILE_STEPS, by default 5 and 18) torch.profiler
starts, and at the next step's line it stops: the record prints a step's line after reading its loss back, so the
GPU is idle at both ends and the capture is step S+1 whole (its EMA update included). Step 6 runs before looping and
19 with it, on bench_train_phase.py's schedule. Writes OUT.json: per phase, the figures of profile_kinds.summarize,
in the kinds profile_step.py gives our trainer's step, and which ops its largest Inductor kernels compute
(inductor_origins.py). The profiler slows the host, so the run's rates are not the
record's (record_phase.py times it without this).

Usage: python benchmarks/record_profile.py OUT.json SCRIPT   (the record's variables in the environment, as
record_phase.py sets them; kernel_session.py's `record-profile-long` step runs it through record_phase)"""
from __future__ import annotations

import builtins
import json
import os
import re
import runpy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inductor_origins import largest_origins  # noqa: E402
from profile_kinds import summarize  # noqa: E402

PHASES = ("preloop", "loop")


def watch(out: Path, starts: list[int]) -> None:
    """Hook print: the step lines printed to stdout start and stop the captures, and each finished capture is
    written to `out` at once."""
    cuda = torch.cuda.is_available()
    real_print = builtins.print
    found = {"device": torch.cuda.get_device_name() if cuda else "cpu", "phases": {}}
    capture = {}  # the capture under way: prof, phase, t0
    activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU

    def hooked(*args, **kw):
        real_print(*args, **kw)
        if kw.get("file") not in (None, sys.stdout) or not args:
            return
        m = re.match(r"(\d+)/\d+ train_loss", str(args[0]))
        if not m:
            return
        step = int(m.group(1))
        if capture:  # the line of the captured step: the GPU has finished it
            prof, phase, t0 = capture.pop("prof"), capture.pop("phase"), capture.pop("t0")
            step_ms = 1000 * (time.perf_counter() - t0)
            prof.__exit__(None, None, None)
            figures, rows = summarize(prof, step_ms)
            from torch._inductor.runtime.cache_dir_utils import cache_dir
            found["phases"][phase] = {"step": step, **figures,
                                      "inductor_origins": largest_origins(rows, Path(cache_dir()))}
            out.write_text(json.dumps(found, indent=2))
        if step in starts:  # the profiler's start-up before the clock: the next step has not begun
            capture.update(prof=torch.profiler.profile(activities=[activity]), phase=PHASES[starts.index(step)])
            capture["prof"].__enter__()
            capture["t0"] = time.perf_counter()
    builtins.print = hooked


def main() -> None:
    out, script = Path(sys.argv[1]), sys.argv[2]
    starts = [int(s) for s in os.environ.get("RECORD_PROFILE_STEPS", "5,18").split(",")]
    watch(out, starts)
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
