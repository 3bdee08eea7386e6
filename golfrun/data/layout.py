"""The competition's data layout (submission-format §4):

    <data_dir>/manifest.json
    <data_dir>/datasets/fineweb10B_<variant>/fineweb_{train,val}_%06d.bin
    <data_dir>/tokenizers/fineweb_<V>_bpe.model (+ .vocab)      (byte260: fineweb_pure_byte_260.json)

and the mapping from a path inside the Hugging Face dataset repo to a local path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

from golfrun.errors import DataError

MANIFEST_NAME = "manifest.json"
DEFAULT_REMOTE_PREFIX = "datasets"
BOS_ID = 1

_SP_VARIANT = re.compile(r"^sp(\d+)$")


def dataset_dir_name(variant: str) -> str:
    """`sp<V>` → `fineweb10B_sp<V>`, `byte260` → `fineweb10B_byte260`; anything else is a DataError."""
    if variant == "byte260" or _SP_VARIANT.match(variant):
        return f"fineweb10B_{variant}"
    raise DataError(f"unknown data variant {variant!r}: expected 'sp<digits>' (e.g. 'sp8192') or 'byte260'")


def variant_vocab_size(variant: str) -> int:
    """The vocabulary size a variant implies (`sp8192` → 8192, `byte260` → 260)."""
    dataset_dir_name(variant)
    if variant == "byte260":
        return 260
    return int(variant[2:])


def dataset_dir(data_dir: Path | str, variant: str) -> Path:
    return Path(data_dir) / "datasets" / dataset_dir_name(variant)


def tokenizers_dir(data_dir: Path | str) -> Path:
    return Path(data_dir) / "tokenizers"


def manifest_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / MANIFEST_NAME


def shard_name(split: str, index: int) -> str:
    if split not in ("train", "val"):
        raise DataError(f"unknown split {split!r}: expected 'train' or 'val'")
    return f"fineweb_{split}_{index:06d}.bin"


def train_shard_path(data_dir: Path | str, variant: str, index: int) -> Path:
    return dataset_dir(data_dir, variant) / shard_name("train", index)


def val_shard_path(data_dir: Path | str, variant: str, index: int) -> Path:
    return dataset_dir(data_dir, variant) / shard_name("val", index)


def train_files(data_dir: Path | str, variant: str) -> list[Path]:
    """The train shards present on disk, in order."""
    return sorted(dataset_dir(data_dir, variant).glob("fineweb_train_*.bin"))


def val_files(data_dir: Path | str, variant: str) -> list[Path]:
    """The val shards present on disk, in order."""
    return sorted(dataset_dir(data_dir, variant).glob("fineweb_val_*.bin"))


def tokenizer_path(data_dir: Path | str, variant: str) -> Path:
    """The tokenizer file the trainer loads (`TOKENIZER_PATH`) for this variant."""
    if variant == "byte260":
        dataset_dir_name(variant)
        return tokenizers_dir(data_dir) / "fineweb_pure_byte_260.json"
    return tokenizers_dir(data_dir) / f"fineweb_{variant_vocab_size(variant)}_bpe.model"


def load_manifest(data_dir_or_file: Path | str) -> dict[str, Any]:
    """Read `manifest.json` (a folder or the file itself); checks it has `datasets` and `tokenizers`."""
    path = Path(data_dir_or_file)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: manifest not found") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: manifest must be a JSON object")
    for key in ("datasets", "tokenizers"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: manifest has no list {key!r}")
    return data


def manifest_dataset(manifest: dict[str, Any], variant: str, source: str = "manifest.json") -> dict[str, Any]:
    """The `datasets[]` entry for a variant (matched by folder name, as the downloader does)."""
    name = dataset_dir_name(variant)
    for entry in manifest.get("datasets", []):
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    names = [e.get("name") for e in manifest.get("datasets", []) if isinstance(e, dict)]
    raise DataError(f"{source}: no dataset {name!r} (variant {variant!r}); datasets present: {names}")


def manifest_tokenizer(manifest: dict[str, Any], name: str, source: str = "manifest.json") -> dict[str, Any]:
    """The `tokenizers[]` entry with this `name` (a dataset's `tokenizer_name`)."""
    for entry in manifest.get("tokenizers", []):
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    names = [e.get("name") for e in manifest.get("tokenizers", []) if isinstance(e, dict)]
    raise DataError(f"{source}: no tokenizer {name!r}; tokenizers present: {names}")


def local_path_for_remote(remote_path: str, data_dir: Path | str, prefix: str = DEFAULT_REMOTE_PREFIX) -> Path:
    """Where a file of the Hub repo lands locally: strip a leading `prefix`; `datasets/…` and
    `tokenizers/…` keep their folder under `data_dir`, anything else goes to `data_dir` itself."""
    parts = PurePosixPath(remote_path).parts
    if any(p in ("..", "/") for p in parts) or not parts:
        raise DataError(f"refusing remote path {remote_path!r}: empty, absolute or containing '..'")
    if prefix and parts[:1] == (prefix,):
        parts = parts[1:]
    if not parts:
        raise DataError(f"remote path {remote_path!r} names the prefix folder itself, not a file")
    return Path(data_dir).joinpath(*parts)
