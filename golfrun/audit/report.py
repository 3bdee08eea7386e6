"""Audit a run: a trainer job folder, a campaign folder (runs/<campaign>/) or a published records
folder → findings (golfrun.audit.rules), each observed against its limit.

What counts as the shipped code is the trainer file that would be submitted: the records folder's
`train_gpt.py`, or the campaign's trainer (campaign.resolved.toml `trainer`). The full validation
split is the data's val shards (their token count, less the tail the trainer trims to whole
sequences) for a campaign, or the variant's published count (rules.FULL_VAL_TARGETS) for a
records folder.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golfrun.audit import rules
from golfrun.audit.logfacts import LogFacts, read_log_facts
from golfrun.audit.rules import Finding
from golfrun.errors import TrainerResultError
from golfrun.summary import STAGE_DIRS

AUDIT_SCHEMA = "golfrun.audit/1"
GATE_STAGE_DIRS = (STAGE_DIRS["gate-a"], STAGE_DIRS["gate-b"])
DEFAULT_SEQ_LEN = 2048


@dataclass(frozen=True)
class FullSplit:
    targets: int | None  # scored targets of the whole split
    slack: int = 0  # a shorter count within this many is the trainer trimming to whole sequences
    how: str = ""


@dataclass
class AuditReport:
    target: Path
    kind: str  # "job" | "campaign" | "records folder"
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.ok is False]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": AUDIT_SCHEMA, "target": str(self.target), "kind": self.kind,
                "ok": not self.violations, "findings": [f.to_dict() for f in self.findings],
                "compliance": rules.compliance_block(self.findings), "notes": self.notes}


def audit_path(path: Path | str, trainer: Path | None = None, val_targets: int | None = None) -> AuditReport:
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise TrainerResultError(f"{path}: not a folder (audit takes a job folder, runs/<campaign>/ or a records folder)")
    if (path / "campaign.resolved.toml").is_file():
        return _audit_campaign(path, trainer, val_targets)
    if (path / "train_gpt.py").is_file() and (path / "submission.json").is_file():
        return _audit_records_folder(path, val_targets)
    report = AuditReport(path, "job")
    trainer = trainer or campaign_trainer(path.parent.parent.parent)
    split = FullSplit(val_targets) if val_targets is not None else FullSplit(None)
    report.findings = audit_job(path, _size(trainer, report), split)
    return report


def audit_job(folder: Path, code_bytes: int | None, split: FullSplit) -> list[Finding]:
    """The findings of one trainer job folder: its log (and results.json, when there) and its dump."""
    from golfrun.audit.scoredump import audit_dump

    facts = _job_facts(folder)
    if facts.result.final is None:
        raise TrainerResultError(f"{folder}: no final score (the run crashed or is still running): nothing to audit")
    out = findings_from_log(facts, code_bytes, split)
    dump = _score_dump(folder, facts)
    if dump is not None:
        final = facts.result.final
        out += audit_dump(dump, None if final is None else final.val_bpb, split.targets, facts.result.seed)
    return out


def findings_from_log(facts: LogFacts, code_bytes: int | None, split: FullSplit) -> list[Finding]:
    r, seed = facts.result, facts.result.seed
    art = r.artifact
    out = [rules.artifact_bytes(code_bytes, art.model_bytes if art else None, art.total_bytes if art else None,
                                seed=seed)]
    if r.mode == "train":
        out.append(rules.train_time(facts.train_s, facts.gptq_s, seed=seed,
                                    how=_train_how(facts)))
    out.append(rules.eval_time(facts.eval_s, seed=seed, how="the final score's eval_time"))
    out.append(_full_validation(facts.val_targets, split, seed))
    return out


def _train_how(facts: LogFacts) -> str:
    if facts.train_s is None:
        return ""
    if facts.gptq_s is None:
        return f"train {facts.train_s:.1f} s; the log shows no GPTQ/Hessian time"
    return f"train {facts.train_s:.1f} s + GPTQ {facts.gptq_s:.1f} s ({facts.gptq_how})"


def _full_validation(scored: int | None, split: FullSplit, seed: int | None) -> Finding:
    if scored is not None and split.targets is not None and split.targets - split.slack <= scored <= split.targets:
        return rules.full_validation(scored, scored, seed, how=f"{split.how} (full split {split.targets:,})".strip())
    return rules.full_validation(scored, split.targets, seed, how=split.how)


# --------------------------------------------------------------------------- the three kinds of target


def _audit_records_folder(path: Path, val_targets: int | None) -> AuditReport:
    from golfrun.records.folder import read_record_folder

    report = AuditReport(path, "records folder")
    rec = read_record_folder(path)
    report.notes += rec.differences + [f"not read: {u}" for u in rec.unreadable]
    if val_targets is not None:
        split = FullSplit(val_targets, how="as given")
    else:
        split = FullSplit(rules.FULL_VAL_TARGETS.get(rec.variant or ""), how=f"the published {rec.variant} split")
    code = _size(rec.trainer, report)
    for run in rec.runs:
        facts = read_log_facts(run.log.read_text(encoding="utf-8", errors="replace"))
        facts.result.seed = run.seed
        report.findings += findings_from_log(facts, code, split)
    report.findings.append(rules.seeds(len(rec.runs), detail=f"{len(rec.runs)} seed log(s)"))
    return report


def _audit_campaign(path: Path, trainer: Path | None, val_targets: int | None) -> AuditReport:
    report = AuditReport(path, "campaign")
    code = _size(trainer or campaign_trainer(path), report)
    split = FullSplit(val_targets, how="as given") if val_targets is not None else data_split(path)
    jobs = [j for d in GATE_STAGE_DIRS for j in sorted((path / d / "jobs").glob("*")) if j.is_dir()]
    if not jobs:
        report.notes.append("no gate-a or gate-b job folder yet")
    for job in jobs:
        try:
            report.findings += audit_job(job, code, split)
        except TrainerResultError as exc:
            report.notes.append(f"{job.relative_to(path)}: {str(exc).splitlines()[0]}")
    return report


def data_split(campaign_dir: Path, seq_len: int = DEFAULT_SEQ_LEN) -> FullSplit:
    """The campaign's full validation split from download-data's val shards (their headers)."""
    from golfrun.data.layout import dataset_dir
    from golfrun.data.shards import read_header

    try:
        decision = json.loads((campaign_dir / STAGE_DIRS["download-data"] / "summary.json").read_text())["decision"]
        data_dir = Path(decision["data_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return FullSplit(None, how="no download-data summary")
    # the campaign's variant only: a data folder may hold other variants' shards too
    variant = decision.get("variant")
    where = dataset_dir(data_dir, variant) if isinstance(variant, str) and _known_variant(variant) else data_dir
    shards = sorted(where.glob("**/fineweb_val_*.bin"))
    if not shards:
        return FullSplit(None, how=f"no val shards under {where}")
    tokens = sum(read_header(s).num_tokens for s in shards)
    return FullSplit(tokens - 1, slack=seq_len - 1,
                     how=f"{len(shards)} val shard(s), less a tail shorter than one {seq_len}-token sequence")


# --------------------------------------------------------------------------- helpers


def _known_variant(variant: str) -> bool:
    from golfrun.data.layout import dataset_dir_name
    from golfrun.errors import DataError

    try:
        dataset_dir_name(variant)
    except DataError:
        return False
    return True


def _job_facts(folder: Path) -> LogFacts:
    """The log's facts; results.json's final and artifact win where the trainer wrote one."""
    from golfrun.trainer.results import RESULTS_FILE, read_results_json

    logs = [*sorted(folder.glob("*.txt")), folder / "job.log"]
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in logs if p.is_file()]
    if not texts:
        raise TrainerResultError(f"{folder}: no trainer log (*.txt, job.log) to audit")
    facts = read_log_facts(max(texts, key=len))
    if (folder / RESULTS_FILE).is_file():
        res = read_results_json(folder / RESULTS_FILE)
        facts.result.final, facts.result.artifact = res.final or facts.result.final, res.artifact or facts.result.artifact
        facts.result.seed, facts.result.mode = res.seed, res.mode
        if res.final is not None and res.final.eval_time_ms is not None:
            facts.eval_s = res.final.eval_time_ms / 1000.0
    return facts


def _score_dump(folder: Path, facts: LogFacts) -> Path | None:
    return score_dump_for(folder, None if facts.result.final is None else facts.result.final.label)


def score_dump_for(folder: Path, label: str | None) -> Path | None:
    """The dump of the final score: `<base>.<final label>.npz` if there, else a lone dump."""
    from golfrun.audit.scoredump import is_score_dump

    dumps = [p for p in sorted(folder.glob("*.npz")) if is_score_dump(p)]
    if label is not None:
        for p in dumps:
            if p.name.endswith(f".{label.replace(' ', '_')}.npz"):
                return p
    plain = [p for p in dumps if p.name.count(".") == 1]
    return plain[0] if len(plain) == 1 else None


def campaign_trainer(campaign_dir: Path) -> Path | None:
    try:
        doc = tomllib.loads((campaign_dir / "campaign.resolved.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    trainer = doc.get("trainer")
    return Path(trainer) if isinstance(trainer, str) else None


def _size(trainer: Path | None, report: AuditReport) -> int | None:
    if trainer is None or not Path(trainer).is_file():
        report.notes.append(f"the trainer file ({trainer or 'unknown'}) is not here: the shipped code size is not shown")
        return None
    return Path(trainer).stat().st_size
