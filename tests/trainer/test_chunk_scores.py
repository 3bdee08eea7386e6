"""VAL_CHUNKS: an evaluation's NLL, targets and bytes summed per chunk of validation documents (ChunkScores),
which golfrun's paired halving compares variant against baseline chunk by chunk. Here the chunk a target lands
in, by hand; tests/trainer/test_ttt.py checks that every evaluation's chunk sums add up to its score."""

from __future__ import annotations

import pytest
import torch

from tests.trainer.conftest import TINY_ENV as TINY


def _stream(tg, lengths: list[int]) -> torch.Tensor:
    """Documents of these lengths, each a BOS then tokens 5, 6, ..."""
    out = []
    for n in lengths:
        out += [tg.BOS_ID] + [5 + i % 7 for i in range(n - 1)]
    return torch.tensor(out, dtype=torch.int64)


def test_chunks_hold_whole_documents_in_stream_order(tg):
    # six documents starting at 0, 4, 9, 11, 20, 22; three chunks of two documents each
    tokens = _stream(tg, [4, 5, 2, 9, 2, 6])
    chunks = tg.ChunkScores(tokens, 3, torch.device("cpu"))
    assert chunks.bounds.tolist() == [0, 9, 20]
    # target i scores token i+1: target 8 predicts the BOS at 9, the end of document 2 (chunk 0);
    # target 9 predicts the first token of document 3 (chunk 1)
    pos = torch.tensor([0, 8, 9, 19, 20, 26])
    chunks.add(pos, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), torch.tensor([1, 1, 2, 2, 3, 3]))
    entry = chunks.entry(world=1)
    assert entry == {"nll": [3.0, 7.0, 11.0], "targets": [2, 2, 2], "bytes": [2, 4, 6]}


def test_more_chunks_than_documents_gives_one_per_document(tg):
    tokens = _stream(tg, [3, 3])
    chunks = tg.ChunkScores(tokens, 8, torch.device("cpu"))
    assert chunks.bounds.tolist() == [0, 3]
    chunks.add(torch.tensor([4, 4]), torch.tensor([0.5, 0.25]), torch.tensor([2, 2]))  # scored twice: both sums
    assert chunks.entry(world=1) == {"nll": [0.0, 0.75], "targets": [0, 2], "bytes": [0, 4]}


def test_val_chunks_setting(tg):
    assert tg.Hyperparameters(TINY).val_chunks == 0
    assert tg.ChunkScores.maybe(tg.Hyperparameters(TINY), _stream(tg, [3]), torch.device("cpu")) is None
    assert tg.Hyperparameters({**TINY, "VAL_CHUNKS": "16"}).val_chunks == 16
    with pytest.raises(ValueError, match="VAL_CHUNKS=-1 must be >= 0"):
        tg.Hyperparameters({**TINY, "VAL_CHUNKS": "-1"})
