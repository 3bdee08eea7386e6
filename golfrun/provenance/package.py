"""`golfrun package`: the competition submission folder of a campaign.

    <out>/records/track_<track>/<YYYY-MM-DD>_<Name>/
        README.md          per-seed table, mean and std, deltas and Welch statistics against the
                           reference, rule checks, hardware, the command to reproduce
        submission.json    the modern core fields (shared/reference/submission-format.md §2)
        train_seed<N>.log  each seed's trainer log (top level: the competition's .gitignore
                           ignores logs/ at any depth)
        train_gpt.py       the campaign's trainer, byte for byte
        requirements.txt   the trainer's third-party imports, pinned to the versions that ran

Numbers come from the summaries only: gate-b's `decision.per_seed` (or gate-a's single result
when gate-b never ran), the reference from the campaign. val_bpb and val_loss are arithmetic means
over seeds and val_bpb_std the population std (ddof 0), as the records use, rounded to 8 decimals;
an eval-only seed's training figures are gate-a's run of that seed (its checkpoint). Welch statistics are
gate-b's record test (one-sided, per-seed val_loss); computed here with scipy only when gate-b
holds none. Rules not met are warnings (returned, printed by the CLI and listed in the README), not
errors: the folder is still written so a person can look at it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shlex
import shutil
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golfrun.errors import ProvenanceError, SummaryError
from golfrun.provenance.provenance import secret_values
from golfrun.provenance.render import cell, fmt
from golfrun.secrets import REDACTED, is_secret_name, redact_text
from golfrun.summary import STAGE_DIRS, STAGES, Summary

ARTIFACT_CAP_BYTES = 16_000_000
TIME_CAP_MS = 600_000.0
ALPHA = 0.01
MIN_SEEDS = 3
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
    """(job folder, results.json) of every finished job, latest stage first."""
    found = []
    for stage in ("gate-b", "ablation", "gate-a"):
        for res in sorted((campaign_dir / STAGE_DIRS[stage] / "jobs").glob("*/results.json")):
            try:
                found.append((res.parent, json.loads(res.read_text())))
            except (OSError, json.JSONDecodeError):
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
                            train_ms, r.get("artifact_bytes"), steps, log, res))
    if not rows:
        raise ProvenanceError(f"{campaign_dir}: no seed has a final score in gate-b or gate-a; nothing to package "
                              "(run the campaign first: golfrun run-all)")
    return rows, source


def welch(gb: Summary | None, losses: list[float], ref_losses: list[float], margin: float) -> dict[str, Any]:
    rt = dict((gb.decision.get("record_test") or {}) if gb is not None else {})
    if rt.get("p") is not None:
        return rt
    out: dict[str, Any] = {"margin_nats": margin, "alpha": ALPHA, "source": "golfrun package (scipy)"}
    if len(losses) < 2 or len(ref_losses) < 2:
        return {**out, "t": None, "df": None, "p": None, "passed": False,
                "note": "a Welch test needs at least 2 seeds on each side"}
    from scipy import stats

    va, vb = statistics.variance(losses), statistics.variance(ref_losses)  # sample variances (Welch)
    se2 = va / len(losses) + vb / len(ref_losses)
    improvement = _mean(ref_losses) - _mean(losses)
    if se2 == 0:
        t = math.inf if improvement > margin else -math.inf
        return {**out, "t": t, "df": None, "p": 0.0 if t > 0 else 1.0, "passed": t > 0}
    t = (improvement - margin) / math.sqrt(se2)
    df = se2**2 / ((va / len(losses)) ** 2 / (len(losses) - 1) + (vb / len(ref_losses)) ** 2 / (len(ref_losses) - 1))
    p = float(stats.t.sf(t, df))
    return {**out, "t": t, "df": df, "p": p, "passed": p < ALPHA}


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


def _env_for_command(campaign: Any, variant_env: Mapping[str, str]) -> dict[str, str]:
    env = {**dict(getattr(campaign, "trainer_env", {}) or {}), **dict(variant_env)}
    return {k: (REDACTED if is_secret_name(k) else str(v)) for k, v in env.items()}


def reproduce_command(campaign: Any, variant_env: Mapping[str, str], seeds: list[int], nproc: int) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(_env_for_command(campaign, variant_env).items()))
    seed_list = " ".join(str(s) for s in seeds)
    launcher = f"torchrun --standalone --nproc_per_node={nproc} train_gpt.py" if nproc > 1 else "python train_gpt.py"
    return (f"for seed in {seed_list}; do\n  SEED=$seed RUN_ID=train_seed$seed {env} \\\n"
            f"    {launcher} > train_seed$seed.log 2>&1\ndone")


def render_readme(sub: Mapping[str, Any], rows: list[SeedRow], ref: Mapping[str, Any], rt: Mapping[str, Any],
                  checks: list[tuple[str, bool, str]], command: str, campaign_cmd: str, files: list[str]) -> str:
    n = len(rows)
    lines = [
        f"# {sub['name']} — val_bpb {sub['val_bpb']:.8f} ({n}-seed mean)",
        "",
        f"**val_bpb {sub['val_bpb']:.8f}** (std {sub['val_bpb_std']:.8f}, population) · "
        f"**val_loss {sub['val_loss']:.8f} nats** · {sub['hardware']} · PyTorch {sub.get('pytorch_version') or '–'}",
        "",
    ]
    if sub.get("blurb"):
        lines += [sub["blurb"], ""]
    if sub.get("base_pr"):
        lines += [f"Builds on PR #{sub['base_pr']}.", ""]
    lines += ["## Results", "",
              "| Seed | val_loss (nats) | val_bpb | eval time (s) | train time (s) | artifact bytes |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        ev = r.eval_time_ms / 1000 if r.eval_time_ms is not None else None
        tr = r.train_time_ms / 1000 if r.train_time_ms is not None else None
        lines.append(f"| {r.seed} | {r.val_loss:.8f} | {r.val_bpb:.8f} | {fmt(ev, 1)} | {fmt(tr, 1)} | {fmt(r.artifact_bytes)} |")
    lines.append(f"| **mean** | **{sub['val_loss']:.8f}** | **{sub['val_bpb']:.8f}** | | | |")
    lines += ["", f"Std over seeds (population, ddof 0): val_bpb {sub['val_bpb_std']:.8f}, "
                  f"val_loss {sub['val_loss_std']:.8f}.", ""]
    if ref.get("val_bpb") is not None:
        lines += [f"### Against the reference ({cell(ref.get('name') or 'reference')})", "",
                  "| metric | reference | this | delta (this − reference) |", "|---|---|---|---|",
                  f"| val_bpb | {ref['val_bpb']:.8f} | {sub['val_bpb']:.8f} | {sub['delta_bpb']:+.8f} |"]
        if ref.get("val_loss") is not None:
            lines.append(f"| val_loss (nats) | {ref['val_loss']:.8f} | {sub['val_loss']:.8f} | {sub['delta_nats']:+.8f} |")
        lines.append("")
    lines += [f"Welch t-test (one-sided, per-seed val_loss; improvement over the reference ≥ "
              f"{rt.get('margin_nats', 0.005)} nats): t = {fmt(rt.get('t'), 4)}, df = {fmt(rt.get('df'), 2)}, "
              f"p = {fmt(rt.get('p'), 6)}" + (f" ({rt['note']})" if rt.get("note") else "") + ".", "",
              "## Rule checks", "", "| check | met | detail |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} | {cell(detail)} |" for name, ok, detail in checks]
    lines += ["", "## Run", "", "From inside this folder, with the challenge data in place:", "", "```bash",
              command, "```", "", "With golfrun, the whole campaign (reproduction, gates, ablations, seeds):", "",
              "```bash", campaign_cmd, "```", "", "## Included files", ""]
    lines += [f"- `{f}`" for f in files]
    return "\n".join(lines) + "\n"


def build_package(campaign: Any, campaign_dir: Path, out: Path, *, date: str | None = None,
                  campaign_ref: str = "") -> Package:
    campaign_dir = Path(campaign_dir)
    summaries = read_summaries(campaign_dir)
    rows, source = seed_rows(campaign_dir, summaries)
    meta = campaign.preserve.submission
    prov = _provenance(campaign_dir)
    values = secret_values(campaign)
    date = date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    name = meta.name or campaign.name
    track = meta.track
    gb = summaries.get("gate-b")

    bpbs, losses = [r.val_bpb for r in rows], [r.val_loss for r in rows]
    ref_c = campaign.reference
    ref_bpb = _mean([float(x) for x in ref_c.val_bpb]) if ref_c.val_bpb else None
    ref_loss = _mean([float(x) for x in ref_c.val_loss]) if ref_c.val_loss else None
    margin = float(getattr(campaign.gate_b, "record_margin_nats", 0.005))
    rt = welch(gb, losses, [float(x) for x in ref_c.val_loss], margin)
    versions = rows[0].result.get("versions") or {}
    torch_version = versions.get("torch") or (prov.get("trainer_python") or {}).get("torch")

    artifact_ok = all(r.artifact_bytes is not None and r.artifact_bytes <= ARTIFACT_CAP_BYTES for r in rows)
    trained = [r for r in rows if r.train_time_ms is not None]
    train_ok = all(r.train_time_ms <= TIME_CAP_MS for r in trained)  # type: ignore[operator]
    eval_ok = all(r.eval_time_ms is not None and r.eval_time_ms <= TIME_CAP_MS for r in rows)
    p = rt.get("p")
    checks = [
        ("artifact ≤ 16,000,000 bytes", artifact_ok,
         "max " + fmt(max((r.artifact_bytes or 0) for r in rows)) + (" (a seed reported no size)" if any(r.artifact_bytes is None for r in rows) else "")),
        ("train ≤ 600 s", train_ok, "max " + fmt(max((r.train_time_ms or 0) / 1000 for r in rows), 1) + " s"),
        ("eval ≤ 600 s", eval_ok, "max " + fmt(max((r.eval_time_ms or 0) / 1000 for r in rows), 1) + " s"),
        (f"≥ {MIN_SEEDS} seeds", len(rows) >= MIN_SEEDS, f"{len(rows)} seed(s) from {source}"),
        (f"record test p < {ALPHA}", isinstance(p, (int, float)) and p < ALPHA, f"p = {fmt(p, 6)}"),
    ]
    warnings = [f"rule not met: {n} ({d})" for n, ok, d in checks if not ok]
    warnings += [f"preserve.submission.{k} is empty; submission.json needs it" for k in ("author", "github_id")
                 if not getattr(meta, k)]

    sub: dict[str, Any] = {
        "name": name,
        "author": meta.author,
        "github_id": meta.github_id,
        "date": date,
        "track": track,
        **({"base_pr": meta.base_pr} if meta.base_pr else {}),
        **({"blurb": meta.blurb} if meta.blurb else {}),
        "val_bpb": round(_mean(bpbs), DIGITS),
        "val_loss": round(_mean(losses), DIGITS),
        "val_bpb_std": round(_pstd(bpbs), DIGITS),
        "val_loss_std": round(_pstd(losses), DIGITS),
        "seeds": [r.seed for r in rows],
        "seed_results": {
            str(r.seed): {k: v for k, v in {
                "val_bpb": r.val_bpb, "val_loss": r.val_loss, "artifact_bytes": r.artifact_bytes,
                "steps": r.steps, "train_time_s": None if r.train_time_ms is None else r.train_time_ms / 1000,
                "eval_time_ms": r.eval_time_ms}.items() if v is not None}
            for r in rows
        },
        "artifact_bytes_max": max((r.artifact_bytes or 0) for r in rows) or None,
        "hardware": meta.hardware or hardware(rows, prov),
        "pytorch_version": torch_version,
        "t_statistic": rt.get("t"),
        "welch_df": rt.get("df"),
        "p_value": p,
        "compliance": {
            "train_under_600s": train_ok,
            "artifact_under_16mb": artifact_ok,
            "eval_under_600s": eval_ok,
            "three_seeds": len(rows) >= MIN_SEEDS,
        },
    }
    if ref_bpb is not None:
        sub["comparison_baseline_bpb"] = round(ref_bpb, DIGITS)
        sub["delta_bpb"] = round(_mean(bpbs) - ref_bpb, DIGITS)
    if ref_loss is not None:
        sub["delta_nats"] = round(_mean(losses) - ref_loss, DIGITS)

    folder = Path(out) / "records" / f"track_{track}" / folder_name(date, name)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    trainer = Path(getattr(campaign, "trainer", "train_gpt.py"))
    if not trainer.is_file():
        raise ProvenanceError(f"trainer {trainer} not found; it is copied into the submission as train_gpt.py")
    shutil.copyfile(trainer, folder / "train_gpt.py")
    files.append("train_gpt.py")
    for r in rows:
        name_log = f"train_seed{r.seed}.log"
        if r.log is None:
            warnings.append(f"seed {r.seed}: no trainer log found under {campaign_dir}; {name_log} not written")
            continue
        (folder / name_log).write_text(redact_text(r.log.read_text(errors="replace"), values))
        files.append(name_log)
    (folder / "requirements.txt").write_text(requirements(prov))
    files.append("requirements.txt")
    variant_env = dict((gb.decision.get("variant_env") or {}) if gb else {})
    nproc = int(rows[0].result.get("world_size") or 1)
    command = reproduce_command(campaign, variant_env, sub["seeds"], nproc)
    campaign_cmd = f"golfrun run-all --campaign {shlex.quote(campaign_ref or campaign.name)}"
    files = ["README.md", "submission.json", *files]
    ref = {"name": ref_c.name, "val_bpb": ref_bpb, "val_loss": ref_loss}
    (folder / "README.md").write_text(redact_text(render_readme(sub, rows, ref, rt, checks, command, campaign_cmd, files), values))
    (folder / "submission.json").write_text(json.dumps(sub, indent=2) + "\n")
    return Package(folder, sub, warnings, files)
