"""Ablation: screen variants (env overrides) against the baseline on the same seed.

mode = "eval_only_quantized": the same on Gate A's shipped .ptz (EVAL_ONLY_QUANTIZED_PATH), with its
own baseline job `baseline-quantized`; only eval-time settings (TTT, the corrector) can matter.
mode = "eval_only" (default): every variant is evaluated on Gate A's kept checkpoint
(EVAL_ONLY_PATH=02-gate-a/checkpoint/final_model.pt), each in its own job folder — which holds no
.ptz, so the trainer re-serializes and requantization variants take effect. The baseline is
re-evaluated the same way (job `baseline`, no overrides), so variant and baseline go through the
identical eval-only path: the comparison is apples to apples, not eval-only against Gate A's
in-training numbers.
mode = "train": every variant trains from scratch with Gate A's seed; the baseline is Gate A's own
result (same seed, same path).

All runs use Gate A's seed. delta_bpb = variant − baseline (negative = better), also in nats.

Rule (thresholds from the ablation section; both negative, promote ≤ hold):
  best delta_bpb ≤ promote_delta_bpb          → PASS, the best variant is PROMOTED;
  promote_delta_bpb < best ≤ hold_delta_bpb   → HOLD: a person decides with `golfrun decide ablation`;
  best > hold_delta_bpb                       → KILL (no variant is worth confirming).
A failed job → ERROR. The promoted variant's name and env go into `decision.promoted` /
`decision.promoted_env`, which gate-b reads; nobody copies values by hand.

Successive halving (ablation.halving_fractions, stages/halving.py): eval-only variants are first
scored on fractions of the validation documents and only the better part goes on; `decision.rungs`
lists every rung, `decision.dropped` the variants left behind, and `decision.variants` holds the
full-set figures of those that reached the full set (the promoted one's always come from there).

Learning-curve early abort (ablation.abort_at_steps, ablation.abort_margin_nats;
golfrun/trainer/curve_abort.py): a trained variant whose train loss at a check step is above the
reference's by more than the margin is stopped there by the backend running it. The reference is
gate-a's run: the ablation trains no baseline of its own (trained variants are compared with gate-a's
result), and gate-a is the same trainer, seed and settings but the variant's env. An aborted variant
is listed in `decision.aborted` (step, observed and reference loss, margin), gets a failed warning
check `curve[<name>]`, is never promoted and has no row in `decision.variants`; its attempt is in the
ledger. Every variant aborted → KILL. Finished trained variants show the checks they passed
(`curve_checks`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from golfrun.errors import CampaignError, GolfrunError, UsageError
from golfrun.fileio import now_iso
from golfrun.stages import common
from golfrun.stages.common import JobSpec
from golfrun.stages.halving import run_rungs, rung_spec
from golfrun.stages.context import StageContext
from golfrun.stages.handoff import BASELINE, EVAL_MODES, baseline_job, eval_only_inputs, gate_a_train_curve  # noqa: F401
from golfrun.stages.spec import Promotion, SlurmArray, StageSpec
from golfrun.summary import Check, Summary, Verdict

if TYPE_CHECKING:
    from golfrun.campaign import Campaign
    from golfrun.trainer.curve_abort import CurveAbort


def key_figures(summary: Summary) -> str:
    d = summary.decision
    best = f"best {d.get('best')} Δbpb {d.get('best_delta_bpb'):+.6f}" if isinstance(d.get("best_delta_bpb"), float) else ""
    aborted = [f"{a.get('name')}@{a.get('step')}" for a in d.get("aborted") or [] if isinstance(a, dict)]
    return f"{best}; promoted {d.get('promoted') or '-'}".strip("; ") + (f"; aborted {', '.join(aborted)}" if aborted else "")


def array_size(campaign: "Campaign") -> int:
    """A task per variant, plus the baseline job eval-only variants share (an upper bound is enough:
    extra tasks no-op)."""
    if list(campaign.ablation.halving_fractions):
        return 1  # halving: each rung decides the next, so one stage job with the GPUs runs them all
    variants = list(campaign.ablation.variants or [])
    eval_only = any(str(campaign.variant_mode(v)).startswith("eval_only") for v in variants)
    return len(variants) + (1 if eval_only else 0)


def check_promotable(campaign: "Campaign", name: str) -> None:
    names = [v.name for v in campaign.ablation.variants]
    if name != BASELINE and name not in names:
        raise UsageError(f"decide ablation --promote {name!r}: not a variant of campaign {campaign.name!r}; "
                         f"choose one of {names + [BASELINE]}")


def promote(summary: Summary, name: str) -> None:
    """A person's pick: `promoted` and its env, which gate-b reads (golfrun/stages/handoff.py)."""
    names = [v.get("name") for v in summary.decision.get("variants", [])]
    aborted = next((a for a in summary.decision.get("aborted") or [] if a.get("name") == name), None)
    if aborted is not None:
        raise UsageError(f"decide ablation --promote {name!r}: it was aborted at step {aborted.get('step')} (its train "
                         f"loss trailed gate-a's curve) and has no final score; choose one of {names + [BASELINE]}")
    if name != BASELINE and name not in names:
        raise UsageError(f"decide ablation --promote {name!r}: not a variant; choose one of {names + [BASELINE]}")
    env = {} if name == BASELINE else next(v.get("env", {}) for v in summary.decision["variants"] if v.get("name") == name)
    summary.decision["promoted"] = name
    summary.decision["promoted_env"] = env


SPEC = StageSpec("ablation", 3, upstream=("download-data", "gate-a"),
                 config_sections=("trainer_env", "gate_a", "ablation"),
                 uses_trainer=True, runs_jobs=True, array=SlurmArray(size=array_size), needs_gpus=True,
                 promotion=Promotion(check=check_promotable, apply=promote), key_figures=key_figures)

def variants(ctx: StageContext) -> list[tuple[str, dict[str, str], str]]:
    """(name, env, mode) per variant; mode is the variant's own or ablation.mode."""
    out: list[tuple[str, dict[str, str], str]] = []
    for i, v in enumerate(ctx.campaign.ablation.variants or []):
        if v.name == BASELINE:
            raise CampaignError(f"ablation.variants[{i}].name: {BASELINE!r} is reserved for the baseline")
        mode = ctx.campaign.variant_mode(v)
        if mode not in (*EVAL_MODES, "train"):
            raise CampaignError(f"ablation.variants[{i}] ({v.name}): mode {mode!r} is not one of "
                                f"{', '.join((*EVAL_MODES, 'train'))}")
        out.append((str(v.name), common.str_env(f"ablation.variants[{i}].env", v.env), mode))
    return out


def plan(ctx: StageContext) -> list[JobSpec]:
    """The jobs known before any result: the full set, or with successive halving the first rung of
    the eval-only variants (and their baselines) and the trained variants (what a Slurm job array
    runs; the stage itself runs the later rungs and the survivors' full set)."""
    full = full_plan(ctx)
    fractions = list(ctx.campaign.ablation.halving_fractions)
    evals = [name for name, _, mode in variants(ctx) if mode in EVAL_MODES]
    if not fractions or len(evals) < 2:
        return full
    a = ctx.campaign.ablation
    halved = set(evals) | {baseline_job(m) for m in EVAL_MODES}
    return ([rung_spec(s, 1, a) for s in full if s.name in halved]
            + [s for s in full if s.name not in halved])


def full_plan(ctx: StageContext) -> list[JobSpec]:
    """Every variant (and baseline) on the full validation set."""
    seed = int(ctx.campaign.gate_a.seed)
    limit = common.time_limit(ctx, ctx.campaign.timeouts.ablation_s)
    n = common.nproc(ctx)
    vs = variants(ctx)
    rule = abort_rule(ctx) if any(m == "train" for _, _, m in vs) else None
    specs = []
    for mode in EVAL_MODES:
        if any(m == mode for _, _, m in vs):
            ev_env, inputs = eval_only_inputs(ctx, mode)
            specs.append(JobSpec(name=baseline_job(mode), seed=seed, mode=mode, env=dict(ev_env), inputs=inputs,
                                 nproc_per_node=n, time_limit_s=limit))
    for name, env, mode in vs:
        if mode in EVAL_MODES:
            ev_env, inputs = eval_only_inputs(ctx, mode)
            specs.append(JobSpec(name=name, seed=seed, mode=mode, env={**env, **ev_env}, inputs=inputs,
                                 nproc_per_node=n, time_limit_s=limit))
        else:
            specs.append(JobSpec(name=name, seed=seed, mode="train", env=dict(env), nproc_per_node=n, time_limit_s=limit,
                                 abort=rule))
    return specs


def abort_rule(ctx: StageContext) -> "CurveAbort | None":
    """The learning-curve abort of trained variants: gate-a's run as the reference; None when
    ablation.abort_at_steps is empty, or (said in the log) when gate-a's logs have no train loss."""
    from golfrun.trainer.curve_abort import CurveAbort

    a = ctx.campaign.ablation
    if not list(a.abort_at_steps):
        return None
    points, source = gate_a_train_curve(ctx)
    if not points:
        if not ctx.dry_run:
            ctx.log(f"ablation: no early abort of trained variants: {source}")
        return None
    return CurveAbort(tuple(int(s) for s in a.abort_at_steps), float(a.abort_margin_nats), tuple(points), source)


def run(ctx: StageContext) -> Summary:
    started = now_iso()
    a = ctx.campaign.ablation
    promote, hold = float(a.promote_delta_bpb), float(a.hold_delta_bpb)
    if promote > hold:
        raise CampaignError(f"ablation.promote_delta_bpb ({promote}) must be ≤ ablation.hold_delta_bpb ({hold})")
    gate_a = ctx.upstream.get("gate-a")
    if gate_a is None:
        raise GolfrunError("ablation needs gate-a's summary: run `golfrun gate-a` first")
    vs = variants(ctx)
    if not vs:
        raise CampaignError("ablation.variants is empty: give at least one [[ablation.variants]]")
    specs = full_plan(ctx)
    halving = run_rungs(ctx, specs, {name: mode for name, _, mode in vs if mode in EVAL_MODES},
                        {mode: baseline_job(mode) for mode in EVAL_MODES})
    decision: dict[str, Any] = {
        "mode": str(ctx.campaign.ablation.mode),
        "seed": int(ctx.campaign.gate_a.seed),
        "thresholds": {"promote_delta_bpb": promote, "hold_delta_bpb": hold},
        "delta_convention": "delta_bpb = variant - baseline (negative = better)",
        "rungs": halving.rungs,
        "dropped": halving.dropped,
    }
    if halving.failed:
        return common.failed_jobs_summary(ctx, started, halving.outcomes, decision)  # type: ignore[return-value]
    vs = [v for v in vs if v[0] not in halving.dropped]
    outcomes = common.run_jobs(ctx, [spec for spec in specs if spec.name not in halving.dropped])
    failed = common.failed_jobs_summary(ctx, started, outcomes, decision)
    if failed is not None:
        return failed
    by_name = {o.spec.name: o for o in outcomes}
    abort_checks, abort_reasons = _aborted(outcomes, vs, decision)
    vs = [v for v in vs if not by_name[v[0]].aborted]
    jobs = [o.record for o in halving.outcomes + outcomes]
    if not vs:
        return common.new_summary(ctx, Verdict.KILL, started, checks=abort_checks, decision=decision, jobs=jobs,
                                  reasons=["every variant was aborted: none finished to be compared", *abort_reasons])
    decision["baseline"] = baselines = _baselines(by_name, gate_a, vs)
    decision["variants"] = rows = _rows(by_name, baselines, vs, promote, hold)
    for row in rows:
        spec = by_name[row["name"]].spec
        if spec.abort is not None:  # the checks a finished trained variant passed
            row["curve_checks"] = _curve_checks(ctx, spec)
    verdict, checks, reasons = _decide(rows, promote, hold, decision)
    return common.new_summary(ctx, verdict, started, checks=checks + abort_checks, decision=decision,
                              jobs=jobs, reasons=reasons + abort_reasons)


def _aborted(outcomes: list[common.JobOutcome], vs: list[tuple[str, dict[str, str], str]],
             decision: dict[str, Any]) -> tuple[list[Check], list[str]]:
    """The variants stopped trailing gate-a's curve: `decision.aborted` (and the rule in
    `decision.early_abort`), a failed warning check and a reason each."""
    rule = next((o.spec.abort for o in outcomes if o.spec.abort is not None), None)
    # gate-a's last logged step: how long a full run of the same settings trains (a wallclock cap
    # may stop it long before ITERATIONS), so what an abort saved is measured against it
    full = rule.reference[-1][0] if rule is not None and rule.reference else None
    if rule is not None:
        decision["early_abort"] = {"steps": list(rule.steps), "margin_nats": rule.margin_nats,
                                   "reference": rule.reference_source, "reference_last_step": full}
    env_of = {name: env for name, env, _ in vs}
    decision["aborted"] = rows = [
        {"name": o.spec.name, "env": env_of.get(o.spec.name, {}), "mode": o.spec.mode,
         **{k: (o.abort or {}).get(k) for k in ("check_step", "step", "iterations", "observed_loss",
                                                "reference_loss", "margin_nats", "reference_source")}}
        for o in outcomes if o.aborted]
    for r in rows:
        step = r["step"]
        r["steps_not_trained"] = full - step if isinstance(step, int) and full is not None and full > step else 0
    checks, reasons = [], []
    for r in rows:
        limit = None if r["reference_loss"] is None else r["reference_loss"] + float(r["margin_nats"] or 0.0)
        of = f" of {r['iterations']}" if r["iterations"] else ""
        checks.append(Check(name=f"curve[{r['name']}]", observed=r["observed_loss"], limit=limit, op="<=", passed=False,
                            severity="warn", detail=f"aborted at step {r['step']}{of}: train_loss above gate-a's "
                                                    f"{r['reference_loss']:.4f} + margin {r['margin_nats']:g} nats"))
        obs = "not a number" if r["observed_loss"] is None else f"{r['observed_loss']:.4f}"
        saved = f"; {r['steps_not_trained']} of gate-a's {full} steps not trained" if r["steps_not_trained"] else ""
        reasons.append(f"aborted {r['name']} at step {r['step']}{of}: train_loss {obs} > gate-a's "
                       f"{r['reference_loss']:.4f} + {r['margin_nats']:g} nats (never promoted{saved})")
    return checks, reasons


def _curve_checks(ctx: StageContext, spec: JobSpec) -> list[dict[str, Any]]:
    """The early-abort checks a finished trained variant went through, from its log."""
    from golfrun.trainer.curve_abort import watch_log

    assert spec.abort is not None
    try:
        lines = (common.job_dir(ctx, spec) / common.LOG_NAME).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [c.to_dict() for c in watch_log(spec.abort, lines).checks]


def _baselines(by_name: dict[str, Any], gate_a: Summary,
               vs: list[tuple[str, dict[str, str], str]]) -> dict[str, dict[str, Any]]:
    """What each mode's variants are compared with: the eval-only baseline job of that mode, or
    gate-a's own result for trained variants."""
    baselines: dict[str, dict[str, Any]] = {}
    for mode in EVAL_MODES:
        if baseline_job(mode) in by_name:
            b = common.score(by_name[baseline_job(mode)].result)
            b["source"] = (f"{mode} re-evaluation of gate-a's checkpoint (job '{baseline_job(mode)}'), "
                           f"for the {mode} variants")
            baselines[mode] = b
    if any(mode == "train" for _, _, mode in vs):
        b = {k: gate_a.decision.get(k) for k in ("val_loss", "val_bpb", "eval_time_ms", "artifact_bytes", "label")}
        b["source"] = "gate-a's result (same seed, trained the same way), for the trained variants"
        baselines["train"] = b
    for b in baselines.values():
        if b.get("val_bpb") is None:
            raise GolfrunError(f"ablation: the baseline has no val_bpb ({b['source']})")
    return baselines


def _rows(by_name: dict[str, Any], baselines: dict[str, dict[str, Any]], vs: list[tuple[str, dict[str, str], str]],
          promote: float, hold: float) -> list[dict[str, Any]]:
    """One row per variant: its score, its baseline and delta_bpb = variant − baseline."""
    from golfrun.gates.stats import classify_delta

    rows = []
    for name, env, mode in vs:
        base = baselines[mode]
        s = common.score(by_name[name].result)
        delta = s["val_bpb"] - base["val_bpb"]
        rows.append({
            "name": name,
            "env": env,
            **s,
            "mode": mode,
            "baseline_val_bpb": base["val_bpb"],
            "delta_bpb": delta,
            "delta_loss": None if base.get("val_loss") is None else s["val_loss"] - base["val_loss"],
            "outcome": classify_delta(delta, promote, hold).value,
        })
    return rows


def _decide(rows: list[dict[str, Any]], promote: float, hold: float,
            decision: dict[str, Any]) -> tuple[Verdict, list[Check], list[str]]:
    """The best delta decides: PROMOTE (PASS, the handoff to gate-b), HOLD for a person, or KILL."""
    from golfrun.gates.stats import ablation_decision

    picked = ablation_decision({r["name"]: r["delta_bpb"] for r in rows}, promote, hold)
    if picked.best is None:
        raise GolfrunError(f"ablation: {picked.reason}")
    verdict_word, best = picked.outcome.value, picked.best
    best_row = next(r for r in rows if r["name"] == best)
    decision.update(best=best, best_delta_bpb=best_row["delta_bpb"], outcome=verdict_word, promoted=None)
    checks = [
        Check(name=f"delta_bpb[{r['name']}]", observed=r["delta_bpb"], limit=promote, op="<=",
              passed=r["delta_bpb"] <= promote, severity="warn",
              detail=f"{r['outcome']}: promote at ≤ {promote:g}, hold at ≤ {hold:g} (variant − baseline)")
        for r in rows
    ]
    checks.append(Check(name="best_delta_bpb", observed=best_row["delta_bpb"], limit=hold, op="<=",
                        passed=best_row["delta_bpb"] <= hold,
                        detail=f"best variant {best}; ≤ {promote:g} promotes, ≤ {hold:g} holds for a person"))
    delta = best_row["delta_bpb"]
    if verdict_word == "PROMOTE":
        decision.update(promoted=best, promoted_env=best_row["env"], promoted_mode=best_row["mode"])
        return Verdict.PASS, checks, [f"promoted {best}: delta_bpb {delta:+.6f} ≤ {promote:g}"]
    if verdict_word == "HOLD":
        return Verdict.HOLD, checks, [
            f"best {best} delta_bpb {delta:+.6f} is between {promote:g} and {hold:g}; "
            f"decide with `golfrun decide ablation --promote {best}|baseline` or `--kill`, with --reason"]
    return Verdict.KILL, checks, [f"no variant improves enough: best {best} delta_bpb {delta:+.6f} > {hold:g}"]
