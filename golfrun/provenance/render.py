"""Pure renderings of a campaign's summaries: the results table, the Hub model card.

No I/O: summaries in, text out, so the output is tested as text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from golfrun.summary import STAGES, Summary


def fmt(x: Any, digits: int = 8) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def verdict_table(summaries: Mapping[str, Summary]) -> str:
    lines = ["| stage | verdict | why |", "|---|---|---|"]
    for name in STAGES:
        s = summaries.get(name)
        if s is not None:
            why = s.reasons[0].splitlines()[0] if s.reasons else ""
            lines.append(f"| {name} | {s.verdict.value} | {cell(why)} |")
    return "\n".join(lines)


def result_rows(summaries: Mapping[str, Summary]) -> list[dict[str, Any]]:
    """One row per job with a final score, in stage order."""
    rows = []
    for name in STAGES:
        s = summaries.get(name)
        if s is None:
            continue
        for j in s.jobs:
            res = j.result or {}
            final = res.get("final") or {}
            if final.get("val_bpb") is None:
                continue
            art = res.get("artifact") or {}
            rows.append({
                "stage": name, "job": j.name, "seed": res.get("seed"), "mode": res.get("mode"),
                "val_loss": final.get("val_loss"), "val_bpb": final.get("val_bpb"),
                "eval_time_ms": final.get("eval_time_ms"), "train_time_ms": res.get("train_time_ms"),
                "artifact_bytes": art.get("total_bytes"),
            })
    return rows


def results_table(summaries: Mapping[str, Summary]) -> str:
    rows = result_rows(summaries)
    if not rows:
        return "_No trainer job produced a final score._"
    lines = ["| stage | job | seed | mode | val_loss (nats) | val_bpb | artifact bytes | eval time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ev = r["eval_time_ms"] / 1000.0 if isinstance(r["eval_time_ms"], (int, float)) else None
        lines.append(f"| {r['stage']} | {cell(r['job'])} | {r['seed'] if r['seed'] is not None else '–'} | {fmt(r['mode'])} | {fmt(r['val_loss'])} "
                     f"| {fmt(r['val_bpb'])} | {fmt(r['artifact_bytes'])} | {fmt(ev, 1)} |")
    return "\n".join(lines)


def gate_b_lines(summaries: Mapping[str, Summary]) -> list[str]:
    gb = summaries.get("gate-b")
    if gb is None or not gb.decision.get("per_seed"):
        return []
    d = gb.decision
    out = [f"Gate B variant: **{d.get('variant', '?')}**, seeds {d.get('seeds')}."]
    bpb, loss = d.get("val_bpb") or {}, d.get("val_loss") or {}
    if bpb.get("mean") is not None:
        out.append(f"Mean val_bpb {fmt(bpb.get('mean'))}, mean val_loss {fmt(loss.get('mean'))} nats.")
    rt = d.get("record_test") or {}
    if rt:
        out.append(f"Record test (one-sided Welch on val_loss, margin {rt.get('margin_nats')} nats, alpha {rt.get('alpha')}): "
                   f"t={fmt(rt.get('t'), 4)}, df={fmt(rt.get('df'), 2)}, p={fmt(rt.get('p'), 6)}, "
                   f"{'passed' if rt.get('passed') else 'not passed'}.")
    return out


def model_card(campaign: str, summaries: Mapping[str, Summary], tarball: str, tarball_sha256: str,
               provenance: Mapping[str, Any] | None = None) -> str:
    """README.md for a Hub repo (or any target): front matter, verdicts, results, how to verify."""
    prov = provenance or {}
    git = next((g for g in prov.get("git", []) if g.get("commit")), {})
    tp = prov.get("trainer_python") or {}
    gpus = (prov.get("nvidia_smi") or {}).get("gpus") or []
    hw = f"{len(gpus)}× {gpus[0]['name']}" if gpus else (prov.get("host") or {}).get("cpu_model") or "unknown"
    parts = [
        "---",
        "library_name: golfrun",
        "tags:",
        "- parameter-golf",
        "- golfrun",
        "---",
        "",
        f"# {campaign}: a golfrun campaign",
        "",
        "The evidence of a [Parameter Golf](https://github.com/openai/parameter-golf) campaign run with golfrun: "
        "every stage summary, trainer log and result, the checkpoints where kept, and provenance.json "
        "(code, configuration, software, hardware). Secrets were redacted before anything was written.",
        "",
        "## Verdicts",
        "",
        verdict_table(summaries),
        "",
        "## Results",
        "",
        results_table(summaries),
        "",
        "\n\n".join(gate_b_lines(summaries)),
        "",
        "## Provenance",
        "",
        f"- trainer sha256: `{(prov.get('trainer') or {}).get('sha256', '–')}`",
        f"- git commit: `{git.get('commit', '–')}`{' (with uncommitted changes, diff sha256 `' + git['diff_sha256'] + '`)' if git.get('dirty') else ''}",
        f"- torch {tp.get('torch', '–')}, CUDA {tp.get('cuda') or '–'}, NCCL {tp.get('nccl') or '–'}",
        f"- hardware: {hw}",
        "",
        "## Files",
        "",
        f"- `{tarball}` (sha256 `{tarball_sha256}`): the campaign folder; its own `SHA256SUMS` covers every member.",
        "- `SHA256SUMS`: the sha256 of the tarball and of this README.",
        "",
        "Verify: `sha256sum -c SHA256SUMS`, then `golfrun verify-tarball " + tarball + "` "
        "(or extract it and run `sha256sum -c SHA256SUMS` inside its top folder).",
        "",
    ]
    return "\n".join(parts)
