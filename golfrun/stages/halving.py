"""Successive halving for the ablation's eval-only variants (ablation.halving_fractions).

Rung i scores the surviving eval-only variants and their baselines on the fraction f_i of the
validation documents — the same documents for all of them: the trainer draws them with
VAL_DOC_SEED = ablation.halving_doc_seed (docs/trainer.md) — and keeps the better part
(ceil(ablation.halving_keep × survivors), at least one) by delta_bpb = variant − baseline of that
rung. Only the survivors reach the full set, which is the ablation's ordinary run: the promoted
variant's figures always come from the full set. Trained variants are not halved (a subset of the
validation set saves nothing on a training run).

Rung jobs live beside the full ones, named `r<i>-<job>` (`r1-baseline`, `r1-ttt`), so a rerun
serves every finished rung from the job cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from golfrun.stages import common
from golfrun.stages.common import JobOutcome, JobSpec
from golfrun.stages.context import StageContext


@dataclass
class Halving:
    rungs: list[dict[str, Any]] = field(default_factory=list)  # one entry per rung, for the summary
    outcomes: list[JobOutcome] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failed: bool = False


def rung_spec(spec: JobSpec, rung: int, fraction: float, doc_seed: int) -> JobSpec:
    env = {**spec.env, "VAL_DOC_FRACTION": repr(float(fraction)), "VAL_DOC_SEED": str(int(doc_seed))}
    return replace(spec, name=f"r{rung}-{spec.name}", env=env, keep=None)


def survivors_of(deltas: Mapping[str, float], keep: float) -> list[str]:
    """The better part: the ceil(keep × n) lowest deltas (at least one; ties by name; NaN last)."""
    ranked = sorted(deltas, key=lambda n: (math.isnan(deltas[n]), deltas[n], n))
    return ranked[: max(1, math.ceil(keep * len(ranked)))]


def run_rungs(ctx: StageContext, full: Sequence[JobSpec], eval_variants: Mapping[str, str],
              baseline_job: Mapping[str, str]) -> Halving:
    """Run the rungs before the full set. `full`: the ablation's full-set specs; `eval_variants`:
    name → eval mode of the variants to halve; `baseline_job`: eval mode → its baseline job's name."""
    a = ctx.campaign.ablation
    keep, doc_seed = float(a.halving_keep), int(a.halving_doc_seed)
    by_name = {s.name: s for s in full}
    alive = sorted(eval_variants)
    out = Halving()
    for i, fraction in enumerate(a.halving_fractions, start=1):
        if len(alive) < 2:
            break  # nothing left to choose between
        modes = sorted({eval_variants[n] for n in alive})
        names = [baseline_job[m] for m in modes] + alive
        specs = [rung_spec(by_name[n], i, fraction, doc_seed) for n in names]
        outcomes = common.run_jobs(ctx, specs)
        out.outcomes.extend(outcomes)
        if any(not o.ok for o in outcomes):
            out.failed = True
            return out
        bpb = {o.spec.name[len(f"r{i}-"):]: float(o.result.final.val_bpb) for o in outcomes}  # type: ignore[union-attr]
        deltas = {n: bpb[n] - bpb[baseline_job[eval_variants[n]]] for n in alive}
        kept = survivors_of(deltas, keep)
        out.rungs.append({
            "rung": i, "fraction": float(fraction), "doc_seed": doc_seed, "keep": keep,
            "baseline_val_bpb": {baseline_job[m]: bpb[baseline_job[m]] for m in modes},
            "variants": [{"name": n, "val_bpb": bpb[n], "delta_bpb": deltas[n], "kept": n in kept}
                         for n in sorted(alive, key=lambda n: (deltas[n], n))],
        })
        out.dropped += [n for n in alive if n not in kept]
        ctx.log(f"ablation: rung {i} ({fraction:g} of the validation documents): kept {', '.join(kept)}"
                + (f"; dropped {', '.join(n for n in alive if n not in kept)}" if len(kept) < len(alive) else ""))
        alive = kept
    return out
