"""Where a profiled step leaves the GPU idle: the time between one kernel's end and the next one's start.

The thirteenth session's profile found 11.7 ms a step before looping (15.0 with it) between the step's wall
time and the sum of its kernels' times. A gap's neighbours say where it is: between the optimizer's
last kernel and the next microbatch's first, the host preparing the batch; between two of one graph's kernels,
launches the host did not keep ahead of (each of flash-attn-4's calls runs Python). profile_step.py records
this for each phase; the rest of the step's idle time (wall time less the span from the first kernel's start to
the last one's end) is before the first kernel, the host's start of the step."""
from collections import defaultdict

import torch


def intervals(prof, device_type=torch.autograd.DeviceType.CUDA) -> list[tuple[float, float, str]]:
    """(start µs, end µs, name) of each of a torch.profiler capture's events on device_type, by start."""
    rows = [(e.time_range.start, e.time_range.end, e.name) for e in prof.events() if e.device_type == device_type]
    return sorted(rows)


def idle_gaps(rows: list[tuple[float, float, str]], kind, top: int = 12) -> dict:
    """Busy time (the union of the intervals), the span from the first start to the last end, the idle time
    inside it, its largest gaps with the kernels either side (names cut to 80 characters), and the idle time
    summed by the kinds either side ("kind before -> kind after", kind(name) -> str). Overlapping kernels
    (other streams) count once."""
    busy = idle = 0.0
    gaps = []
    by_pair = defaultdict(float)
    end, last = None, None
    for start, stop, name in rows:
        if end is None or start >= end:
            if end is not None and start > end:
                gap = (start - end) / 1000
                idle += gap
                gaps.append((gap, last, name))
                by_pair[f"{kind(last)} -> {kind(name)}"] += gap
            busy += (stop - start) / 1000
            end, last = stop, name
        elif stop > end:
            busy += (stop - end) / 1000
            end, last = stop, name
    span = (end - rows[0][0]) / 1000 if rows else 0.0
    gaps.sort(key=lambda g: -g[0])
    return {"kernels": len(rows), "busy_ms": round(busy, 3), "span_ms": round(span, 3), "idle_ms": round(idle, 3),
            "gaps": len(gaps), "largest_gaps": [[round(g, 3), a[:80], b[:80]] for g, a, b in gaps[:top]],
            "idle_by_neighbours_ms": {k: round(v, 3) for k, v in sorted(by_pair.items(), key=lambda kv: -kv[1])}}


def busy_ms(fn, runs: int = 5, device_type=torch.autograd.DeviceType.CUDA) -> float:
    """The device's time for one call of fn: the union of its kernels' intervals over `runs` calls (after a warm
    call), per call. A wall-clock timer reads the host's time instead wherever the host is the slower of the two, as
    for an op of little GPU work behind autograd (the fifteenth session's q/k check: 0.28 ms of kernels, 0.78-1.64 ms
    by the clock over the sessions)."""
    cuda = device_type == torch.autograd.DeviceType.CUDA
    activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
    fn()
    if cuda:
        torch.cuda.synchronize()
    with torch.profiler.profile(activities=[activity]) as prof:
        for _ in range(runs):
            fn()
        if cuda:
            torch.cuda.synchronize()
    return idle_gaps(intervals(prof, device_type), kind=lambda name: "", top=0)["busy_ms"] / runs
