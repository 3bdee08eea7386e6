"""Gate A: reproduce the reference run for one seed (train + eval), then gate on it.

Rule: PASS iff every check passes —
  val_bpb ≤ reference val_bpb of that seed + gate_a.bpb_tolerance (the only place the tolerance
  lives), total artifact bytes ≤ gate_a.artifact_cap_bytes (the competition's 16,000,000),
  training time ≤ gate_a.max_train_seconds, final eval time ≤ gate_a.max_eval_seconds.
  Any failed check → KILL. A crash, a missing result or a seed absent from the reference → ERROR.
  gate_a.artifact_headroom_bytes, if set, is a warning only: our own margin is never a failure.

The job's final_model.pt and final_model.int6.ptz are copied to `02-gate-a/checkpoint/` before
anything parses the job's output; ablation and gate-b evaluate that copy.
"""

from __future__ import annotations

from pathlib import Path

from golfrun.audit.stage import compliance_checks
from golfrun.errors import CampaignError
from golfrun.fileio import now_iso
from golfrun.stages import common
from golfrun.stages.common import JobSpec
from golfrun.stages.context import StageContext
from golfrun.stages.spec import StageSpec, figure
from golfrun.summary import Summary, Verdict


def key_figures(summary: Summary) -> str:
    d = summary.decision
    return f"val_bpb {figure(d.get('val_bpb'))} (≤ {figure(d.get('limit_val_bpb'))}), {d.get('artifact_bytes') or '-'} B"


SPEC = StageSpec("gate-a", 2, upstream=("verify-pod", "download-data"),
                 config_sections=("trainer_env", "gate_a", "reference"),
                 uses_trainer=True, runs_jobs=True, needs_gpus=True, key_figures=key_figures)

CHECKPOINT_DIR = "checkpoint"


def checkpoint_dir(ctx: StageContext) -> Path:
    return ctx.stage_dir / CHECKPOINT_DIR


def plan(ctx: StageContext) -> list[JobSpec]:
    seed = int(ctx.campaign.gate_a.seed)
    return [
        JobSpec(
            name=f"seed{seed}",
            seed=seed,
            mode="train",
            env={},
            nproc_per_node=common.nproc(ctx),
            time_limit_s=common.time_limit(ctx, ctx.campaign.timeouts.gate_a_s),
            keep=common.keep_checkpoint(checkpoint_dir(ctx)),
        )
    ]


def run(ctx: StageContext) -> Summary:
    from golfrun.gates.checks import at_most, verdict_from

    started = now_iso()
    g = ctx.campaign.gate_a
    seed = int(g.seed)
    ref = ctx.campaign.reference
    idx = common.reference_index(ctx, seed)
    if idx is None or idx >= len(ref.val_bpb):
        raise CampaignError(
            f"gate_a.seed = {seed} has no published score: reference.seeds = {list(ref.seeds)} "
            f"with {len(ref.val_bpb)} val_bpb value(s)"
        )
    ref_bpb = float(ref.val_bpb[idx])
    tolerance = float(g.bpb_tolerance)
    limit = ref_bpb + tolerance

    (spec,) = plan(ctx)
    outcome = common.run_job(ctx, spec)
    decision = {"seed": seed, "reference_val_bpb": ref_bpb, "bpb_tolerance": tolerance, "limit_val_bpb": limit}
    failed = common.failed_jobs_summary(ctx, started, [outcome], decision)
    if failed is not None:
        return failed
    result = outcome.result
    assert result is not None and result.final is not None
    if spec.keep is not None and not (checkpoint_dir(ctx) / "final_model.pt").is_file() and (common.job_dir(ctx, spec) / "final_model.pt").is_file():
        spec.keep(common.job_dir(ctx, spec))  # served from cache with the kept copy missing
    checks = [
        at_most("val_bpb", result.final.val_bpb, limit,
                detail=f"{result.final.label}; reference seed {seed} {ref_bpb:.8f} + tolerance {tolerance:g}"),
        *common.checks_for_result(ctx, "", result, train=True),
        *compliance_checks(ctx, common.job_dir(ctx, spec)),
    ]
    ckpt = checkpoint_dir(ctx)
    artifacts = [common.artifact(ctx, ckpt / n) for n in ("final_model.pt", "final_model.int6.ptz") if (ckpt / n).is_file()]
    decision.update(common.score(result))
    decision["delta_bpb_vs_reference"] = result.final.val_bpb - ref_bpb
    decision["checkpoint"] = {a.path.rsplit("/", 1)[-1]: a.path for a in artifacts}
    decision["job_dir"] = str(common.job_dir(ctx, spec).relative_to(ctx.campaign_dir))
    verdict, reasons = verdict_from(checks)
    if verdict is Verdict.PASS and not (ckpt / "final_model.pt").is_file():
        verdict, reasons = Verdict.ERROR, ["the job left no final_model.pt: ablation and gate-b would have nothing to evaluate"]
    return common.new_summary(ctx, verdict, started, checks=checks, decision=decision,
                              jobs=[outcome.record], artifacts=artifacts, reasons=reasons)
