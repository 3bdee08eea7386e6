"""Stage 05, preserve: provenance, a verified tarball, verified uploads.

It always runs, whatever the verdicts upstream (a KILLed or crashed campaign is evidence too).
Rule: PASS when the tarball is written, reads back against its own SHA256SUMS, and every target
in [preserve] targets has received the bundle (tarball, README.md, SHA256SUMS) and been read back
with matching sha256; ERROR when the tarball cannot be built or any target failed — the tarball
is kept in 05-preserve/ and the reasons carry, per failed target, the command that retries it
(`golfrun upload <tarball> --to <target>`; idempotent). With no targets the stage folder is the
only copy and the stage still PASSes.
"""

from __future__ import annotations

import dataclasses

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun.fileio import now_iso
from golfrun.provenance.bundle import build_bundle
from golfrun.provenance.provenance import build_provenance, secret_values
from golfrun.provenance.tarball import verify_tarball
from golfrun.provenance.targets import Bundle, Target, UploadOptions, parse_target, upload
from golfrun.stages.context import StageContext
from golfrun.stages.spec import StageSpec
from golfrun.summary import Artifact, Check, Summary, Verdict

if TYPE_CHECKING:
    from golfrun.campaign import Campaign

SPEC = StageSpec("preserve", 5, upstream=("verify-pod", "download-data", "gate-a", "ablation", "gate-b"),
                 config_sections=("preserve",),
                 uses_trainer=True, runs_when_blocked=True)


def _trainer_path(campaign: "Campaign") -> Path:
    return Path(campaign.trainer)


def upload_options(campaign: "Campaign") -> UploadOptions:
    p = campaign.preserve
    return UploadOptions(private=p.hf_private, ssh_key=p.ssh_identity_file, known_hosts=p.known_hosts)


def _python(campaign: "Campaign") -> str:
    return campaign.backend.local.python or sys.executable


def _artifact(campaign_dir: Path, path: Path, sha256: str) -> Artifact:
    try:
        rel = str(path.relative_to(campaign_dir))
    except ValueError:
        rel = str(path)
    return Artifact(path=rel, bytes=path.stat().st_size, sha256=sha256)


def campaign_target(ctx: StageContext, spec: str) -> Target:
    """A target of the campaign: a relative `dir:` path lies in the campaign's run folder
    (runs/<campaign>/), never in whatever folder golfrun was started from, so two runs folders
    never share (and overwrite) one preserved bundle."""
    t = parse_target(spec)
    if t.kind == "dir" and not Path(t.path).is_absolute():
        return dataclasses.replace(t, path=str(ctx.campaign_dir / t.path))
    return t


def missing_job_folders(ctx: StageContext) -> list[str]:
    """Jobs that an upstream summary says ran in its own stage whose folder is gone (deleted while
    the campaign ran, say); a job reused from another stage has no folder of its own."""
    from golfrun.summary import STAGE_DIRS

    missing = []
    for stage, summary in ctx.upstream.items():
        for job in summary.jobs:
            if job.backend == "-":  # reused from another stage's run (gate-b's gate-a seed)
                continue
            folder = ctx.campaign_dir / STAGE_DIRS[stage] / "jobs" / job.name
            if not folder.is_dir():
                missing.append(f"{STAGE_DIRS[stage]}/jobs/{job.name}")
    return missing


def describe(ctx: StageContext) -> list[str]:
    """What `--dry-run` prints for this stage: it runs no trainer jobs."""
    p = ctx.campaign.preserve
    lines = [f"tarball {ctx.stage_dir / (ctx.campaign.name + '-preserve.tar.gz')} "
             f"({'with' if p.include_checkpoints else 'without'} checkpoints), provenance.json, README.md, SHA256SUMS"]
    for spec in p.targets:
        t = campaign_target(ctx, spec)
        extra = f" ({t.repo_type} repo, {'private' if p.hf_private else 'public'} if created)" if t.kind == "hf" else ""
        where = f" ({t.path})" if t.kind == "dir" else ""
        lines.append(f"upload to {spec}{where}{extra}, then read back and hash")
    if not p.targets:
        lines.append("no targets: the stage folder is the only copy")
    return lines


def write_campaign_report(ctx: StageContext, prov: dict[str, Any]) -> tuple[list[Path], Check]:
    """The campaign report in 05-preserve/report/, written before the tarball so that it is archived.

    A report that cannot be drawn is a warning, never an ERROR: the evidence matters more than
    the picture of it (`golfrun report` draws it again later)."""
    from golfrun.report.paths import REPORT_FOLDER

    folder = ctx.stage_dir / REPORT_FOLDER
    try:
        from golfrun.report.write import write_report

        files = write_report(ctx.campaign_dir, folder, provenance_doc=prov, running=ctx.stage)
    except Exception as exc:  # noqa: BLE001 - matplotlib or an odd summary must not cost the tarball
        ctx.log(f"preserve: report not written: {type(exc).__name__}: {exc}")
        return [], Check("report", f"not written: {type(exc).__name__}: {exc}", "report.html", "==", False,
                         severity="warn")
    ctx.log(f"preserve: report {files.html}")
    return files.paths(), Check("report", f"{REPORT_FOLDER}/{files.html.name}", "report.html", "==", True,
                                detail=f"{len(files.pngs)} figures; `golfrun report` redraws it")


def run(ctx: StageContext) -> Summary:
    from golfrun.provenance.tarball import sha256_file

    started = now_iso()
    campaign = ctx.campaign
    targets_spec = list(campaign.preserve.targets)
    targets = [campaign_target(ctx, t) for t in targets_spec]  # a bad target is an error before any work
    values = secret_values(campaign)
    ctx.stage_dir.mkdir(parents=True, exist_ok=True)

    ctx.log("preserve: collecting provenance")
    prov = build_provenance(campaign, ctx.campaign_dir, ctx.upstream, trainer_path=_trainer_path(campaign),
                            trainer_sha256=ctx.trainer_sha256, python=_python(campaign))
    report_files, report_check = write_campaign_report(ctx, prov)
    built = build_bundle(campaign.name, ctx.campaign_dir, ctx.stage_dir, ctx.upstream, prov,
                         include_checkpoints=bool(campaign.preserve.include_checkpoints), secret_values=values,
                         extra_files=report_files)
    tar = built.tarball
    ctx.log(f"preserve: {tar.path.name}: {len(tar.members)} members, {tar.bytes:,} bytes, sha256 {tar.sha256[:16]}…")
    report = verify_tarball(tar.path)
    checks = [Check("tarball_verified", "OK" if report.ok else report.describe(), "SHA256SUMS", "==", report.ok,
                    detail=f"{report.checked} members re-hashed"), report_check,
              Check("binaries_without_secrets", "; ".join(built.withheld) or "none withheld", "none withheld", "==",
                    not built.withheld, severity="warn",
                    detail="a binary member that holds a secret is left out of the tarball, never archived")]
    missing = missing_job_folders(ctx)
    checks.append(Check("job_folders_present", "; ".join(missing) or "all present", "all present", "==", not missing,
                        detail="every job the upstream summaries name has its folder, so the tarball holds its files"))
    decision: dict[str, Any] = {
        "tarball": str(tar.path.relative_to(ctx.campaign_dir)) if tar.path.is_relative_to(ctx.campaign_dir) else str(tar.path),
        "tarball_sha256": tar.sha256,
        "tarball_bytes": tar.bytes,
        "members": len(tar.members),
        "include_checkpoints": bool(campaign.preserve.include_checkpoints),
        "provenance": "provenance.json",
        "targets": [],
    }
    artifacts = [_artifact(ctx.campaign_dir, tar.path, tar.sha256),
                 _artifact(ctx.campaign_dir, built.readme, sha256_file(built.readme)),
                 _artifact(ctx.campaign_dir, built.sums, sha256_file(built.sums)),
                 _artifact(ctx.campaign_dir, built.provenance, sha256_file(built.provenance))]
    reasons: list[str] = [f"withheld from the tarball: {w}" for w in built.withheld]
    if missing:
        reasons.append(f"job folders named by the summaries are missing, so the tarball lacks them: {', '.join(missing)}")
    if not report.ok:
        reasons.append(f"the tarball failed its own verification: {report.describe()}")
        return Summary(ctx.stage, campaign.name, Verdict.ERROR, started, now_iso(), ctx.fingerprint,
                       dict(ctx.fingerprint_inputs), checks, decision, [], artifacts, reasons)

    bundle = Bundle.from_tarball(tar.path)
    options = upload_options(campaign)
    for target in targets:
        ctx.log(f"preserve: uploading to {target.spec}")
        res = upload(bundle, target, options, tarball_name=tar.path.name)
        decision["targets"].append(res.to_dict())
        checks.append(Check(f"upload:{target.spec}", "verified" if res.ok else res.error, "sha256 read back", "==", res.ok,
                            detail=res.location or res.error))
        ctx.log(f"preserve: {target.spec}: {'verified at ' + res.location if res.ok else 'FAILED: ' + res.error}")
        if not res.ok:
            reasons.append(f"upload to {target.spec} failed: {res.error}. The tarball is kept at {tar.path}; "
                           f"retry with: {res.retry}")
    failed_uploads = sum(1 for c in checks if c.name.startswith("upload:") and not c.passed)
    if failed_uploads:
        reasons.insert(0, f"{failed_uploads} of {len(targets)} target(s) failed; the tarball is kept at {tar.path}")
    if failed_uploads or missing:
        verdict = Verdict.ERROR
    else:
        verdict = Verdict.PASS
        where = ", ".join(targets_spec) or "the stage folder only (no [preserve] targets)"
        reasons.append(f"tarball {tar.path.name} ({len(tar.members)} members) verified; kept in {where}")
    return Summary(ctx.stage, campaign.name, verdict, started, now_iso(), ctx.fingerprint, dict(ctx.fingerprint_inputs),
                   checks, decision, [], artifacts, reasons)
