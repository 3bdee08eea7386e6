"""`dir:<path>`: a folder (relative: in a campaign, to runs/<campaign>/; for `golfrun upload`, to
the working folder). Each file is copied atomically (golfrun/fileio.py), then re-read."""

from __future__ import annotations

from pathlib import Path

from golfrun.errors import ProvenanceError
from golfrun.fileio import copy_file_atomic
from golfrun.provenance.upload_base import Bundle, Target, UploadOptions, UploadResult
from golfrun.provenance.tarball import sha256_file


class DirTarget:
    form = "dir:<path>"

    def parse(self, spec: str, scheme: str, rest: str) -> Target:
        return Target("dir", spec, rest)

    def upload(self, bundle: Bundle, target: Target, options: UploadOptions, result: UploadResult) -> None:
        dest = Path(target.path).expanduser()
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for name in bundle.names:
                copy_file_atomic(bundle.folder / name, dest / name)
        except OSError as exc:
            raise ProvenanceError(f"{target.spec}: cannot copy into {dest}: {exc}") from exc
        for name in bundle.names:
            result.verified[name] = sha256_file(dest / name)
        result.location = str(dest.resolve())

    def retry_args(self, target: Target, options: UploadOptions) -> list[str]:
        return []


DIR = DirTarget()
