"""Fixtures of the preservation tests.

`hf_hub`: the loopback Hub of tests/fixtures/hf_hub_server.py (the real Hub is unreachable from
these machines), with the real huggingface_hub client pointed at it: HF_ENDPOINT and a dummy
HF_TOKEN in the environment (golfrun reads both at call time), Xet switched off (the fixture does
not speak the Xet protocol) and an empty HF cache per test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from golfrun.provenance.targets import Bundle
from tests.fixtures.hub_fixtures import DUMMY_HF_TOKEN  # noqa: F401  (the tests import it from here)


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    """A small real bundle: a tarball with an LFS-sized member, README.md and SHA256SUMS."""
    from golfrun.provenance.tarball import (
        Member,
        build_tarball,
        render_sums,
        sha256_file,
    )

    folder = tmp_path / "05-preserve"
    folder.mkdir()
    members = [Member("02-gate-a/summary.json", data=b'{"verdict": "PASS"}\n'),
               Member("02-gate-a/checkpoint/final_model.int6.ptz", data=bytes(range(256)) * 64)]
    info = build_tarball(folder / "camp-preserve.tar.gz", "camp-preserve", members)
    (folder / "README.md").write_text("---\nlibrary_name: golfrun\n---\n# camp\n")
    (folder / "SHA256SUMS").write_text(render_sums({info.path.name: info.sha256,
                                                    "README.md": sha256_file(folder / "README.md")}))
    return Bundle.from_tarball(info.path)
