"""Gate B: confirm the promoted variant across the campaign's seeds, with the competition's
statistics, stopping as soon as the answer is known.

Which variant: ablation's `decision.promoted` and `decision.promoted_env` (or a person's
`golfrun decide ablation --promote NAME|baseline`) — read from its summary, never copied by hand.
Which runs, per seed of the first gate_b.max_seeds of gate_b.seeds (pre-registered order):
  - Gate A's seed, variant eval-only (eval_only / eval_only_quantized): the ablation's full-set run
    of that variant is reused — the same checkpoint with the same env (no job at all); only when it
    is not there (a person promoted a variant the halving dropped) an eval-only job runs;
  - Gate A's seed, baseline promoted: Gate A's own result is reused;
  - Gate A's seed, ablation mode train: the ablation's training run of that variant is reused;
  - any other seed: train + eval from scratch with the variant's env.

Seeds run in waves of gate_b.wave_size (0: one wave, the fixed design). After each wave, from 2
seeds on, the rule's test (gate_b.rule: record, frontier or target; gates/rules.py) looks: PASS,
KILL (futility, or the last look not passing) or another wave (gates/sequential.py: Lan–DeMets
O'Brien–Fleming spending keeps the overall α). Every look goes into `decision.looks` and
`looks.json`; a rerun finds the finished seeds in the job cache and makes the same looks again.
A seed that breaks a per-seed check stops the waves.

PASS iff
  every seed run passes its own checks (artifact ≤ cap, train and eval time caps);
  mean val_bpb ≤ mean reference val_bpb + gate_b.mean_tolerance_bpb;
  and, when gate_b.require_record is true, the last look decided PASS. When require_record is
  false the test is reported (t, df, p, boundary) as a warning-level check. A failed check → KILL;
  a failed job → ERROR.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from golfrun.audit.stage import compliance_checks
from golfrun.errors import CampaignError, GolfrunError
from golfrun.fileio import now_iso
from golfrun.gates.rules import Rule, rule_profile
from golfrun.gates.sequential import Design, look_schedule, make_design
from golfrun.stages import common
from golfrun.stages.common import JobSpec, plain
from golfrun.stages.context import StageContext
from golfrun.stages.handoff import BASELINE, Variant, eval_only_inputs, promoted_variant
from golfrun.stages.spec import SlurmArray, StageSpec, figure
from golfrun.summary import Check, JobRecord, Summary

if TYPE_CHECKING:
    from golfrun.campaign import Campaign


def key_figures(summary: Summary) -> str:
    d = summary.decision
    bpb = d.get("val_bpb") or {}
    rt = d.get("record_test") or {}
    return (f"{d.get('variant')}: mean val_bpb {figure(bpb.get('mean'))}, sample std {figure(bpb.get('std'))} over "
            f"{len(d.get('seeds') or [])} seeds; record p={figure(rt.get('p'), 4)}")


def array_size(campaign: "Campaign") -> int:
    """A task per seed it may run; in waves, a task per seed of one wave (an array per wave)."""
    g = campaign.gate_b
    n = len(list(g.seeds)[: g.max_seeds or None])
    return min(int(g.wave_size), n) if g.wave_size else n


def in_waves(campaign: "Campaign") -> bool:
    return int(campaign.gate_b.wave_size) > 0


SPEC = StageSpec("gate-b", 4, upstream=("download-data", "gate-a", "ablation"),
                 config_sections=("trainer_env", "gate_a", "gate_b", "reference"),
                 uses_trainer=True, runs_jobs=True, needs_gpus=True, key_figures=key_figures,
                 # pending_wave is defined below, with the waves it reads
                 array=SlurmArray(size=array_size, in_waves=in_waves, next_wave=lambda ctx: pending_wave(ctx)))


def chosen(ctx: StageContext) -> Variant:
    abl = ctx.upstream.get("ablation")
    if abl is None:
        raise GolfrunError("gate-b needs ablation's summary: run `golfrun ablation` first")
    pick = promoted_variant(abl)
    if pick is None:
        raise GolfrunError(f"ablation promoted no variant (verdict {abl.verdict.value}); "
                           "decide with `golfrun decide ablation --promote NAME|baseline --reason TEXT`")
    return pick


def seeds(ctx: StageContext) -> list[int]:
    """The seeds gate-b may run, in their pre-registered order: the first gate_b.max_seeds of
    gate_b.seeds (all of them when max_seeds is 0)."""
    g = ctx.campaign.gate_b
    values = [int(s) for s in g.seeds]
    if len(set(values)) != len(values):
        raise CampaignError(f"gate_b.seeds = {values}: each seed once")
    if not values:
        raise CampaignError("gate_b.seeds is empty")
    if g.max_seeds > len(values):
        raise CampaignError(f"gate_b.max_seeds = {g.max_seeds} but gate_b.seeds lists {len(values)}")
    return values[: g.max_seeds] if g.max_seeds else values


def waves(ctx: StageContext) -> list[list[int]]:
    """The seeds in waves of gate_b.wave_size (0: one wave, the fixed design)."""
    values = seeds(ctx)
    w = int(ctx.campaign.gate_b.wave_size) or len(values)
    return [values[i:i + w] for i in range(0, len(values), w)]


def _reused(ctx: StageContext, seed: int, pick: Variant) -> tuple[str, dict[str, Any]] | None:
    """(where from, result dict) when this seed's run already exists upstream."""
    if seed != int(ctx.campaign.gate_a.seed):
        return None
    if pick.name == BASELINE:
        gate_a = ctx.upstream.get("gate-a")
        if gate_a and gate_a.jobs and gate_a.jobs[0].result:
            return "gate-a", gate_a.jobs[0].result
    else:
        # The ablation already ran this very job: a trained variant with gate-a's seed, or an
        # eval-only one on gate-a's checkpoint with the same env over the full validation set
        # (halving rungs are named r<N>-<variant>, so a plain name is a full-set run). Rerunning
        # it would pay the same GPU time for the same number.
        abl = ctx.upstream.get("ablation")
        for job in abl.jobs if abl else []:
            if job.name == pick.name and job.result and job.result.get("mode") == pick.mode:
                return "ablation", job.result
    return None


def plan(ctx: StageContext) -> list[JobSpec]:
    """The jobs to run now: every seed (the fixed design), or — in waves — the whole first wave not
    finished, [] once the looks of the finished waves decided (what one Slurm job array runs)."""
    specs = full_plan(ctx)
    if not ctx.campaign.gate_b.wave_size:
        return specs
    wave = pending_wave(ctx)
    return [s for s in specs if s.seed in wave]


def pending_wave(ctx: StageContext) -> list[int]:
    """The first wave with a seed not finished (in the job cache or reused upstream), unless a look
    of the finished waves, or a broken per-seed check, already decided: [] then."""
    from golfrun.gates.sequential import CONTINUE, evaluate_look
    from golfrun.trainer.results import TrainerResult

    pick, rule = chosen(ctx), rule_of(ctx)
    ref_losses, _ = reference_sample(ctx)
    design = design_of(ctx, rule, len(ref_losses))
    specs = {s.seed: s for s in full_plan(ctx)}
    done: dict[int, TrainerResult] = {}
    for wave in waves(ctx):
        for seed in wave:
            reused = _reused(ctx, seed, pick)
            found = (TrainerResult.from_dict(reused[1], where=f"{reused[0]} summary") if reused is not None
                     else common.cached_result(ctx, specs[seed], common.job_env(ctx, specs[seed])))
            if found is not None:
                done[seed] = found
        if any(seed not in done for seed in wave):
            return wave
        checks = [c for seed in wave
                  for c in common.checks_for_result(ctx, f"seed{seed}.", done[seed], train=done[seed].mode == "train")]
        if any(not c.passed and c.severity == "fail" for c in checks):
            return []
        ran = [s for s in seeds(ctx) if s in done]
        if design is not None and len(ran) in design.looks:
            test = rule.test([float(done[s].final.val_loss) for s in ran], ref_losses)  # type: ignore[union-attr]
            if evaluate_look(design, len(ran), test).decision != CONTINUE:
                return []
    return []


def full_plan(ctx: StageContext) -> list[JobSpec]:
    """Every seed's job (seeds reused from upstream runs excepted)."""
    pick = chosen(ctx)
    limit, n = common.time_limit(ctx, ctx.campaign.timeouts.gate_b_s), common.nproc(ctx)
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


def rule_of(ctx: StageContext) -> Rule:
    g = ctx.campaign.gate_b
    try:
        return rule_profile(g.rule, float(g.record_margin_nats), float(g.alpha), float(g.target_val_loss))
    except ValueError as exc:
        raise CampaignError(f"gate_b.rule: {exc}") from exc


def reference_sample(ctx: StageContext) -> tuple[list[float], dict[str, Any]]:
    """The reference's per-seed val_loss, pooled with gate_b.extra_reference_val_loss (labelled)."""
    g, ref = ctx.campaign.gate_b, ctx.campaign.reference
    published = [float(x) for x in ref.val_loss]
    extra = [float(x) for x in g.extra_reference_val_loss]
    info: dict[str, Any] = {"published": {"label": ref.name or "reference", "seeds": list(ref.seeds),
                                          "val_loss": published}}
    if extra:
        info["extra"] = {"label": g.extra_reference_label, "val_loss": extra}
    info["n"] = len(published) + len(extra)
    return published + extra, info


def design_of(ctx: StageContext, rule: Rule, n_reference: int) -> Design | None:
    """The pre-registered design; None when the test cannot be made (fewer than 2 seeds on a side)
    and gate_b.require_record is false: the test is then reported as undefined, as it is."""
    g = ctx.campaign.gate_b
    n = len(seeds(ctx))
    why = ""
    if n < 2:
        why = f"gate-b's seed test needs at least 2 seeds; it has {n}"
    elif rule.two_sample and n_reference < 2:
        why = (f"the {rule.name} rule needs at least 2 reference val_loss values, got {n_reference} "
               "(reference.val_loss and gate_b.extra_reference_val_loss)")
    if why and g.require_record:
        raise CampaignError(why)
    if why:
        return None
    return make_design(rule.alpha, look_schedule(n, int(g.wave_size)), n_reference if rule.two_sample else 0,
                       float(g.futility_power))


def _wave(ctx: StageContext, pick: Variant, wave: list[int], state: dict[str, Any]) -> list[Any]:
    """Run one wave's jobs (finished ones come from the job cache) and add their results to `state`;
    returns the outcomes."""
    from golfrun.trainer.results import TrainerResult

    outcomes = common.run_jobs(ctx, [spec for spec in full_plan(ctx) if spec.seed in wave])
    for o in outcomes:
        state["records"].append(o.record)
        if o.result is not None:
            state["results"][o.spec.seed] = o.result
            state["trained"][o.spec.seed] = o.spec.mode == "train"
    for seed in wave:
        reused = _reused(ctx, seed, pick)
        if reused is not None:
            where, data = reused
            state["results"][seed] = TrainerResult.from_dict(data, where=f"{where} summary")
            state["trained"][seed] = state["results"][seed].mode == "train"
            state["records"].append(JobRecord(name=f"seed{seed}", env=pick.env, backend="-", state="SUCCEEDED",
                                              cached=True, result=data,
                                              reason=f"reused from {where}'s run of the same seed and env"))
    return outcomes


def run(ctx: StageContext) -> Summary:
    from golfrun.fileio import write_json_atomic
    from golfrun.gates.checks import verdict_from
    from golfrun.gates.sequential import CONTINUE, evaluate_look

    started = now_iso()
    pick, rule = chosen(ctx), rule_of(ctx)
    ref_losses, ref_info = reference_sample(ctx)
    design = design_of(ctx, rule, len(ref_losses))
    decision: dict[str, Any] = {
        "variant": pick.name, "variant_env": pick.env, "chosen_by": pick.by,
        "seeds_planned": seeds(ctx), "rule": rule.to_dict(), "reference_sample": ref_info,
        "design": None if design is None else {**design.to_dict(), "wave_size": int(ctx.campaign.gate_b.wave_size)},
        "looks": [],
    }
    state: dict[str, Any] = {"results": {}, "trained": {}, "records": []}
    outcomes: list[Any] = []
    checks: list[Check] = []
    for wave in waves(ctx):
        outcomes += _wave(ctx, pick, wave, state)
        failed = common.failed_jobs_summary(ctx, started, outcomes, decision)
        if failed is not None:
            return failed
        ran = [s for s in seeds(ctx) if s in state["results"]]
        for seed in wave:
            checks.extend(common.checks_for_result(ctx, f"seed{seed}.", state["results"][seed],
                                                   train=state["trained"][seed]))
            checks.extend(compliance_checks(ctx, ctx.stage_dir / "jobs" / f"seed{seed}", f"seed{seed}."))
        test = rule.test([float(state["results"][s].final.val_loss) for s in ran], ref_losses)
        decision["record_test"] = _test_record(rule, test, None)
        if design is not None and len(ran) in design.looks:
            look = evaluate_look(design, len(ran), test)
            decision["looks"].append(look.to_dict())
            decision["record_test"] = _test_record(rule, test, look.to_dict())
            write_json_atomic(ctx.stage_dir / "looks.json", {"looks": decision["looks"]})
            gating = "" if ctx.campaign.gate_b.require_record else " — reported only (gate_b.require_record = false)"
            ctx.log(f"gate-b: {rule.name} test, look at {len(ran)} seeds: {look.decision} ({look.reason}){gating}")
            if look.decision != CONTINUE:
                break
        if any(not c.passed and c.severity == "fail" for c in checks):
            break  # a seed broke a rule of the competition: no further seed can mend that
    ran = [s for s in seeds(ctx) if s in state["results"]]
    decision["seeds"] = ran
    decision["seeds_not_run"] = [s for s in seeds(ctx) if s not in ran]
    checks += _final_checks(ctx, rule, ran, state, decision)
    verdict, reasons = verdict_from(checks)
    return common.new_summary(ctx, verdict, started, checks=checks, decision=decision, jobs=state["records"],
                              reasons=reasons)


def _final_checks(ctx: StageContext, rule: Rule, ran: list[int], state: dict[str, Any],
                  decision: dict[str, Any]) -> list[Check]:
    """Per-seed figures, the mean against the reference, and the seed test's last look."""
    from golfrun.gates.checks import at_most
    from golfrun.gates.stats import seed_stats

    g, ref = ctx.campaign.gate_b, ctx.campaign.reference
    results = state["results"]
    decision["per_seed"] = [{"seed": s, **common.score(results[s]), "trained": state["trained"][s]} for s in ran]
    bpbs = [float(results[s].final.val_bpb) for s in ran]
    decision["val_bpb"] = _plain_stats(seed_stats(bpbs))
    decision["val_loss"] = _plain_stats(seed_stats([float(results[s].final.val_loss) for s in ran]))
    ref_bpb_mean = sum(float(x) for x in ref.val_bpb) / len(ref.val_bpb)
    tol, mean_bpb = float(g.mean_tolerance_bpb), sum(bpbs) / len(bpbs)
    decision["reference_mean_val_bpb"] = ref_bpb_mean
    decision["delta_bpb_vs_reference_mean"] = mean_bpb - ref_bpb_mean
    checks = [at_most("mean_val_bpb", mean_bpb, ref_bpb_mean + tol,
                      detail=f"mean over seeds {ran}; reference mean {ref_bpb_mean:.8f} + tolerance {tol:g}")]
    last = decision["looks"][-1] if decision["looks"] else None
    require = bool(g.require_record)
    if last is None:
        decision["outcome"] = "KILL"
        detail = (f"no look was made: {decision['record_test'].get('note') or 'a seed failed its checks first'}"
                  if decision.get("record_test") else "no look was made: a seed failed its checks first")
    else:
        decision["outcome"] = "PASS" if last["decision"] == "PASS" else "KILL"
        detail = (f"{rule.describe()}; look {len(decision['looks'])} at {last['n']} seeds: t={_fmt(last['t'])}, "
                  f"df={_fmt(last['df'])}, p={_fmt(last['p'])}, boundary t > {_fmt(last['boundary'])}: "
                  f"{last['reason']}")
    checks.append(Check(name=f"{rule.name}_test", observed=None if last is None else last["t"],
                        limit=None if last is None else last["boundary"], op=">",
                        passed=last is not None and last["decision"] == "PASS",
                        severity="fail" if require else "warn",
                        detail=detail + ("" if require else " (gate_b.require_record = false: reported, not gating)")))
    return checks


def _test_record(rule: Rule, test: Any, look: dict[str, Any] | None) -> dict[str, Any]:
    """The rule's test as the summary keeps it (`decision.record_test`, read by package and
    render): the statistics, and `passed` as the look decided it (an undefined test: false)."""
    return {**_plain_stats(test), "rule": rule.name, "test": rule.describe(), "margin_nats": rule.margin_nats,
            "alpha": rule.alpha, "passed": bool(look is not None and look["decision"] == "PASS"),
            "p_boundary": None if look is None else look["p_boundary"]}


def _fmt(x: Any) -> str:
    return f"{x:.6g}" if isinstance(x, (int, float)) else str(x)


def _plain_stats(obj: Any) -> dict[str, Any]:
    data = plain(obj)
    if not isinstance(data, dict):
        data = {k: getattr(obj, k) for k in dir(obj) if not k.startswith("_") and not callable(getattr(obj, k))}
    return {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (bool, int, str)) else v) for k, v in data.items()}
