"""Assemble the preserve bundle of a campaign in its 05-preserve folder.

    05-preserve/provenance.json
    05-preserve/report/                      the campaign report (golfrun/report/), archived too
    05-preserve/<campaign>-preserve.tar.gz   top folder <campaign>-preserve/:
        campaign.resolved.toml, slurm.json, pod.json (when present),
        00-verify-pod/ … 04-gate-b/ (every file: summaries, job.json, logs, results.json, sbatch
        scripts; *.pt/*.ptz/*.pth/*.safetensors only with [preserve] include_checkpoints),
        05-preserve/provenance.json, 05-preserve/report/ (report.html, report.json, PNGs),
        SHA256SUMS (every other member)
    05-preserve/README.md                    the model card (results table, provenance, how to verify)
    05-preserve/SHA256SUMS                   the tarball and README.md: what targets receive

Never archived: the dataset (runs/<campaign>/data), the lock, temp files (*.partial), symlinks,
and anything outside the stage folders (so a `dir:` target inside runs/<campaign>/ is not
swallowed by the next tarball). Text members pass through the secret scrubber on the way in:
the literal values of the environment's and the campaign's secret-named variables, and private-key
blocks, are replaced (golfrun/secrets.py). Binary members (checkpoints too) are scanned for the
same: one that holds a secret is left out and named in `BuiltBundle.withheld`, which the preserve
stage reports as a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golfrun.provenance.provenance import write_provenance
from golfrun.provenance.render import model_card
from golfrun.provenance.tarball import SUMS_NAME, Member, TarballInfo, build_tarball, render_sums, sha256_file
from golfrun.secrets import redact_text, secrets_in_bytes
from golfrun.summary import STAGE_DIRS, Summary

CHECKPOINT_SUFFIXES = (".pt", ".ptz", ".pth", ".safetensors")
SKIP_SUFFIXES = (".partial", ".tmp", ".lock")
PROVENANCE_FILE = "provenance.json"
README_FILE = "README.md"


def tarball_name(campaign: str) -> str:
    return f"{campaign}-preserve.tar.gz"


class Withheld(list):  # type: ignore[type-arg]
    """Members left out of the tarball, as "name: why" lines (a binary that holds a secret)."""


def _text_member(name: str, path: Path, values: list[str], withheld: Withheld | None = None) -> Member | None:
    """Text is archived as written, except literal secret values and private-key blocks, which are
    replaced. (No redaction by key name here: it would also hit innocent keys such as a job's cache
    `key`, and change evidence that holds no secret.) A binary that holds a secret cannot be
    redacted without corrupting it (a checkpoint's zip checksums, say), so it is left out and
    listed in `withheld`; any other binary is kept byte for byte."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        found = secrets_in_bytes(data, values)
        if found:
            if withheld is not None:
                withheld.append(f"{name}: a binary file holding {found[0]}; left out of the tarball")
            return None
        return Member(name, source=path)
    clean = redact_text(text, values)
    return Member(name, data=clean.encode("utf-8")) if clean != text else Member(name, source=path)


def campaign_members(campaign_dir: Path, include_checkpoints: bool, values: list[str],
                     withheld: Withheld | None = None) -> list[Member]:
    members: list[Member | None] = []
    for top in ("campaign.resolved.toml", "slurm.json", "pod.json"):
        p = campaign_dir / top
        if p.is_file() and not p.is_symlink():
            members.append(_text_member(top, p, values, withheld))
    for stage, folder in STAGE_DIRS.items():
        root = campaign_dir / folder
        if stage == "preserve" or not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if p.is_symlink() or not p.is_file() or p.name.endswith(SKIP_SUFFIXES) or p.name.startswith(".lock"):
                continue
            name = p.relative_to(campaign_dir).as_posix()
            if p.suffix in CHECKPOINT_SUFFIXES and not include_checkpoints:
                continue
            members.append(_text_member(name, p, values, withheld))
    return [m for m in members if m is not None]


@dataclass
class BuiltBundle:
    folder: Path
    tarball: TarballInfo
    provenance: Path
    readme: Path
    sums: Path
    withheld: list[str]


def build_bundle(
    campaign_name: str,
    campaign_dir: Path,
    stage_dir: Path,
    summaries: Mapping[str, Summary],
    provenance: dict[str, Any],
    *,
    include_checkpoints: bool,
    secret_values: list[str],
    extra_files: Sequence[Path] = (),
) -> BuiltBundle:
    """`extra_files`: files of the stage folder to archive too (the report: 05-preserve/report/…)."""
    prov_path = write_provenance(stage_dir / PROVENANCE_FILE, provenance)
    withheld = Withheld()
    members = campaign_members(campaign_dir, include_checkpoints, secret_values, withheld)
    members.append(Member(f"{STAGE_DIRS['preserve']}/{PROVENANCE_FILE}", source=prov_path))
    for path in extra_files:
        member = _text_member(f"{STAGE_DIRS['preserve']}/{path.relative_to(stage_dir).as_posix()}", path,
                              secret_values, withheld)
        if member is not None:
            members.append(member)
    root = f"{campaign_name}-preserve"
    info = build_tarball(stage_dir / tarball_name(campaign_name), root, members)
    readme = stage_dir / README_FILE
    readme.write_text(redact_text(model_card(campaign_name, summaries, info.path.name, info.sha256, provenance),
                                  secret_values))
    sums = stage_dir / SUMS_NAME
    sums.write_text(render_sums({info.path.name: info.sha256, README_FILE: sha256_file(readme)}))
    return BuiltBundle(stage_dir, info, prov_path, readme, sums, list(withheld))
