"""Fingerprints: what decides whether a stage's summary still stands for its inputs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from golfrun.errors import CampaignError
from golfrun.fileio import sha256_file, sha256_text


def canonical_json(data: Any) -> str:
    """One spelling for equal data: sorted keys, no spaces, UTF-8, paths as strings."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_plain)


def _plain(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot fingerprint a {type(obj).__name__}")


def fingerprint(parts: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of `parts`, e.g. {"section": campaign.section("gate_a"),
    "trainer": sha256, "upstream.gate-a": fp}. Order of keys does not matter; any value does."""
    try:
        text = canonical_json(dict(parts))
    except (TypeError, ValueError) as exc:
        raise CampaignError(f"cannot fingerprint {sorted(parts)}: {exc}") from exc
    return sha256_text(text)


def file_sha256(path: Path | str, chunk_bytes: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    return sha256_file(path, chunk_bytes)
