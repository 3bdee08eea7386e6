"""The audit inside gate-a and gate-b: one call per scored job (`compliance_checks`), turning the
findings into warning checks that `golfrun explain` shows as observed against the limit.

Warnings, never a KILL: a gate judges a reproduction by its score; the audit says what a submission
from this run would have to fix. A figure the run does not show adds no check.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from golfrun.audit.report import audit_job, data_split
from golfrun.errors import GolfrunError
from golfrun.summary import Check

if TYPE_CHECKING:
    from golfrun.stages.context import StageContext

_OPS = {"artifact_bytes": "<=", "train_time": "<=", "eval_time": "<=", "full_validation": "==",
        "scored_once": "==", "dump_matches_score": "==", "normalised": "<="}


def compliance_checks(ctx: "StageContext", job_folder: Path, prefix: str = "") -> list[Check]:
    """`<prefix>compliance.<rule>` checks (severity warn) for the job in `job_folder`; none when the
    folder is not there (a result reused from another stage is audited where it ran)."""
    if not Path(job_folder).is_dir():
        return []
    trainer = Path(ctx.campaign.trainer)
    code = trainer.stat().st_size if trainer.is_file() else None
    try:
        findings = audit_job(Path(job_folder), code, data_split(ctx.campaign_dir))
    except (GolfrunError, OSError, ValueError) as exc:
        # the audit informs; a log or shard it cannot read is a warning, never a gate's error
        return [Check(f"{prefix}compliance", None, None, "audit", False, str(exc).splitlines()[0], "warn")]
    return [Check(f"{prefix}compliance.{f.check}", f.observed, f.limit, _OPS.get(f.check, "<="), bool(f.ok),
                  f.detail, "warn") for f in findings if f.ok is not None]
