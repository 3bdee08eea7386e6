"""Where a preserved bundle goes, and the upload that proves it arrived intact.

Target grammar (`[preserve] targets`, `golfrun upload --to`):

    hf:<owner/repo>[@revision][/path]          Hugging Face model repo (the default repo type)
    hf-dataset:<owner/repo>[@revision][/path]  Hugging Face dataset repo
    rsync:[user@]host[:port]:<path>            rsync over ssh, host keys checked
    sftp:[user@]host[:port]:<path>             SFTP through paramiko, host keys checked
    dir:<path>                                 a folder (relative: in a campaign, to runs/<campaign>/;
                                               for `golfrun upload`, to the working folder)

The repo type is part of the scheme, never guessed: the seed pipeline once uploaded to a dataset
repo where a model repo was meant.

Each scheme is one line of `KINDS` naming the object that parses, uploads and retries it (the
`TargetKind` protocol, golfrun/provenance/upload_base.py): adding a target kind = one module with
such an object + one line here.

A bundle is the folder 05-preserve holds: the tarball, a README.md and SHA256SUMS listing both.
Every upload writes those three files and then reads each back from the target (Hub metadata and
a fresh download, rsync back into a temp folder, an SFTP read, a re-read of the copied file) and
hashes it against SHA256SUMS. Uploads are idempotent: a retry rewrites the same names with the
same bytes (the Hub skips unchanged files), so "run it again" is always a safe answer.
"""

from __future__ import annotations

import importlib
import os
import shlex
from pathlib import Path

from golfrun.errors import ProvenanceError
from golfrun.provenance.upload_base import (  # noqa: F401  (re-exported: preserve, cli, tests)
    Bundle,
    Target,
    TargetKind,
    UploadOptions,
    UploadResult,
    check_verified,
)

# scheme → "module:object" (a TargetKind); imported when a target of that scheme is used
KINDS: dict[str, str] = {
    "hf": "golfrun.provenance.hub:HF_MODEL",  # Hugging Face model repo (the default repo type)
    "hf-model": "golfrun.provenance.hub:HF_MODEL",
    "hf-dataset": "golfrun.provenance.hub:HF_DATASET",  # Hugging Face dataset repo
    "rsync": "golfrun.provenance.remote:RSYNC",  # rsync over ssh
    "sftp": "golfrun.provenance.remote:SFTP",  # SFTP through paramiko
    "dir": "golfrun.provenance.target_dir:DIR",  # a folder
}


def kind(scheme: str) -> TargetKind:
    module_name, _, attr = KINDS[scheme].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def target_forms() -> list[str]:
    return [kind(scheme).form for scheme in KINDS if scheme != "hf-model"]


def parse_target(spec: str) -> Target:
    scheme, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ProvenanceError(f"preserve target {spec!r}: expected one of {', '.join(target_forms())}")
    if scheme not in KINDS:
        raise ProvenanceError(f"preserve target {spec!r}: unknown scheme {scheme!r}; expected one of "
                              f"{', '.join(target_forms())}")
    return kind(scheme).parse(spec, scheme, rest)


def retry_command(tarball: Path | str, target: Target, options: UploadOptions) -> str:
    argv = ["golfrun", "upload", str(tarball), "--to", target.spec]
    return shlex.join(argv + kind(target.kind).retry_args(target, options))


def upload(bundle: Bundle, target: Target, options: UploadOptions = UploadOptions(), tarball_name: str = "") -> UploadResult:
    """Upload and verify; never raises for a failed target (the result says what failed and how to
    retry), so one bad target does not stop the others."""
    tarball = bundle.folder / (tarball_name or next(n for n in bundle.names if n.endswith(".tar.gz")))
    result = UploadResult(target.spec, ok=False, retry=retry_command(tarball, target, options))
    try:
        kind(target.kind).upload(bundle, target, options, result)
        check_verified(bundle, result)
        result.ok = True
    except Exception as exc:  # noqa: BLE001 - any failure of one target is reported, not raised
        from golfrun.secrets import redact_text, secret_values_from_env

        result.error = redact_text(f"{type(exc).__name__}: {exc}" if not isinstance(exc, ProvenanceError) else str(exc),
                                   secret_values_from_env(os.environ))
    return result
