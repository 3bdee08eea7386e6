"""Variant → folder names, paths, the manifest reader and the remote → local mapping rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golfrun.data import layout
from golfrun.errors import DataError


def test_variant_names() -> None:
    assert layout.dataset_dir_name("sp8192") == "fineweb10B_sp8192"
    assert layout.dataset_dir_name("byte260") == "fineweb10B_byte260"
    assert layout.variant_vocab_size("sp1024") == 1024
    assert layout.variant_vocab_size("byte260") == 260
    for bad in ("sp", "sp8k", "bpe8192", "byte256", ""):
        with pytest.raises(DataError, match=repr(bad)):
            layout.dataset_dir_name(bad)


def test_paths(tmp_path: Path) -> None:
    assert layout.train_shard_path(tmp_path, "sp512", 3) == tmp_path / "datasets/fineweb10B_sp512/fineweb_train_000003.bin"
    assert layout.val_shard_path(tmp_path, "sp512", 0) == tmp_path / "datasets/fineweb10B_sp512/fineweb_val_000000.bin"
    assert layout.tokenizer_path(tmp_path, "sp8192") == tmp_path / "tokenizers/fineweb_8192_bpe.model"
    assert layout.tokenizer_path(tmp_path, "byte260") == tmp_path / "tokenizers/fineweb_pure_byte_260.json"


def test_local_path_for_remote(tmp_path: Path) -> None:
    m = layout.local_path_for_remote
    assert m("datasets/manifest.json", tmp_path) == tmp_path / "manifest.json"
    assert (m("datasets/datasets/fineweb10B_sp8192/fineweb_val_000000.bin", tmp_path)
            == tmp_path / "datasets/fineweb10B_sp8192/fineweb_val_000000.bin")
    assert m("datasets/tokenizers/fineweb_8192_bpe.model", tmp_path) == tmp_path / "tokenizers/fineweb_8192_bpe.model"
    assert m("tokenizers/fineweb_1024_bpe.vocab", tmp_path) == tmp_path / "tokenizers/fineweb_1024_bpe.vocab"
    assert m("docs_selected.jsonl", tmp_path) == tmp_path / "docs_selected.jsonl"
    assert m("root/x.json", tmp_path, prefix="root") == tmp_path / "x.json"
    with pytest.raises(DataError, match=r"\.\."):
        m("datasets/../../etc/passwd", tmp_path)


def test_load_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest not found"):
        layout.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable manifest") as err:
        layout.load_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in str(err.value)
    (tmp_path / "manifest.json").write_text(json.dumps({"datasets": []}))
    with pytest.raises(DataError, match="no list 'tokenizers'"):
        layout.load_manifest(tmp_path)


def test_manifest_lookups() -> None:
    manifest = {"datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024"}],
                "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model"}]}
    entry = layout.manifest_dataset(manifest, "sp1024")
    assert layout.manifest_tokenizer(manifest, entry["tokenizer_name"])["model_path"].endswith(".model")
    with pytest.raises(DataError, match=r"no dataset 'fineweb10B_sp8192'.*fineweb10B_sp1024"):
        layout.manifest_dataset(manifest, "sp8192")
    with pytest.raises(DataError, match="no tokenizer 'x'"):
        layout.manifest_tokenizer(manifest, "x")
