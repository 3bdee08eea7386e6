"""Shared pieces of the TTT tests: a tiny randomly initialised model (legality needs no trained weights, but
every projection must be non-zero so attention really mixes positions), a synthetic validation stream of
BOS-separated documents, byte tables from hand-made pieces, and an in-process TTT run that returns the
results entry, the log lines and the score dump."""
from __future__ import annotations

import numpy as np
import torch

V = 96
TINY_TTT = {
    "VOCAB_SIZE": str(V), "NUM_LAYERS": "4", "MODEL_DIM": "32", "EMBEDDING_DIM": "32", "NUM_HEADS": "4",
    "NUM_KV_HEADS": "2", "XSA_LAST_N": "4", "ROPE_DIMS": "4", "NUM_LOOPS": "1", "LOOP_START": "1",
    "LOOP_END": "1", "PARALLEL_START_LAYER": "3", "TRAIN_SEQ_LEN": "64", "EVAL_SEQ_LEN": "64",
    "TRAIN_BATCH_TOKENS": "1024", "VAL_BATCH_TOKENS": "4096", "SEED": "0",
    "TTT_ENABLED": "1", "TTT_LORA_RANK": "4", "TTT_LORA_LR": "0.01", "TTT_CHUNK_SIZE": "8",
    "TTT_EVAL_SEQ_LEN": "32", "TTT_BATCH_SIZE": "4", "TTT_DEBUG_BYPASS": "1",
    "PHASED_TTT_ENABLED": "1", "PHASED_TTT_PREFIX_DOCS": "6", "GLOBAL_TTT_CHUNK_TOKENS": "64",
    "GLOBAL_TTT_BATCH_SEQS": "2", "GLOBAL_TTT_LR": "0.02",
}


def hparams(tg, **extra):
    env = dict(TINY_TTT)
    env.update({k: str(v) for k, v in extra.items()})
    return tg.Hyperparameters(env)


def random_model(tg, h, seed: int = 0):
    torch.manual_seed(seed)
    model = tg.build_model(h, torch.device("cpu"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def doc_stream(n_docs: int = 18, seed: int = 0, max_len: int = 70) -> torch.Tensor:
    """BOS-started documents of varied length (some shorter than a chunk, some longer than the TTT window),
    trimmed like load_validation_tokens with EVAL_SEQ_LEN=64."""
    rng = np.random.default_rng(seed)
    parts = [np.concatenate([[1], rng.integers(2, V, int(rng.integers(2, max_len)))]) for _ in range(n_docs)]
    toks = np.concatenate(parts)
    usable = ((len(toks) - 1) // 64) * 64
    return torch.from_numpy(toks[:usable + 1].astype(np.int64))


def tables(tg):
    pieces = [("<unk>", "unknown"), ("<s>", "control")]
    for i in range(2, V):
        if i % 11 == 0:
            pieces.append((f"<0x{i:02X}>", "byte"))
        else:
            pieces.append((("\u2581" if i % 3 == 0 else "") + "xyz"[: 1 + i % 3], "normal"))
    base, lead, boundary = tg.build_byte_tables(pieces, V)
    return tg.ByteTables(base, lead, boundary, torch.device("cpu"))


def run_ttt(tg, h, tokens: torch.Tensor, tmp_path, name: str = "run", model_seed: int = 0, backend=None):
    """run_ttt_eval in this process (world 1); returns (entry, log lines, dump arrays)."""
    torch.set_num_threads(1)
    path = tmp_path / f"{name}.npz"
    h.score_dump_path = str(path)
    lines: list[str] = []
    entry = tg.run_ttt_eval(h, random_model(tg, h, model_seed), tokens, tables(tg), 0, 1,
                            torch.device("cpu"), lines.append, backend=backend)
    label = entry["label"]
    with np.load(tg.score_dump_path(h, label)) as z:
        dump = {k: z[k] for k in z.files}
    return entry, lines, dump
