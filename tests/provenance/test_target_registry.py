"""The "add an upload target" recipe of docs/architecture.md, walked: a kind defined here (one
object with parse, upload and retry_args) and one line in `targets.KINDS` make `mem:<name>` a
target that preserve's `upload` drives, verification included."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from golfrun.fileio import sha256_bytes
from golfrun.provenance import targets
from golfrun.provenance.targets import Bundle, Target, UploadOptions, UploadResult, parse_target, upload

STORES: dict[str, dict[str, bytes]] = {}


class MemTarget:
    """Keeps the bundle's bytes in a dict; `corrupt` flips one byte of what it reads back."""

    form = "mem:<name>"

    def __init__(self, corrupt: bool = False) -> None:
        self.corrupt = corrupt

    def parse(self, spec: str, scheme: str, rest: str) -> Target:
        return Target(scheme, spec, rest)

    def upload(self, bundle: Bundle, target: Target, options: UploadOptions, result: UploadResult) -> None:
        store = STORES.setdefault(target.path, {})
        for name in bundle.names:
            store[name] = (bundle.folder / name).read_bytes()
        for name, data in store.items():
            if self.corrupt:
                data = bytes([data[0] ^ 1]) + data[1:]
            result.verified[name] = sha256_bytes(data)
        result.location = f"memory:{target.path}"

    def retry_args(self, target: Target, options: UploadOptions) -> list[str]:
        return ["--note", "mem"]


MEM = MemTarget()
BAD_MEM = MemTarget(corrupt=True)


@pytest.fixture
def mem_kinds() -> Iterator[None]:
    targets.KINDS["mem"] = f"{__name__}:MEM"  # the recipe's one registry line
    targets.KINDS["badmem"] = f"{__name__}:BAD_MEM"
    yield
    targets.KINDS.pop("mem")
    targets.KINDS.pop("badmem")
    STORES.clear()


def test_a_registered_kind_is_parsed_uploaded_and_verified(bundle: Bundle, mem_kinds: None) -> None:
    assert sys.modules[__name__].MEM is MEM
    target = parse_target("mem:keep")
    assert (target.kind, target.path) == ("mem", "keep")
    result = upload(bundle, target)
    assert result.ok, result.error
    assert set(STORES["keep"]) == set(bundle.names)
    assert result.verified == bundle.sums
    assert result.retry.endswith("--to mem:keep --note mem")


def test_a_kind_whose_read_back_differs_fails_verification(bundle: Bundle, mem_kinds: None) -> None:
    result = upload(bundle, parse_target("badmem:keep"))
    assert not result.ok
    assert "verification failed" in result.error


def test_an_unknown_scheme_lists_the_registered_forms(mem_kinds: None) -> None:
    from golfrun.errors import ProvenanceError

    with pytest.raises(ProvenanceError, match=r"unknown scheme 's3'.*hf:<owner/repo>.*dir:<path>.*mem:<name>"):
        parse_target("s3:bucket")
