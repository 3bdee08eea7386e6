"""Fingerprints are stable (key order, spelling) and sensitive (any value)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from golfrun.campaign import file_sha256, fingerprint, load_campaign
from golfrun.errors import CampaignError


def test_known_value() -> None:
    # sha256 of the canonical JSON '{"a":1,"b":"x"}', written out by hand.
    assert fingerprint({"b": "x", "a": 1}) == hashlib.sha256(b'{"a":1,"b":"x"}').hexdigest()


def test_stable_under_key_order_and_reload() -> None:
    a = load_campaign("pr1610").section("gate_a")
    b = load_campaign("pr1610").section("gate_a")
    reordered = dict(reversed(list(a.items())))
    assert fingerprint({"section": a, "trainer": "abc"}) == fingerprint({"trainer": "abc", "section": reordered})
    assert fingerprint({"section": a}) == fingerprint({"section": b})


def test_sensitive_to_any_value() -> None:
    base = load_campaign("pr1610")
    changed = load_campaign("pr1610", ["gate_a.bpb_tolerance=0.0031"])
    assert fingerprint({"s": base.section("gate_a")}) != fingerprint({"s": changed.section("gate_a")})
    # …but not to other sections.
    assert fingerprint({"s": base.section("gate_b")}) == fingerprint({"s": changed.section("gate_b")})
    assert fingerprint({"x": 1}) != fingerprint({"x": 1.5})
    assert fingerprint({"x": "1"}) != fingerprint({"x": 1})
    assert fingerprint({"x": [1, 2]}) != fingerprint({"x": [2, 1]})


def test_unfingerprintable() -> None:
    with pytest.raises(CampaignError, match="cannot fingerprint"):
        fingerprint({"x": object()})
    with pytest.raises(CampaignError):
        fingerprint({"x": float("nan")})


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    assert file_sha256(path, chunk_bytes=7) == hashlib.sha256(data).hexdigest()
