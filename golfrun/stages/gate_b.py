"""Gate B: confirm the promoted variant across the campaign's seeds, with the competition's
statistics.

Which variant: ablation's `decision.promoted` and `decision.promoted_env` (or a person's
`golfrun decide ablation --promote NAME|baseline`) — read from its summary, never copied by hand.
Which runs, per seed in gate_b.seeds:
  - Gate A's seed, variant eval-only (ablation mode eval_only): eval-only on Gate A's kept
    checkpoint with the variant's env (no retraining);
  - Gate A's seed, baseline promoted: Gate A's own result is reused;
  - Gate A's seed, ablation mode train: the ablation's training run of that variant is reused;
  - any other seed: train + eval from scratch with the variant's env.

Rule: PASS iff
  every seed passes its own checks (artifact ≤ cap, train and eval time caps);
  mean val_bpb ≤ mean reference val_bpb + gate_b.mean_tolerance_bpb;
  and, when gate_b.require_record is true, the record test passes: a one-sided Welch t-test on
  per-seed val_loss (nats) that the mean improves on the reference by ≥ gate_b.record_margin_nats
  at p < gate_b.alpha. When require_record is false the record test is reported (t, df, p) as a
  warning-level check. A failed check → KILL; a failed job → ERROR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from golfrun.errors import CampaignError, GolfrunError
from golfrun.stages import common
from golfrun.stages.ablation import BASELINE, EVAL_MODES, eval_only_inputs
from golfrun.stages.common import JobSpec, plain
from golfrun.stages.context import StageContext
from golfrun.summary import Check, JobRecord, Summary


@dataclass
class Chosen:
    name: str  # variant name or "baseline"
    env: dict[str, str]
    mode: str  # how the ablation ran it: eval_only | eval_only_quantized | train

    @property
    def eval_only(self) -> bool:
        return self.mode in EVAL_MODES
    by: str  # "ablation" | "a person (golfrun decide)"


def chosen(ctx: StageContext) -> Chosen:
    abl = ctx.upstream.get("ablation")
    if abl is None:
        raise GolfrunError("gate-b needs ablation's summary: run `golfrun ablation` first")
    name = abl.decision.get("promoted")
    if not name:
        raise GolfrunError(f"ablation promoted no variant (verdict {abl.verdict.value}); "
                           "decide with `golfrun decide ablation --promote NAME|baseline --reason TEXT`")
    env = {} if name == BASELINE else dict(abl.decision.get("promoted_env") or {})
    by = "a person (golfrun decide)" if abl.human_decision else "ablation"
    mode = next((v.get("mode") for v in abl.decision.get("variants", []) if v.get("name") == name), "train")
    return Chosen(str(name), {k: str(v) for k, v in env.items()}, str(mode or "train"), by)


def seeds(ctx: StageContext) -> list[int]:
    g = ctx.campaign.gate_b
    values = [int(s) for s in g.seeds]
    max_seeds = getattr(g, "max_seeds", None)
    if max_seeds and len(values) > int(max_seeds):
        raise CampaignError(f"gate_b.seeds has {len(values)} seeds, more than gate_b.max_seeds = {max_seeds}")
    if len(set(values)) != len(values):
        raise CampaignError(f"gate_b.seeds = {values}: each seed once")
    if not values:
        raise CampaignError("gate_b.seeds is empty")
    return values


def _reused(ctx: StageContext, seed: int, pick: Chosen) -> tuple[str, dict[str, Any]] | None:
    """(where from, result dict) when this seed's run already exists upstream."""
    if seed != int(ctx.campaign.gate_a.seed):
        return None
    if pick.name == BASELINE:
        gate_a = ctx.upstream.get("gate-a")
        if gate_a and gate_a.jobs and gate_a.jobs[0].result:
            return "gate-a", gate_a.jobs[0].result
    elif not pick.eval_only:
        abl = ctx.upstream.get("ablation")
        for job in abl.jobs if abl else []:
            if job.name == pick.name and job.result:
                return "ablation", job.result
    return None


def plan(ctx: StageContext) -> list[JobSpec]:
    pick = chosen(ctx)
    limit, n = common.time_limit(ctx), common.nproc(ctx)
    specs = []
    for seed in seeds(ctx):
        if _reused(ctx, seed, pick) is not None:
            continue
        if seed == int(ctx.campaign.gate_a.seed) and pick.eval_only:
            ev_env, inputs = eval_only_inputs(ctx, pick.mode)
            specs.append(JobSpec(name=f"seed{seed}", seed=seed, mode=pick.mode, env={**pick.env, **ev_env},
                                 inputs=inputs, nproc_per_node=n, time_limit_s=limit))
        else:
            specs.append(JobSpec(name=f"seed{seed}", seed=seed, mode="train", env=dict(pick.env),
                                 nproc_per_node=n, time_limit_s=limit))
    return specs


def run(ctx: StageContext) -> Summary:
    from golfrun.gates.checks import at_most, verdict_from
    from golfrun.gates.stats import seed_stats, welch_record_test
    from golfrun.trainer.results import TrainerResult

    started = common.now_iso()
    g = ctx.campaign.gate_b
    ref = ctx.campaign.reference
    pick = chosen(ctx)
    all_seeds = seeds(ctx)
    specs = plan(ctx)
    outcomes = common.run_jobs(ctx, specs)
    decision: dict[str, Any] = {
        "variant": pick.name,
        "variant_env": pick.env,
        "chosen_by": pick.by,
        "seeds": all_seeds,
    }
    failed = common.failed_jobs_summary(ctx, started, outcomes, decision)
    if failed is not None:
        return failed

    results: dict[int, TrainerResult] = {o.spec.seed: o.result for o in outcomes if o.result is not None}
    records: list[JobRecord] = [o.record for o in outcomes]
    trained = {o.spec.seed: o.spec.mode == "train" for o in outcomes}
    for seed in all_seeds:
        reused = _reused(ctx, seed, pick)
        if reused is not None:
            where, data = reused
            results[seed] = TrainerResult.from_dict(data, where=f"{where} summary")
            trained[seed] = results[seed].mode == "train"
            records.append(JobRecord(name=f"seed{seed}", env=pick.env, backend="-", state="SUCCEEDED", cached=True,
                                     reason=f"reused from {where}'s run of the same seed and env", result=data))

    per_seed = []
    checks: list[Check] = []
    for seed in all_seeds:
        r = results[seed]
        per_seed.append({"seed": seed, **common.score(r), "trained": trained[seed]})
        checks.extend(common.checks_for_result(ctx, f"seed{seed}.", r, train=trained[seed]))
    bpbs = [float(results[s].final.val_bpb) for s in all_seeds]  # type: ignore[union-attr]
    losses = [float(results[s].final.val_loss) for s in all_seeds]  # type: ignore[union-attr]
    decision["per_seed"] = per_seed
    decision["val_bpb"] = _plain_stats(seed_stats(bpbs))
    decision["val_loss"] = _plain_stats(seed_stats(losses))
    ref_bpb_mean = sum(float(x) for x in ref.val_bpb) / len(ref.val_bpb)
    tol = float(g.mean_tolerance_bpb)
    mean_bpb = sum(bpbs) / len(bpbs)
    checks.append(at_most("mean_val_bpb", mean_bpb, ref_bpb_mean + tol,
                          detail=f"mean over seeds {all_seeds}; reference mean {ref_bpb_mean:.8f} + tolerance {tol:g}"))
    decision["reference_mean_val_bpb"] = ref_bpb_mean
    decision["delta_bpb_vs_reference_mean"] = mean_bpb - ref_bpb_mean

    margin, alpha = float(g.record_margin_nats), float(g.alpha)
    ref_losses = [float(x) for x in ref.val_loss]
    welch = welch_record_test(losses, ref_losses, margin, alpha)
    w = _plain_stats(welch)
    decision["record_test"] = {**w, "margin_nats": margin, "alpha": alpha,
                               "test": "one-sided Welch t-test on per-seed val_loss: reference − variant ≥ margin"}
    require = bool(getattr(g, "require_record", False))
    checks.append(Check(
        name="record_test_p", observed=w.get("p"), limit=alpha, op="<", passed=bool(w.get("passed")),
        severity="fail" if require else "warn",
        detail=f"improvement over the reference ≥ {margin:g} nats at p < {alpha:g}: "
               f"t={_fmt(w.get('t'))}, df={_fmt(w.get('df'))}, p={_fmt(w.get('p'))}"
               + ("" if require else " (gate_b.require_record = false: reported, not gating)")))
    verdict, reasons = verdict_from(checks)
    return common.new_summary(ctx, verdict, started, checks=checks, decision=decision, jobs=records, reasons=reasons)


def _fmt(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, (int, float)) else str(x)


def _plain_stats(obj: Any) -> dict[str, Any]:
    data = plain(obj)
    if not isinstance(data, dict):
        data = {k: getattr(obj, k) for k in dir(obj) if not k.startswith("_") and not callable(getattr(obj, k))}
    return {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, int, str)) else v) for k, v in data.items()}
