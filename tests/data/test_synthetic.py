"""The synthetic dataset builder: layout, manifest, BOS layout, tokenizer settings, determinism,
idempotence, and that the data has structure a model can learn beyond unigram counts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from golfrun.data import layout
from golfrun.data.shards import check_shard, read_tokens
from golfrun.data.synthetic import BOS_ID, DatasetInfo, build_dataset, generate_documents, main
from golfrun.errors import DataError

SMALL = dict(vocab_size=384, train_docs=600, val_docs=60, train_shards=3, seed=7)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> DatasetInfo:
    return build_dataset(tmp_path_factory.mktemp("syn"), **SMALL)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_on_disk(built: DatasetInfo) -> None:
    d = built.data_dir
    assert built.variant == "sp384"
    assert built.dataset_dir == d / "datasets/fineweb10B_sp384"
    assert built.tokenizer_path == d / "tokenizers/fineweb_384_bpe.model"
    assert (d / "tokenizers/fineweb_384_bpe.vocab").is_file()
    assert built.train_files == [d / f"datasets/fineweb10B_sp384/fineweb_train_{i:06d}.bin" for i in range(3)]
    assert built.val_files == [d / "datasets/fineweb10B_sp384/fineweb_val_000000.bin"]
    assert layout.train_files(d, "sp384") == built.train_files
    assert sum(check_shard(p).num_tokens for p in built.train_files) == built.train_tokens
    assert check_shard(built.val_files[0]).num_tokens == built.val_tokens


def test_manifest(built: DatasetInfo) -> None:
    m = layout.load_manifest(built.data_dir)
    ds = layout.manifest_dataset(m, "sp384")
    tok = layout.manifest_tokenizer(m, ds["tokenizer_name"])
    assert ds["stats"] == {
        "docs_total": 660, "docs_val": 60, "docs_train": 600,
        "files_total": 4, "files_val": 1, "files_train": 3,
        "tokens_total": built.train_tokens + built.val_tokens,
        "tokens_val": built.val_tokens, "tokens_train": built.train_tokens,
    }
    assert ds["train_glob"] == "datasets/fineweb10B_sp384/fineweb_train_*.bin"
    assert (ds["vocab_size"], ds["bos_id"], ds["eos_id"]) == (384, 1, 2)
    assert tok["kind"] == "sentencepiece_bpe"
    assert (built.data_dir / tok["model_path"]) == built.tokenizer_path
    assert (built.data_dir / tok["vocab_path"]).is_file()
    assert m["append_eos"] is False and m["num_val_docs"] == 60


def test_bos_layout(built: DatasetInfo) -> None:
    val = np.asarray(read_tokens(built.val_files[0]))
    assert val[0] == BOS_ID
    assert int((val == BOS_ID).sum()) == 60  # one BOS per val document, no EOS anywhere
    assert not (val == 2).any()
    train = np.concatenate([np.asarray(read_tokens(p)) for p in built.train_files])
    assert train[0] == BOS_ID and int((train == BOS_ID).sum()) == 600
    assert int(train.max()) < 384 and int(val.max()) < 384
    # The stream is cut into equal shards (the last takes the remainder), so documents straddle
    # shard boundaries, as in the export.
    sizes = [check_shard(p).num_tokens for p in built.train_files]
    per_shard = -(-built.train_tokens // 3)
    assert sizes[:-1] == [per_shard, per_shard] and sizes[-1] == built.train_tokens - 2 * per_shard
    assert any(np.asarray(read_tokens(p))[0] != BOS_ID for p in built.train_files[1:])


def test_documents_round_trip_through_tokenizer(built: DatasetInfo) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(built.tokenizer_path))
    docs = generate_documents(660, seed=7, vocab_size=384)
    val = np.asarray(read_tokens(built.val_files[0])).tolist()
    first = val[1 : val.index(BOS_ID, 1)]
    assert first == sp.encode(docs[0])
    # nmt_nfkc folds the newline between title and body into a space; the words survive.
    assert sp.decode(first).split() == docs[0].split()


def test_tokenizer_settings(built: DatasetInfo) -> None:
    sp = spm.SentencePieceProcessor(model_file=str(built.tokenizer_path))
    assert sp.get_piece_size() == 384
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    # byte_fallback: the 256 byte pieces follow the specials; an unseen character becomes bytes.
    assert sp.id_to_piece(4) == "<0x00>" and sp.id_to_piece(259) == "<0xFF>"
    assert sp.encode("€") == [4 + b for b in "€".encode()]
    # split_digits: numbers never merge; no dummy prefix: a leading word has no "▁".
    assert sp.encode("2025", out_type=str) == ["2", "0", "2", "5"]
    assert not sp.encode("The", out_type=str)[0].startswith("\u2581")
    # nmt_nfkc normalization: a full-width digit becomes an ASCII one.
    assert sp.encode("\uff11") == sp.encode("1")
    vocab_lines = (built.data_dir / "tokenizers/fineweb_384_bpe.vocab").read_text().splitlines()
    assert len(vocab_lines) == 384 and vocab_lines[1] == "<s>\t0"


def test_deterministic_and_idempotent(built: DatasetInfo, tmp_path: Path) -> None:
    again = build_dataset(tmp_path / "again", **SMALL)
    assert _tree_digest(again.data_dir) == _tree_digest(built.data_dir)
    # A second call with the same parameters writes nothing.
    stamps = {p: p.stat().st_mtime_ns for p in again.data_dir.rglob("*") if p.is_file()}
    assert build_dataset(tmp_path / "again", **SMALL) == again
    assert {p: p.stat().st_mtime_ns for p in again.data_dir.rglob("*") if p.is_file()} == stamps


def test_other_parameters_rebuild(tmp_path: Path) -> None:
    first = build_dataset(tmp_path, **SMALL)
    other = build_dataset(tmp_path, **{**SMALL, "seed": 8, "train_shards": 2})
    assert len(other.train_files) == 2
    assert layout.train_files(tmp_path, "sp384") == other.train_files  # old third shard removed
    assert other.train_tokens != first.train_tokens
    assert layout.load_manifest(tmp_path)["synthetic"]["seed"] == 8


def test_damaged_shard_is_rebuilt(tmp_path: Path) -> None:
    info = build_dataset(tmp_path, **SMALL)
    good = info.train_files[1].read_bytes()
    info.train_files[1].write_bytes(good[:-10])
    build_dataset(tmp_path, **SMALL)
    assert info.train_files[1].read_bytes() == good


def test_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train_shards"):
        build_dataset(tmp_path, train_shards=0)
    with pytest.raises(DataError, match="vocab_size"):
        build_dataset(tmp_path, vocab_size=100)


def test_structure_beyond_unigram(built: DatasetInfo) -> None:
    """A bigram model fit on train beats a unigram model on val by a wide margin, so a small
    transformer has something to learn."""
    train = np.concatenate([np.asarray(read_tokens(p)) for p in built.train_files]).astype(np.int64)
    val = np.asarray(read_tokens(built.val_files[0])).astype(np.int64)
    v = built.vocab_size
    uni = np.bincount(train, minlength=v) + 0.1
    uni /= uni.sum()
    big = np.full((v, v), 0.01)
    np.add.at(big, (train[:-1], train[1:]), 1)
    big /= big.sum(axis=1, keepdims=True)
    unigram_nats = -np.log(uni[val]).mean()
    bigram_nats = -np.log(big[val[:-1], val[1:]]).mean()
    assert bigram_nats < unigram_nats - 1.0


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--vocab-size", "400", "--train-docs", "50", "--val-docs", "5"]) == 0
    assert "fineweb10B_sp400" in capsys.readouterr().out
    assert main([str(tmp_path / "x"), "--train-shards", "0"]) == 2
    assert "train_shards" in capsys.readouterr().err


def test_vocab_8192(tmp_path: Path) -> None:
    """The real vocabulary size of the record builds from the default number of documents."""
    info = build_dataset(tmp_path, vocab_size=8192, train_docs=4000, val_docs=100, train_shards=1)
    sp = spm.SentencePieceProcessor(model_file=str(info.tokenizer_path))
    assert sp.get_piece_size() == 8192 and info.tokenizer_path.name == "fineweb_8192_bpe.model"
    assert info.dataset_dir.name == "fineweb10B_sp8192"
    tokens = np.asarray(read_tokens(info.train_files[0]))
    assert int(tokens.max()) < 8192 and int(tokens.max()) > 4000  # the merges are used


def test_length_scale_makes_documents_longer_and_leaves_the_default_alone(built: DatasetInfo, tmp_path: Path) -> None:
    """length_scale multiplies each document's paragraphs (the benchmarks' FineWeb-length data: 6); at 1 the
    documents and the manifest are those built before the setting existed, so such datasets still match."""
    short = generate_documents(200, seed=7, vocab_size=384)
    assert generate_documents(200, seed=7, vocab_size=384, length_scale=1) == short
    long = generate_documents(200, seed=7, vocab_size=384, length_scale=6)
    ratio = sum(map(len, long)) / sum(map(len, short))
    assert 5 < ratio < 7
    assert "length_scale" not in layout.load_manifest(built.data_dir)["synthetic"]
    info = build_dataset(tmp_path, **{**SMALL, "length_scale": 6})
    assert layout.load_manifest(tmp_path)["synthetic"]["length_scale"] == 6
    assert info.train_tokens > 4 * built.train_tokens


def test_length_scale_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="length_scale must be an integer >= 1, got 0"):
        build_dataset(tmp_path, **{**SMALL, "length_scale": 0})
