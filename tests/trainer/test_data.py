"""Data: shard validation, document packing, calibration sampling, BPB byte tables."""
import numpy as np
import pytest
import torch


def write_shard(path, tokens, magic=20240520, version=1, count=None):
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = magic, version, len(tokens) if count is None else count
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype="<u2").tobytes())
    return str(path)


def test_shard_roundtrip(tg, tmp_path):
    p = write_shard(tmp_path / "a.bin", [1, 5, 6, 65535])
    assert tg.read_shard_header(p) == 4
    assert list(tg.load_shard(p)) == [1, 5, 6, 65535]


@pytest.mark.parametrize("kind, needle", [
    ("magic", "wrong magic 123"), ("version", "unsupported version 2"),
    ("size", "does not match header token count 5"), ("short", "shorter than the 1024-byte header"),
])
def test_shard_errors_name_file_and_problem(tg, tmp_path, kind, needle):
    p = tmp_path / f"{kind}.bin"
    if kind == "magic":
        write_shard(p, [1, 2], magic=123)
    elif kind == "version":
        write_shard(p, [1, 2], version=2)
    elif kind == "size":
        write_shard(p, [1, 2], count=5)
    else:
        p.write_bytes(b"\0" * 100)
    with pytest.raises(tg.ShardError) as e:
        tg.read_shard_header(str(p))
    assert str(p) in str(e.value) and needle in str(e.value)


def test_no_shards_is_a_clear_error(tg, tmp_path):
    with pytest.raises(FileNotFoundError, match="no train shards match"):
        tg.list_shards(str(tmp_path / "fineweb_train_*.bin"), "train")


def test_cu_seqlens_boundaries_and_piece_splitting(tg):
    # doc tail (no BOS at 0), BOS at 3, a long doc from 6 of length 10 cut at max_len 4
    toks = np.array([7, 7, 7, 1, 8, 8, 1, 9, 9, 9, 9, 9, 9, 9, 9, 9], dtype=np.uint16)
    cu, max_seg = tg.build_cu_seqlens(toks, max_len=4, pad_to=8)
    assert cu.dtype == np.int32
    assert list(cu) == [0, 3, 6, 10, 14, 16, 16, 16]
    assert max_seg == 4
    assert tg.cu_entries_in_use(cu) == 6  # 0 .. 16: the two trailing 16s are padding
    assert tg.cu_entries_in_use(np.array([0, 5, 9], dtype=np.int32)) == 3  # no padding


def test_packing_loader_spans_and_ranks(tg, tmp_path):
    # one shard: a leading partial doc, then docs of varied length
    rng = np.random.default_rng(0)
    toks = [5, 5]
    for _ in range(200):
        toks += [1] + list(rng.integers(4, 50, size=int(rng.integers(1, 30))))
    p = write_shard(tmp_path / "fineweb_train_000000.bin", toks)
    arr = np.array(toks)
    first_bos = int(np.flatnonzero(arr == 1)[0])
    L = 64
    got = []
    for rank in range(2):
        ld = tg.DocumentPackingLoader([p], L, 16, rank, 2, torch.device("cpu"))
        got.append([ld.next_batch() for _ in range(3)])
    for step in range(3):
        for rank in range(2):
            x, y, cu, used = got[rank][step]
            start = first_bos + step * 2 * (L + 1) + rank * (L + 1)
            assert x.shape == (1, L) and y.shape == (1, L)
            assert torch.equal(x[0], torch.from_numpy(arr[start:start + L]))
            assert torch.equal(y[0], torch.from_numpy(arr[start + 1:start + L + 1]))
            cu = cu.tolist()
            assert len(cu) % 64 == 0 and cu[0] == 0 and cu[-1] == L
            # the entries in use, counted on the host for the attention op: all before the padding
            assert used.device.type == "cpu" and used.dim() == 0
            assert cu[int(used) - 1] == L and cu[int(used) - 2] < L
            segs = [b - a for a, b in zip(cu[:-1], cu[1:]) if b > a]
            assert max(segs) <= 16 and sum(segs) == L
            bos = set(np.flatnonzero(arr[start:start + L] == 1).tolist())
            assert bos <= set(cu)


def test_calibration_batches_shape_and_determinism(tg, tmp_path):
    rng = np.random.default_rng(1)
    files = [write_shard(tmp_path / f"s{i}.bin", rng.integers(0, 100, size=3000)) for i in range(3)]
    a = list(zip(range(3), tg.calibration_batches(files, 64, 5, rank=1, world=2)))
    b = list(zip(range(3), tg.calibration_batches(files, 64, 5, rank=1, world=2)))
    assert all(x.shape == (5, 64) and x.dtype == torch.int64 for _, x in a)
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
    shard1 = np.asarray(tg.load_shard(files[1]))  # rank 1 of 2 reads shards 1, 3, ... = only files[1]
    row = a[0][1][0].numpy()
    starts = [i for i in range(len(shard1) - 64) if np.array_equal(shard1[i:i + 64], row)]
    assert starts


def test_byte_tables_hand_built_pieces(tg):
    pieces = [("<pad>", "control"), ("<s>", "control"), ("</s>", "control"), ("<unk>", "unknown"),
              ("<0x41>", "byte"), ("\u2581the", "normal"), ("ing", "normal"), ("\u2581", "normal"),
              ("\u00e9t\u00e9", "normal"), ("\u2581\u00e9", "normal")]
    base, lead, boundary = tg.build_byte_tables(pieces, vocab_size=12)
    assert list(base) == [0, 0, 0, 0, 1, 3, 3, 0, 5, 2, 0, 0]
    assert list(lead) == [False] * 5 + [True, False, True, False, True, False, False]
    assert list(boundary) == [True] * 4 + [False] * 6 + [True, True]
    t = tg.ByteTables(base, lead, boundary, torch.device("cpu"))
    prev = torch.tensor([6, 1, 6, 1, 5, 6])
    tgt = torch.tensor([5, 5, 7, 7, 1, 4])
    # leading space counts only when the previous token is not a boundary; BOS target = 0 bytes
    assert t.bytes_for(prev, tgt).tolist() == [4.0, 3.0, 1.0, 0.0, 0.0, 1.0]


def test_tokenizer_checks(tg, tiny_data):
    h = tg.Hyperparameters({"DATA_DIR": str(tiny_data), "VOCAB_SIZE": "512", "NUM_LAYERS": "4",
                            "PARALLEL_START_LAYER": "3", "LOOP_START": "1", "LOOP_END": "1"})
    sp = tg.load_tokenizer(h)
    pieces = tg.sentencepiece_pieces(sp)
    assert pieces[1][1] == "control" and sum(k == "byte" for _, k in pieces) == 256
    h.vocab_size = 1024
    with pytest.raises(ValueError, match="VOCAB_SIZE=1024 but tokenizer"):
        tg.load_tokenizer(h)
