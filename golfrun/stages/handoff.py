"""What one stage hands the next, read from the upstream summary: typed, so that no stage imports
another stage.

- gate-a → ablation, gate-b: its kept checkpoint (`eval_only_inputs`: the file, by the sha256 that
  gate-a's summary lists, so a retrained checkpoint invalidates every cached eval-only job).
- gate-a → ablation: its run's training curve (`gate_a_train_curve`), the reference of the
  learning-curve early abort of trained variants.
- ablation → gate-b: the promoted variant (`promoted_variant(summary)`), from
  `decision.promoted` / `decision.promoted_env` — or a person's `golfrun decide ablation --promote`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from golfrun.summary import Summary

if TYPE_CHECKING:
    from golfrun.stages.context import StageContext

BASELINE = "baseline"  # the variant with no overrides
# Eval-only modes: which file of gate-a's checkpoint the job evaluates, through which variable, and
# the name of the baseline job that re-evaluates that file with no overrides.
EVAL_MODES = ("eval_only", "eval_only_quantized")
_EVAL_INPUT = {
    "eval_only": ("EVAL_ONLY_PATH", "final_model.pt", BASELINE),
    "eval_only_quantized": ("EVAL_ONLY_QUANTIZED_PATH", "final_model.int6.ptz", "baseline-quantized"),
}


def baseline_job(mode: str) -> str:
    """The baseline job of an eval-only mode."""
    return _EVAL_INPUT[mode][2]


def eval_only_inputs(ctx: "StageContext", mode: str = "eval_only") -> tuple[dict[str, str], dict[str, str]]:
    """(env, inputs) for an eval-only job on Gate A's checkpoint (final_model.pt for eval_only, the
    quantized .ptz for eval_only_quantized); inputs carry its sha256, so a retrained checkpoint
    invalidates every cached eval-only job."""
    var, filename, _ = _EVAL_INPUT[mode]
    gate_a = ctx.upstream.get("gate-a")
    ckpt = ctx.campaign_dir / "02-gate-a" / "checkpoint" / filename
    sha = "unknown"
    if gate_a is not None:
        for a in gate_a.artifacts:
            if a.path.endswith(filename):
                ckpt = ctx.campaign_dir / a.path
                sha = a.sha256
    return {var: str(ckpt)}, {"checkpoint_sha256": sha}


def gate_a_train_curve(ctx: "StageContext") -> tuple[list[tuple[int, float]], str]:
    """(step, train loss) of gate-a's run, from the first of its job folder's logs (the trainer's
    `<RUN_ID>.txt`, then job.log) that has train-loss lines, and where they come from; ([], why not)
    when gate-a's summary names no job folder or no log of it has any."""
    from golfrun.trainer.curve_abort import train_losses
    from golfrun.trainer.results import trainer_logs

    gate_a = ctx.upstream.get("gate-a")
    rel = gate_a.decision.get("job_dir") if gate_a is not None else None
    if not isinstance(rel, str) or not rel:
        return [], "gate-a's summary names no job folder"
    folder = ctx.campaign_dir / rel
    for log in trainer_logs(folder):
        try:
            points = train_losses(log.read_text(encoding="utf-8", errors="replace").splitlines())
        except OSError:
            continue
        if points:
            return points, f"gate-a's run ({Path(rel, log.name).as_posix()})"
    return [], f"no train_loss line in gate-a's logs ({rel})"


@dataclass(frozen=True)
class Variant:
    """The variant the ablation promoted (or a person did)."""

    name: str  # a variant's name, or "baseline"
    env: dict[str, str] = field(default_factory=dict)
    mode: str = "train"  # how the ablation ran it: eval_only | eval_only_quantized | train
    by: str = "ablation"  # "ablation" | "a person (golfrun decide)"

    @property
    def eval_only(self) -> bool:
        return self.mode in EVAL_MODES


def promoted_variant(summary: Summary) -> Variant | None:
    """The promoted variant named by an ablation summary; None when it promoted none."""
    name = summary.decision.get("promoted")
    if not name:
        return None
    env = {} if name == BASELINE else dict(summary.decision.get("promoted_env") or {})
    by = "a person (golfrun decide)" if summary.human_decision else "ablation"
    mode = next((v.get("mode") for v in summary.decision.get("variants", []) if v.get("name") == name), "train")
    return Variant(str(name), {k: str(v) for k, v in env.items()}, str(mode or "train"), by)
