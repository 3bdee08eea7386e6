"""Successive halving for the ablation's eval-only variants (ablation.halving_fractions).

Rung i scores the surviving eval-only variants and their baselines on the fraction f_i of the
validation documents — the same documents for all of them: the trainer draws them with
VAL_DOC_SEED = ablation.halving_doc_seed (docs/trainer.md) — and keeps the better part
(ceil(ablation.halving_keep × survivors), at least one) by delta_bpb = variant − baseline of that
rung. Only the survivors reach the full set, which is the ablation's ordinary run: the promoted
variant's figures always come from the full set. Trained variants are not halved (a subset of the
validation set saves nothing on a training run).

ablation.halving_rule = "paired" keeps instead every variant that is not confidently worse than the
rung's best: the rung jobs run with VAL_CHUNKS = ablation.halving_chunks, so each reports its score
summed per chunk of the (same) documents; chunk by chunk, a variant's delta against its baseline is
compared with the best variant's (over the chunks where each scored the same targets as its baseline),
and a one-sided Wilcoxon signed-rank test (scipy) drops the variant when its p-value for "worse" is
below ablation.halving_alpha. A real difference is seen on a small
fraction; a tie is never dropped, however many variants share it. The comparison is against the
rung's observed best, as racing does: a pruning rule, not the decision, which the full set makes.

Rung jobs live beside the full ones, named `r<i>-<job>` (`r1-baseline`, `r1-ttt`), so a rerun
serves every finished rung from the job cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from golfrun.campaign.schema import Ablation
from golfrun.errors import TrainerResultError
from golfrun.stages import common
from golfrun.stages.common import JobOutcome, JobSpec
from golfrun.stages.context import StageContext
from golfrun.trainer.results import ChunkSums


@dataclass
class Halving:
    rungs: list[dict[str, Any]] = field(default_factory=list)  # one entry per rung, for the summary
    outcomes: list[JobOutcome] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failed: bool = False


def rung_spec(spec: JobSpec, rung: int, a: Ablation) -> JobSpec:
    """`spec` on rung `rung`'s fraction of the validation documents (and, paired, with chunk sums)."""
    env = {**spec.env, "VAL_DOC_FRACTION": repr(float(a.halving_fractions[rung - 1])),
           "VAL_DOC_SEED": str(int(a.halving_doc_seed))}
    if a.halving_rule == "paired":
        env["VAL_CHUNKS"] = str(int(a.halving_chunks))
    return replace(spec, name=f"r{rung}-{spec.name}", env=env, keep=None)


def ranked(deltas: Mapping[str, float]) -> list[str]:
    """Lowest delta first; ties by name; NaN last."""
    return sorted(deltas, key=lambda n: (math.isnan(deltas[n]), deltas[n], n))


def survivors_of(deltas: Mapping[str, float], keep: float) -> list[str]:
    """The better part: the ceil(keep × n) lowest deltas (at least one; ties by name; NaN last)."""
    return ranked(deltas)[: max(1, math.ceil(keep * len(deltas)))]


def worse_than_best(chunk_deltas: Mapping[str, Sequence[float | None]],
                    deltas: Mapping[str, float]) -> dict[str, float | None]:
    """For each variant, the one-sided Wilcoxon signed-rank p-value that its per-chunk delta is above the
    best variant's (the lowest overall delta), over the chunks both scored; None for the best itself.
    No chunk that differs → 1.0 (nothing says it is worse)."""
    from scipy import stats

    best = ranked(deltas)[0]
    out: dict[str, float | None] = {best: None}
    for name in deltas:
        if name == best:
            continue
        diffs = [a - b for a, b in zip(chunk_deltas[name], chunk_deltas[best])
                 if a is not None and b is not None and not math.isnan(a - b)]
        if not any(diffs):
            out[name] = 1.0
            continue
        out[name] = float(stats.wilcoxon(diffs, alternative="greater").pvalue)
    return out


def rung_chunks(outcomes: Mapping[str, JobOutcome]) -> dict[str, ChunkSums]:
    """The chunk sums of each rung job's final score; a job without them stops the stage, naming it."""
    out = {}
    for name, o in outcomes.items():
        chunks = None if o.result is None or o.result.final is None else o.result.final.chunks
        if chunks is None:
            raise TrainerResultError(f"{o.spec.name}: its final score has no chunk sums; ablation.halving_rule = "
                                     "\"paired\" needs a trainer that writes them for VAL_CHUNKS (docs/trainer.md)")
        out[name] = chunks
    return out


def chunk_deltas(chunks: Mapping[str, ChunkSums], baseline_of: Mapping[str, str]) -> dict[str, list[float | None]]:
    """Each variant's per-chunk delta bpb against its baseline. A chunk counts (else None) only where the variant
    scored the same targets of it as its baseline: the plain evaluator leaves the stream's last partial batch
    unscored where TTT scores it, and a delta over different tokens is not a paired difference."""
    out = {}
    for name, base in baseline_of.items():
        v, b = chunks[name], chunks[base]
        if len(v.targets) != len(b.targets):
            raise TrainerResultError(f"{name} and {base}: different chunk counts ({len(v.targets)}, "
                                     f"{len(b.targets)}): not the same documents")
        out[name] = [None if x is None or y is None or tx != ty else x - y
                     for x, y, tx, ty in zip(v.bpb(), b.bpb(), v.targets, b.targets)]
    return out


def run_rungs(ctx: StageContext, full: Sequence[JobSpec], eval_variants: Mapping[str, str],
              baseline_job: Mapping[str, str]) -> Halving:
    """Run the rungs before the full set. `full`: the ablation's full-set specs; `eval_variants`:
    name → eval mode of the variants to halve; `baseline_job`: eval mode → its baseline job's name."""
    a = ctx.campaign.ablation
    by_name = {s.name: s for s in full}
    alive = sorted(eval_variants)
    out = Halving()
    for i, fraction in enumerate(a.halving_fractions, start=1):
        if len(alive) < 2:
            break  # nothing left to choose between
        modes = sorted({eval_variants[n] for n in alive})
        names = [baseline_job[m] for m in modes] + alive
        outcomes = common.run_jobs(ctx, [rung_spec(by_name[n], i, a) for n in names])
        out.outcomes.extend(outcomes)
        if any(not o.ok for o in outcomes):
            out.failed = True
            return out
        rung = decide_rung(a, i, {o.spec.name[len(f"r{i}-"):]: o for o in outcomes},
                           {n: baseline_job[eval_variants[n]] for n in alive})
        out.rungs.append(rung)
        kept = [v["name"] for v in rung["variants"] if v["kept"]]  # best first
        out.dropped += [n for n in alive if n not in kept]
        ctx.log(f"ablation: rung {i} ({fraction:g} of the validation documents): kept {', '.join(kept)}"
                + (f"; dropped {', '.join(n for n in alive if n not in kept)}" if len(kept) < len(alive) else ""))
        alive = kept
    return out


def decide_rung(a: Ablation, i: int, outcomes: Mapping[str, JobOutcome],
                baseline_of: Mapping[str, str]) -> dict[str, Any]:
    """Rung i's summary entry: each variant's score and delta against its baseline, whether it goes on
    (`kept`) and, under the paired rule, its p-value of being worse than the rung's best."""
    bpb = {n: float(o.result.final.val_bpb) for n, o in outcomes.items()}  # type: ignore[union-attr]
    deltas = {n: bpb[n] - bpb[base] for n, base in baseline_of.items()}
    p: dict[str, float | None] = {}
    if a.halving_rule == "paired":
        p = worse_than_best(chunk_deltas(rung_chunks(outcomes), baseline_of), deltas)
        kept = [n for n in deltas if p[n] is None or p[n] >= a.halving_alpha]  # type: ignore[operator]
    else:
        kept = survivors_of(deltas, float(a.halving_keep))
    rule = {"alpha": float(a.halving_alpha), "chunks": int(a.halving_chunks)} if p else {"keep": float(a.halving_keep)}
    return {
        "rung": i, "fraction": float(a.halving_fractions[i - 1]), "doc_seed": int(a.halving_doc_seed),
        "rule": a.halving_rule, **rule,
        "baseline_val_bpb": {base: bpb[base] for base in sorted(set(baseline_of.values()))},
        "variants": [{"name": n, "val_bpb": bpb[n], "delta_bpb": deltas[n], "kept": n in kept,
                      **({"p_worse_than_best": p[n]} if p else {})} for n in ranked(deltas)],
    }
