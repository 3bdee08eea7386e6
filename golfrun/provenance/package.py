"""`golfrun package`: the competition submission folder of a campaign, as reviewers read one.

    <out>/records/track_<track>/<YYYY-MM-DD>_<Name>/
        README.md          title with the score, results table, what changed against the base
                           record, legality, how to reproduce, credits, included files
        submission.json    the fields records carry (shared/reference/submission-format.md §2)
        train_seed<N>.log  each seed's trainer log (top level: the competition's .gitignore
                           ignores logs/ at any depth)
        train_gpt.py       the campaign's trainer, byte for byte
        requirements.txt   the trainer's third-party imports, pinned to the versions that ran

Numbers come from the summaries only: gate-b's `decision.per_seed` (or gate-a's single result
when gate-b never ran), the reference from the campaign. val_bpb and val_loss are arithmetic means
over seeds and val_bpb_std the population std (ddof 0, said in `std_convention`), rounded to 8
decimals; times are seconds. An eval-only seed's training figures are gate-a's run of that seed (its
checkpoint). Welch statistics are gate-b's record test, or the same test (gates.stats) when gate-b
holds none. The compliance block comes from golfrun.audit.rules. Rules not met are warnings
(returned, printed by the CLI and listed in the README), not errors: the folder is still written so
a person can look at it. No NaN or Infinity reaches submission.json (fileio.dumps_json).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golfrun.audit import rules
from golfrun.audit.rules import MIN_SEEDS, Finding
from golfrun.errors import ProvenanceError, SummaryError, TrainerResultError
from golfrun.fileio import dumps_json, write_text_atomic
from golfrun.provenance.provenance import secret_values
from golfrun.provenance.render import cell, fmt
from golfrun.secrets import REDACTED, is_secret_name, redact_text
from golfrun.summary import STAGE_DIRS, STAGES, Summary

if TYPE_CHECKING:
    from golfrun.campaign import Campaign

ALPHA = 0.01
STD_CONVENTION = "population, ddof 0"  # as PR #1610, #1626 and #1855 report val_bpb_std
DIGITS = 8  # derived figures (means, std, deltas) are rounded as the records print them
# what train_gpt.py imports beyond the standard library (trainer-facts §10.1)
TRAINER_REQUIREMENTS = ("torch", "numpy", "sentencepiece", "brotli", "python-minifier")


@dataclass
class SeedRow:
    seed: int
    val_loss: float
    val_bpb: float
    eval_time_ms: float | None = None
    train_time_ms: float | None = None
    artifact_bytes: int | None = None
    steps: int | None = None
    log: Path | None = None
    result: dict[str, Any] = field(default_factory=dict)
    pre_ttt_val_bpb: float | None = None  # the quantized model's score before TTT, when the final is a TTT score


@dataclass
class Package:
    folder: Path
    submission: dict[str, Any]
    warnings: list[str]
    files: list[str]


def read_summaries(campaign_dir: Path) -> dict[str, Summary]:
    out: dict[str, Summary] = {}
    for stage in STAGES:
        path = campaign_dir / STAGE_DIRS[stage] / "summary.json"
        if path.is_file():
            try:
                out[stage] = Summary.from_dict(json.loads(path.read_text()), str(path))
            except json.JSONDecodeError as exc:
                raise SummaryError(f"{path}: not JSON ({exc})") from exc
    return out


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _pstd(xs: list[float]) -> float:
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def _job_results(campaign_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(job folder, its result) of every finished job, latest stage first: results.json, or the
    log of a trainer that writes none (a published record's script, read by its score format)."""
    from golfrun.trainer.results import load_results

    found = []
    for stage in ("gate-b", "ablation", "gate-a"):
        for folder in sorted(p for p in (campaign_dir / STAGE_DIRS[stage] / "jobs").glob("*") if p.is_dir()):
            try:
                found.append((folder, load_results(folder).to_dict()))
            except (OSError, TrainerResultError):
                continue
    return found


def _find_log(campaign_dir: Path, seed: int, val_bpb: float) -> tuple[Path | None, dict[str, Any]]:
    """The trainer log of the job that produced this seed's score (gate-b's, or a reused one)."""
    for folder, res in _job_results(campaign_dir):
        final = res.get("final") or {}
        if res.get("seed") == seed and isinstance(final.get("val_bpb"), (int, float)) \
                and math.isclose(final["val_bpb"], val_bpb, rel_tol=0, abs_tol=1e-12):
            run_id = res.get("run_id")
            for cand in ([folder / f"{run_id}.txt"] if run_id else []) + [folder / "job.log"]:
                if cand.is_file():
                    return cand, res
            return None, res
    return None, {}


def pre_ttt_bpb(result: Mapping[str, Any]) -> float | None:
    """The last evaluation before a TTT final that is not itself TTT or a pre-quantization figure."""
    final = result.get("final") or {}
    if "ttt" not in str(final.get("label", "")).lower():
        return None
    before = None
    for e in result.get("evals") or []:
        label = str(e.get("label", "")).lower()
        if label == str(final.get("label", "")).lower():
            break
        if "ttt" not in label and "pre-quant" not in label and "pre_quant" not in label:
            before = e.get("val_bpb")
    return float(before) if isinstance(before, (int, float)) else None


def seed_rows(campaign_dir: Path, summaries: Mapping[str, Summary]) -> tuple[list[SeedRow], str]:
    gb = summaries.get("gate-b")
    raw: list[dict[str, Any]] = []
    source = ""
    if gb is not None and gb.decision.get("per_seed"):
        raw, source = list(gb.decision["per_seed"]), "gate-b"
    else:
        ga = summaries.get("gate-a")
        for j in (ga.jobs if ga else []):
            res = j.result or {}
            final = res.get("final") or {}
            if final.get("val_bpb") is not None:
                raw.append({"seed": res.get("seed"), "val_loss": final.get("val_loss"), "val_bpb": final.get("val_bpb"),
                            "eval_time_ms": final.get("eval_time_ms"), "train_time_ms": res.get("train_time_ms"),
                            "artifact_bytes": (res.get("artifact") or {}).get("total_bytes")})
        source = "gate-a"
    ga_train: dict[int, dict[str, Any]] = {}
    ga = summaries.get("gate-a")
    for j in (ga.jobs if ga else []):
        res = j.result or {}
        if res.get("mode", "train") == "train" and isinstance(res.get("seed"), int):
            ga_train[res["seed"]] = res
    rows = []
    for r in raw:
        if r.get("val_bpb") is None or r.get("val_loss") is None or r.get("seed") is None:
            continue
        log, res = _find_log(campaign_dir, int(r["seed"]), float(r["val_bpb"]))
        train_ms, steps = r.get("train_time_ms"), res.get("steps")
        if (r.get("mode") or res.get("mode")) in ("eval_only", "eval_only_quantized"):
            # an eval-only score on gate-a's checkpoint: the training that counts is gate-a's
            trained = ga_train.get(int(r["seed"]), {})
            train_ms, steps = trained.get("train_time_ms"), trained.get("steps")
        rows.append(SeedRow(int(r["seed"]), float(r["val_loss"]), float(r["val_bpb"]), r.get("eval_time_ms"),
                            train_ms, r.get("artifact_bytes"), steps, log, res, pre_ttt_bpb(res)))
    if not rows:
        raise ProvenanceError(f"{campaign_dir}: no seed has a final score in gate-b or gate-a; nothing to package "
                              "(run the campaign first: golfrun run-all)")
    return rows, source


def welch(gb: Summary | None, losses: list[float], ref_losses: list[float], margin: float) -> dict[str, Any]:
    """gate-b's record test when it holds one, else the same test (gates.stats) on these seeds."""
    rt = dict((gb.decision.get("record_test") or {}) if gb is not None else {})
    if rt.get("p") is not None:
        return rt  # a non-finite figure is written as null (fileio.dumps_json), as an undefined test
    from golfrun.gates.stats import welch_record_test

    res = welch_record_test(losses, ref_losses, margin_nats=margin, alpha=ALPHA)
    out = {"t": res.t, "df": res.df, "p": res.p, "passed": res.passed, "margin_nats": margin, "alpha": ALPHA,
           "source": "golfrun package (gates.stats)"}
    return {**out, "note": res.note} if res.note else out


def _provenance(campaign_dir: Path) -> dict[str, Any]:
    path = campaign_dir / STAGE_DIRS["preserve"] / "provenance.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def hardware(rows: list[SeedRow], prov: Mapping[str, Any]) -> str:
    res = rows[0].result
    n = res.get("world_size") or 1
    gpus = (prov.get("nvidia_smi") or {}).get("gpus") or []
    devices = (prov.get("trainer_python") or {}).get("devices") or []
    if gpus or devices:
        return f"{n}x{(gpus[0]['name'] if gpus else devices[0])}"
    device = str(res.get("device") or "cpu")
    if device.startswith("cuda"):
        return f"{n}xGPU"
    cpu = (prov.get("host") or {}).get("cpu_model")
    return f"{n}xCPU" + (f" ({cpu})" if cpu else "")


def requirements(prov: Mapping[str, Any]) -> str:
    pins = {}
    for spec in (prov.get("trainer_python") or {}).get("packages") or []:
        name, _, version = spec.partition("==")
        pins[name.lower().replace("_", "-")] = version
    lines = ["# third-party imports of train_gpt.py, pinned to the versions the runs used"]
    for name in TRAINER_REQUIREMENTS:
        lines.append(f"{name}=={pins[name]}" if name in pins else name)
    return "\n".join(lines) + "\n"


def folder_name(date: str, name: str) -> str:
    words = re.findall(r"[A-Za-z0-9.]+", name)
    slug = "_".join(words) or "submission"
    return f"{date}_{slug}"


def _env_for_command(campaign: "Campaign", variant_env: Mapping[str, str]) -> dict[str, str]:
    env = {**dict(campaign.trainer_env), **dict(variant_env)}
    return {k: (REDACTED if is_secret_name(k) else str(v)) for k, v in env.items()}


def reproduce_command(campaign: "Campaign", variant_env: Mapping[str, str], seeds: list[int], nproc: int) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(_env_for_command(campaign, variant_env).items()))
    seed_list = " ".join(str(s) for s in seeds)
    launcher = f"torchrun --standalone --nproc_per_node={nproc} train_gpt.py" if nproc > 1 else "python train_gpt.py"
    return (f"for seed in {seed_list}; do\n  SEED=$seed RUN_ID=train_seed$seed {env} \\\n"
            f"    {launcher} > train_seed$seed.log 2>&1\ndone")


# --------------------------------------------------------------------------- compliance and submission.json


def findings(rows: list[SeedRow], source: str, shipped_code_bytes: int, campaign_dir: Path | None = None,
             warnings: list[str] | None = None) -> list[Finding]:
    """The audit's rules on each seed's figures (golfrun.audit.rules), then on each seed's job
    folder (golfrun.audit.report: GPTQ time from the log, the validation split, the score dump).
    The artifact as shipped is the train_gpt.py this folder holds plus the compressed model."""
    from golfrun.audit.report import audit_job, data_split

    out: list[Finding] = []
    split = data_split(campaign_dir) if campaign_dir is not None else None
    for r in rows:
        model = (r.result.get("artifact") or {}).get("model_bytes")
        out.append(rules.artifact_bytes(shipped_code_bytes, model, r.artifact_bytes, seed=r.seed))
        out.append(rules.train_time(None if r.train_time_ms is None else r.train_time_ms / 1000, None, seed=r.seed))
        out.append(rules.eval_time(None if r.eval_time_ms is None else r.eval_time_ms / 1000, seed=r.seed))
        if split is not None and r.log is not None:
            try:
                out += [f for f in audit_job(r.log.parent, shipped_code_bytes, split) if f.ok is not None]
            except TrainerResultError as exc:
                (warnings if warnings is not None else []).append(f"seed {r.seed}: audit: {str(exc).splitlines()[0]}")
    out.append(rules.seeds(len(rows), detail=f"{len(rows)} seed(s) from {source}"))
    return out


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000.0, 3)


def seed_results(rows: list[SeedRow]) -> dict[str, dict[str, Any]]:
    """submission.json's seed_results, keyed by the seed as a string; times in seconds."""
    out = {}
    for r in rows:
        entry = {"val_loss": r.val_loss, "val_bpb": r.val_bpb, "artifact_bytes": r.artifact_bytes, "steps": r.steps,
                 "train_time_s": _seconds(r.train_time_ms), "eval_time_s": _seconds(r.eval_time_ms),
                 "pre_ttt_val_bpb": r.pre_ttt_val_bpb}
        out[str(r.seed)] = {k: v for k, v in entry.items() if v is not None}
    return out


def submission_json(campaign: "Campaign", rows: list[SeedRow], ref: Mapping[str, Any], rt: Mapping[str, Any],
                    found: list[Finding], hw: str, torch_version: str | None, date: str) -> dict[str, Any]:
    meta = campaign.preserve.submission
    bpbs, losses = [r.val_bpb for r in rows], [r.val_loss for r in rows]
    sizes = [r.artifact_bytes for r in rows if r.artifact_bytes is not None]
    based_on = meta.based_on or ref.get("name") or ""
    sub: dict[str, Any] = {
        "name": meta.name or campaign.name, "author": meta.author, "github_id": meta.github_id, "date": date,
        "track": meta.track,
        **({"base_pr": meta.base_pr} if meta.base_pr else {}),
        **({"based_on": based_on} if based_on else {}),
        **({"blurb": meta.blurb} if meta.blurb else {}),
        **({"technique_summary": meta.technique_summary} if meta.technique_summary else {}),
        **({"attribution": dict(meta.attribution)} if meta.attribution else {}),
        "val_bpb": round(_mean(bpbs), DIGITS), "val_loss": round(_mean(losses), DIGITS),
        "val_bpb_std": round(_pstd(bpbs), DIGITS), "val_loss_std": round(_pstd(losses), DIGITS),
        "std_convention": STD_CONVENTION,
        "seeds": [r.seed for r in rows],
        "seed_results": seed_results(rows),
        **({"artifact_bytes_max": max(sizes)} if sizes else {}),
        "hardware": hw,
        **({"pytorch_version": torch_version} if torch_version else {}),
        "t_statistic": rt.get("t"), "welch_df": rt.get("df"), "p_value": rt.get("p"),
        "compliance": rules.compliance_block(found),
    }
    if ref.get("val_bpb") is not None:
        sub["comparison_baseline_bpb"] = round(ref["val_bpb"], DIGITS)
        sub["delta_bpb"] = round(_mean(bpbs) - ref["val_bpb"], DIGITS)
    if ref.get("val_loss") is not None:
        sub["delta_nats"] = round(_mean(losses) - ref["val_loss"], DIGITS)
    return sub


# --------------------------------------------------------------------------- README.md


def _results_section(sub: Mapping[str, Any], rows: list[SeedRow]) -> list[str]:
    ttt = any(r.pre_ttt_val_bpb is not None for r in rows)
    head = "| Seed | steps | train time (s) |" + (" pre-TTT val_bpb |" if ttt else "") + \
        " val_loss (nats) | val_bpb | eval time (s) | artifact bytes |"
    lines = [f"## Results ({sub['hardware']}, PyTorch {sub.get('pytorch_version') or '–'})", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        pre = f" {fmt(r.pre_ttt_val_bpb, 8)} |" if ttt else ""
        lines.append(f"| {r.seed} | {fmt(r.steps)} | {fmt(_seconds(r.train_time_ms), 1)} |{pre} {r.val_loss:.8f} | "
                     f"{r.val_bpb:.8f} | {fmt(_seconds(r.eval_time_ms), 1)} | {fmt(r.artifact_bytes)} |")
    lines.append("| **mean** | | |" + (" |" if ttt else "") +
                 f" **{sub['val_loss']:.8f}** | **{sub['val_bpb']:.8f}** | | |")
    lines += ["", f"Std over seeds ({STD_CONVENTION}): val_bpb {sub['val_bpb_std']:.8f}, "
                  f"val_loss {sub['val_loss_std']:.8f}.", ""]
    return lines


def _changes_section(sub: Mapping[str, Any], ref: Mapping[str, Any], rt: Mapping[str, Any],
                     variant_env: Mapping[str, str]) -> list[str]:
    base = sub.get("based_on") or "the reference"
    lines = [f"## What changed against {cell(base)}", ""]
    if sub.get("base_pr"):
        lines += [f"Builds on PR #{sub['base_pr']}.", ""]
    if sub.get("technique_summary"):
        lines += [sub["technique_summary"], ""]
    if variant_env:
        lines += ["The settings that differ from the base run (the promoted variant):", ""]
        lines += [f"- `{k}={REDACTED if is_secret_name(k) else v}`" for k, v in sorted(variant_env.items())] + [""]
    if ref.get("val_bpb") is not None:
        lines += ["| metric | base | this | delta (this − base) |", "|---|---|---|---|",
                  f"| val_bpb | {ref['val_bpb']:.8f} | {sub['val_bpb']:.8f} | {sub['delta_bpb']:+.8f} |"]
        if ref.get("val_loss") is not None:
            lines.append(f"| val_loss (nats) | {ref['val_loss']:.8f} | {sub['val_loss']:.8f} | {sub['delta_nats']:+.8f} |")
        lines.append("")
    lines += [f"Welch t-test (one-sided, per-seed val_loss; improvement over the base ≥ "
              f"{rt.get('margin_nats', 0.005)} nats): t = {fmt(rt.get('t'), 4)}, df = {fmt(rt.get('df'), 2)}, "
              f"p = {fmt(rt.get('p'), 6)}" + (f" ({rt['note']})" if rt.get("note") else "") + ".", ""]
    return lines


def _legality_section(checks: list[tuple[str, bool, str]]) -> list[str]:
    lines = ["## Legality", "", "| rule | met | observed against the limit |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} | {cell(detail)} |" for name, ok, detail in checks]
    return lines + ["", "Checked by `golfrun audit` on the runs' logs (docs/records.md).", ""]


def _credits_section(sub: Mapping[str, Any]) -> list[str]:
    lines = ["## Credits", ""]
    if sub.get("based_on") or sub.get("base_pr"):
        pr = f" (PR #{sub['base_pr']})" if sub.get("base_pr") and f"#{sub['base_pr']}" not in str(sub.get("based_on")) else ""
        lines.append(f"- Base record: {cell(sub.get('based_on') or '')}{pr}")
    lines += [f"- {cell(k)}: {cell(v)}" for k, v in sorted((sub.get("attribution") or {}).items())]
    lines.append(f"- This submission: {sub['author'] or '–'}" + (f" (@{sub['github_id']})" if sub.get("github_id") else ""))
    return lines + [""]


def render_readme(sub: Mapping[str, Any], rows: list[SeedRow], ref: Mapping[str, Any], rt: Mapping[str, Any],
                  checks: list[tuple[str, bool, str]], command: str, campaign_cmd: str, files: list[str],
                  variant_env: Mapping[str, str] | None = None) -> str:
    n = len(rows)
    lines = [f"# Record: {sub['name']} — val_bpb {sub['val_bpb']:.8f} ({n}-seed mean)", "",
             f"**val_bpb {sub['val_bpb']:.8f}** (std {sub['val_bpb_std']:.8f}, {STD_CONVENTION}) · "
             f"**val_loss {sub['val_loss']:.8f} nats** · max artifact {fmt(sub.get('artifact_bytes_max'))} bytes · "
             f"{sub['hardware']}", ""]
    if sub.get("blurb"):
        lines += [sub["blurb"], ""]
    lines += _results_section(sub, rows)
    lines += _changes_section(sub, ref, rt, variant_env or {})
    lines += _legality_section(checks)
    lines += ["## How to reproduce", "", "From inside this folder, with the challenge data in place:", "", "```bash",
              command, "```", "", "With golfrun, the whole campaign (reproduction, gates, ablations, seeds):", "",
              "```bash", campaign_cmd, "```", ""]
    lines += _credits_section(sub)
    lines += ["## Included files", ""] + [f"- `{f}`" for f in files]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the folder


LOG_RULES = {"full_validation": "whole validation split scored", "scored_once": "every target scored once",
             "dump_matches_score": "score recomputed from the dump", "normalised": "distribution normalised"}


def readme_checks(found: list[Finding], rt: Mapping[str, Any]) -> list[tuple[str, bool, str]]:
    """One line per rule for the README and the warnings: met only when every seed shows it met."""
    names = {"artifact_bytes": "artifact ≤ 16,000,000 bytes", "train_time": "train (incl. GPTQ) ≤ 600 s",
             "eval_time": "eval ≤ 600 s", "seeds": f"≥ {MIN_SEEDS} seeds"}
    out = []
    for key, name in names.items():
        mine = [f for f in found if f.check == key]
        ok = bool(mine) and all(f.ok is True for f in mine)
        values = [f.observed for f in mine if f.observed is not None]
        unit = mine[0].unit if mine else ""
        if key == "seeds":
            detail = mine[0].detail if mine else ""
        else:
            worst = max(values) if values else None
            detail = f"max {fmt(worst, 1) if unit == 's' else fmt(worst)}{' s' if unit == 's' else ''}"
            missing = [str(f.seed) for f in mine if f.observed is None]
            if missing:
                detail += f" (not shown for seed {', '.join(missing)})"
        out.append((name, ok, detail))
    for key, name in LOG_RULES.items():  # shown only where the runs' logs or dumps show them
        mine = [f for f in found if f.check == key]
        if mine:
            bad = [f for f in mine if f.ok is not True]
            detail = bad[0].describe() if bad else f"met for {len({f.seed for f in mine})} seed(s)"
            out.append((name, not bad, detail))
    p = rt.get("p")
    out.append((f"record test p < {ALPHA}", isinstance(p, (int, float)) and p < ALPHA, f"p = {fmt(p, 6)}"))
    return out


def _copy_files(campaign: "Campaign", campaign_dir: Path, folder: Path, rows: list[SeedRow], prov: Mapping[str, Any],
                values: list[str], warnings: list[str]) -> list[str]:
    """train_gpt.py byte for byte, each seed's log (redacted) at the top level, requirements.txt."""
    trainer = Path(campaign.trainer)
    if not trainer.is_file():
        raise ProvenanceError(f"trainer {trainer} not found; it is copied into the submission as train_gpt.py")
    shutil.copyfile(trainer, folder / "train_gpt.py")
    files = ["train_gpt.py"]
    for r in rows:
        name_log = f"train_seed{r.seed}.log"
        if r.log is None:
            warnings.append(f"seed {r.seed}: no trainer log found under {campaign_dir}; {name_log} not written")
            continue
        write_text_atomic(folder / name_log, redact_text(r.log.read_text(errors="replace"), values))
        files.append(name_log)
    write_text_atomic(folder / "requirements.txt", requirements(prov))
    return files + ["requirements.txt"]


def _reference(campaign: "Campaign") -> dict[str, Any]:
    ref = campaign.reference
    return {"name": ref.name, "losses": [float(x) for x in ref.val_loss],
            "val_bpb": _mean([float(x) for x in ref.val_bpb]) if ref.val_bpb else None,
            "val_loss": _mean([float(x) for x in ref.val_loss]) if ref.val_loss else None}


def build_package(campaign: "Campaign", campaign_dir: Path, out: Path, *, date: str | None = None,
                  campaign_ref: str = "") -> Package:
    campaign_dir = Path(campaign_dir)
    summaries = read_summaries(campaign_dir)
    rows, source = seed_rows(campaign_dir, summaries)
    meta = campaign.preserve.submission
    prov = _provenance(campaign_dir)
    date = date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    gb = summaries.get("gate-b")
    ref = _reference(campaign)
    rt = welch(gb, [r.val_loss for r in rows], ref["losses"], campaign.gate_b.record_margin_nats)
    versions = rows[0].result.get("versions") or {}
    torch_version = versions.get("torch") or (prov.get("trainer_python") or {}).get("torch")
    audit_notes: list[str] = []
    code = Path(campaign.trainer).stat().st_size if Path(campaign.trainer).is_file() else 0
    found = findings(rows, source, code, campaign_dir, audit_notes)
    checks = readme_checks(found, rt)
    warnings = [f"rule not met: {n} ({d})" for n, ok, d in checks if not ok] + audit_notes
    warnings += [f"preserve.submission.{k} is empty; submission.json needs it" for k in ("author", "github_id")
                 if not getattr(meta, k)]
    sub = submission_json(campaign, rows, ref, rt, found, meta.hardware or hardware(rows, prov), torch_version, date)

    folder = Path(out) / "records" / f"track_{meta.track}" / folder_name(date, sub["name"])
    folder.mkdir(parents=True, exist_ok=True)
    values = secret_values(campaign)
    files = ["README.md", "submission.json", *_copy_files(campaign, campaign_dir, folder, rows, prov, values, warnings)]
    variant_env = dict((gb.decision.get("variant_env") or {}) if gb else {})
    command = reproduce_command(campaign, variant_env, sub["seeds"], int(rows[0].result.get("world_size") or 1))
    campaign_cmd = f"golfrun run-all --campaign {shlex.quote(campaign_ref or campaign.name)}"
    readme = render_readme(sub, rows, ref, rt, checks, command, campaign_cmd, files, variant_env)
    write_text_atomic(folder / "README.md", redact_text(readme, values))
    write_text_atomic(folder / "submission.json", dumps_json(sub))
    return Package(folder, sub, warnings, files)
