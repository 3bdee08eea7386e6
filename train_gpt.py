"""Parameter Golf trainer: the method of record #1610 (VarLen attention, looped U-Net GPT, Muon,
GPTQ int6 + brotli), runnable from one CPU process to 8 GPUs.

The file reads top to bottom, one banner per part: hyperparameters -> data -> kernels -> model ->
optimizer -> training loop -> serialization -> evaluation -> test-time training -> main. docs/trainer.md documents the environment variables, the
results.json schema and every deliberate deviation from the record.
"""
from __future__ import annotations

import copy
import difflib
import functools
import glob
import itertools
import json
import math
import os
import platform
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import sentencepiece as spm
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

# ==================================================================================================
# HYPERPARAMETERS
# ==================================================================================================

# (ENV NAME, type, default). Attribute = name lowercased. Order follows trainer-facts §2.
_ENV_SPEC: list[tuple[str, type, object]] = [
    # run / data / logging
    ("DATA_DIR", str, "./data/"),
    ("SEED", int, 1337),
    ("RUN_ID", str, None),
    ("ARTIFACT_DIR", str, ""),
    ("EVAL_ONLY_PATH", str, ""),
    ("EVAL_ONLY_QUANTIZED_PATH", str, ""),
    ("TTT_ONLY_EVAL", bool, False),
    ("TTT_DEBUG_BYPASS", str, ""),
    ("CONTROL_TENSOR_NAME_PATTERNS", str,
     "attn_scale,attn_scales,mlp_scale,mlp_scales,resid_mix,resid_mixes,q_gain,skip_weight,"
     "skip_weights,skip_gates,parallel_post_lambdas,parallel_resid_lambdas"),
    ("TRAIN_LOG_EVERY", int, 500),
    ("VAL_LOSS_EVERY", int, 4000),
    # schedule / batch
    ("ITERATIONS", int, 20000),
    ("WARMDOWN_FRAC", float, 0.72),
    ("WARMUP_STEPS", int, 20),
    ("TRAIN_BATCH_TOKENS", int, 786432),
    ("TRAIN_SEQ_LEN", int, 2048),
    ("MAX_WALLCLOCK_SECONDS", float, 600.0),
    ("GPTQ_RESERVE_SECONDS", float, 13.0),
    ("GRAD_CLIP_NORM", float, 0.3),
    ("EMA_DECAY", float, 0.9965),
    # model shape
    ("VOCAB_SIZE", int, 8192),
    ("NUM_LAYERS", int, 11),
    ("MODEL_DIM", int, 512),
    ("EMBEDDING_DIM", int, 512),
    ("NUM_HEADS", int, 8),
    ("NUM_KV_HEADS", int, 4),
    ("MLP_MULT", float, 4.0),
    ("TIE_EMBEDDINGS", bool, True),
    ("LOGIT_SOFTCAP", float, 30.0),
    ("ROPE_BASE", float, 10000.0),
    ("ROPE_DIMS", int, 16),
    ("ROPE_TRAIN_SEQ_LEN", int, 2048),
    ("ROPE_YARN", bool, False),
    ("LN_SCALE", bool, True),
    ("QK_GAIN_INIT", float, 5.0),
    ("XSA_LAST_N", int, 11),
    ("SKIP_GATES_ENABLED", bool, True),
    ("NUM_LOOPS", int, 2),
    ("LOOP_START", int, 3),
    ("LOOP_END", int, 5),
    ("ENABLE_LOOPING_AT", float, 0.35),
    ("PARALLEL_START_LAYER", int, 8),
    ("PARALLEL_FINAL_LANE", str, "mean"),
    # optimizers
    ("MATRIX_LR", float, 0.022),
    ("SCALAR_LR", float, 0.02),
    ("TIED_EMBED_LR", float, 0.03),
    ("EMBED_LR", float, 0.6),
    ("HEAD_LR", float, 0.008),
    ("TIED_EMBED_INIT_STD", float, 0.005),
    ("MIN_LR", float, 0.0),
    ("MUON_MOMENTUM", float, 0.97),
    ("MUON_MOMENTUM_WARMUP_START", float, 0.92),
    ("MUON_MOMENTUM_WARMUP_STEPS", int, 1500),
    ("MUON_BACKEND_STEPS", int, 5),
    ("MUON_ROW_NORMALIZE", bool, True),
    ("MUON_WD", float, 0.095),
    ("MUON_BETA2", float, 0.95),
    ("BETA1", float, 0.9),
    ("BETA2", float, 0.95),
    ("ADAM_EPS", float, 1e-8),
    ("ADAM_WD", float, 0.02),
    ("EMBED_WD", float, 0.085),
    # evaluation
    ("VAL_BATCH_TOKENS", int, 524288),
    ("EVAL_SEQ_LEN", int, 2048),
    ("SLIDING_WINDOW_ENABLED", bool, False),
    ("EVAL_STRIDE", int, 64),
    # LoRA test-time training (implemented in a later version: read, logged, validated)
    ("TTT_ENABLED", bool, True),
    ("TTT_LORA_RANK", int, 96),
    ("TTT_LORA_LR", float, 1e-4),
    ("TTT_CHUNK_SIZE", int, 32),
    ("TTT_EVAL_SEQ_LEN", int, 2048),
    ("TTT_BATCH_SIZE", int, 64),
    ("TTT_GRAD_STEPS", int, 1),
    ("TTT_WEIGHT_DECAY", float, 0.5),
    ("TTT_BETA1", float, 0.0),
    ("TTT_BETA2", float, 0.999),
    ("TTT_K_LORA", bool, True),
    ("TTT_MLP_LORA", bool, True),
    ("TTT_O_LORA", bool, True),
    ("TTT_OPTIMIZER", str, "adam"),
    ("TTT_EVAL_BATCHES", str, ""),
    ("TTT_OUTPUT_DIR", str, ""),
    ("TTT_HEARTBEAT_SECONDS", float, 15.0),
    ("TTT_DOC_LIMIT", int, 0),
    ("VAL_DOC_FRACTION", float, 1.0),
    ("VAL_DOC_SEED", int, -1),
    # phased global-SGD TTT
    ("PHASED_TTT_ENABLED", bool, False),
    ("PHASED_TTT_PREFIX_DOCS", int, 10000),
    ("GLOBAL_TTT_LR", float, 0.005),
    ("GLOBAL_TTT_EPOCHS", int, 3),
    ("GLOBAL_TTT_MOMENTUM", float, 0.9),
    ("GLOBAL_TTT_CHUNK_TOKENS", int, 32768),
    ("GLOBAL_TTT_BATCH_SEQS", int, 32),
    ("GLOBAL_TTT_WARMUP_START_LR", float, 0.0),
    ("GLOBAL_TTT_WARMUP_CHUNKS", int, 0),
    ("GLOBAL_TTT_GRAD_CLIP", float, 1.0),
    ("GLOBAL_TTT_RESPECT_DOC_BOUNDARIES", bool, True),
    ("GLOBAL_TTT_DOC_LIMIT", int, 0),
    # quantization / serialization
    ("COMPRESSOR", str, "brotli"),
    ("GPTQ_CALIBRATION_BATCHES", int, 64),
    ("MATRIX_BITS", int, 6),
    ("EMBED_BITS", int, 8),
    ("MATRIX_CLIP_SIGMAS", float, 12.85),
    ("EMBED_CLIP_SIGMAS", float, 20.0),
    # n-gram corrector (reproduction package; used by the TTT evaluator)
    ("CORRECTOR_ALPHA", float, 0.0),
    ("CORRECTOR_ORDERS", str, "8"),
    # ours (not in the record): attention kernel choice and torch.compile switch
    ("ATTN_BACKEND", str, "auto"),
    ("ATTN_CU_TRIM", bool, True),
    # ours: microbatches a rank accumulates per step (grad_accum_steps); 0 = 8 / WORLD_SIZE, the record's. With
    # TRAIN_BATCH_TOKENS divided to match, one GPU runs one rank's step of a larger run (without the all-reduce)
    ("GRAD_ACCUM", int, 0),
    ("MLP_KERNEL", str, "auto"),
    ("MLP_TILE_UP", str, ""),
    ("MLP_TILE_GRAD", str, ""),
    ("MLP_SAVE_SIGNS", bool, False),
    ("LOSS_KERNEL", str, "auto"),
    ("LOSS_TILE_FWD", str, ""),
    ("LOSS_TILE_BWD", str, ""),
    ("QK_KERNEL", str, "auto"),
    ("XSA_KERNEL", str, "plain"),
    ("COMPILE_ENABLED", bool, True),
    # ours: per-position score dump of every evaluation (TTT section, docs/trainer.md)
    ("SCORE_DUMP_PATH", str, ""),
    # ours: every evaluation's NLL and bytes summed over this many chunks of the validation documents, in
    # results.json (TTT section); golfrun's paired halving compares variants chunk by chunk. 0 = off
    ("VAL_CHUNKS", int, 0),
]
KNOWN_ENV = {name for name, _, _ in _ENV_SPEC} | {"RANK", "WORLD_SIZE", "LOCAL_RANK"}
# Families of the trainer's own names. A variable in one of these families that is not a known name
# is almost surely a typo (MUON_WDD, TTT_LORA_RNK) and would otherwise silently fall back to a default.
ENV_FAMILIES = (
    "TTT_", "PHASED_TTT_", "GLOBAL_TTT_", "MUON_", "GPTQ_", "EVAL_", "TRAIN_", "VAL_", "ROPE_",
    "EMBED_", "MATRIX_", "SCALAR_", "ADAM_", "TIED_", "HEAD_", "PARALLEL_", "LOOP_", "LOOPS_",
    "CORRECTOR_", "SKIP_", "NUM_", "MODEL_", "VOCAB_", "QK_", "XSA_", "MLP_", "LOGIT_", "LN_",
    "GRAD_", "EMA_", "WARMUP_", "WARMDOWN_", "SLIDING_", "ENABLE_LOOPING", "EMBEDDING_",
    "MAX_WALLCLOCK", "ITERATION", "COMPRESS", "ATTN_", "COMPILE_", "ARTIFACT_", "RUN_ID",
    "DATA_DIR", "SEED", "BETA", "MIN_LR",
)


def _parse_env(name: str, typ: type, raw: str):
    try:
        if typ is bool:
            return int(raw) != 0
        return typ(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a valid {typ.__name__}") from None


def unknown_env_vars(environ=None) -> list[tuple[str, str | None]]:
    """(name, closest known name) for every variable of a known family that is not a known name."""
    environ = os.environ if environ is None else environ
    out = []
    for name in sorted(environ):
        if name in KNOWN_ENV or not any(name.startswith(p) for p in ENV_FAMILIES):
            continue
        close = difflib.get_close_matches(name, sorted(KNOWN_ENV), n=1, cutoff=0.5)
        out.append((name, close[0] if close else None))
    return out


class Hyperparameters:
    """Every setting, read from the environment once. Attribute names are the env names in lower case,
    plus derived values (the ones the serializer and evaluator use are documented in docs/trainer.md:
    model_path, quantized_model_path, logfile, datasets_dir, tokenizer_path, train_files, val_files,
    rank, world_size, local_rank, distributed, grad_accum_steps (GRAD_ACCUM, else 8 / WORLD_SIZE),
    val_batch_seqs (plain eval's batch a rank, VAL_BATCH_TOKENS / 8 in sequences), is_main_process)."""

    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        for name, typ, default in _ENV_SPEC:
            raw = env.get(name)
            setattr(self, name.lower(), default if raw is None else _parse_env(name, typ, raw))
        if self.run_id is None:
            self.run_id = str(uuid.uuid4())
        self.distributed = "RANK" in env and "WORLD_SIZE" in env
        self.rank = int(env.get("RANK", "0"))
        self.world_size = int(env.get("WORLD_SIZE", "1"))
        self.local_rank = int(env.get("LOCAL_RANK", "0"))
        if self.world_size < 1 or 8 % self.world_size != 0:
            raise ValueError(f"WORLD_SIZE={self.world_size} must divide 8 (1, 2, 4 or 8 processes)")
        if self.grad_accum < 0:
            raise ValueError(f"GRAD_ACCUM={self.grad_accum} must be >= 0 (0 = 8 / WORLD_SIZE)")
        self.grad_accum_steps = self.grad_accum or 8 // self.world_size
        # the sequences a rank scores at once in plain eval: the record's VAL_BATCH_TOKENS / (WORLD_SIZE * 8 /
        # WORLD_SIZE), an eighth of it on 1, 2, 4 or 8 GPUs alike. GRAD_ACCUM shapes training steps only: dividing
        # by it made GRAD_ACCUM=1 score 8 times the batch, more sequences than a small validation set holds
        self.val_batch_seqs = self.val_batch_tokens // 8 // self.eval_seq_len
        self.is_main_process = self.rank == 0
        self.datasets_dir = os.path.join(self.data_dir, "datasets", f"fineweb10B_sp{self.vocab_size}")
        self.train_files = os.path.join(self.datasets_dir, "fineweb_train_*.bin")
        self.val_files = os.path.join(self.datasets_dir, "fineweb_val_*.bin")
        self.tokenizer_path = os.path.join(self.data_dir, "tokenizers", f"fineweb_{self.vocab_size}_bpe.model")
        if self.artifact_dir:
            self.logfile = os.path.join(self.artifact_dir, f"{self.run_id}.txt")
            self.model_path = os.path.join(self.artifact_dir, "final_model.pt")
            self.quantized_model_path = os.path.join(self.artifact_dir, "final_model.int6.ptz")
        else:
            self.logfile = os.path.join("logs", f"{self.run_id}.txt")
            self.model_path = "final_model.pt"
            self.quantized_model_path = "final_model.int6.ptz"
        if self.eval_only_quantized_path:
            self.quantized_model_path = self.eval_only_quantized_path
        self.validate()

    def validate(self) -> None:
        """Reject inconsistent settings at start, naming the variables and what to set."""
        L = self.num_layers
        def bad(msg: str):
            raise ValueError(msg)
        if L < 2:
            bad(f"NUM_LAYERS={L} must be >= 2 (the U-Net needs an encoder and a decoder half)")
        if self.model_dim % self.num_heads:
            bad(f"MODEL_DIM={self.model_dim} must be divisible by NUM_HEADS={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            bad(f"NUM_HEADS={self.num_heads} must be divisible by NUM_KV_HEADS={self.num_kv_heads}")
        head_dim = self.model_dim // self.num_heads
        if self.rope_dims < 0 or self.rope_dims > head_dim or self.rope_dims % 2:
            bad(f"ROPE_DIMS={self.rope_dims} must be even and in [0, head_dim={head_dim}] (0 = all)")
        if self.embedding_dim != self.model_dim:
            bad(f"EMBEDDING_DIM={self.embedding_dim} != MODEL_DIM={self.model_dim} is not supported "
                "(the record uses equal widths)")
        if not self.tie_embeddings:
            bad("TIE_EMBEDDINGS=0 is not supported (the record ties the head to the embedding)")
        if self.rope_yarn:
            bad("ROPE_YARN=1 is not supported (the record runs with it off)")
        if self.logit_softcap <= 0:
            bad(f"LOGIT_SOFTCAP={self.logit_softcap} must be > 0")
        if self.num_loops < 0:
            bad(f"NUM_LOOPS={self.num_loops} must be >= 0")
        if self.num_loops > 0 and not (0 <= self.loop_start <= self.loop_end < L):
            bad(f"LOOP_START={self.loop_start}, LOOP_END={self.loop_end} must satisfy "
                f"0 <= LOOP_START <= LOOP_END < NUM_LAYERS={L} (or set NUM_LOOPS=0)")
        p = self.parallel_start_layer
        if p:
            if not (L // 2 <= p < L):
                bad(f"PARALLEL_START_LAYER={p} must be a decoder layer in [{L // 2}, {L - 1}] for "
                    f"NUM_LAYERS={L} (or 0 to disable parallel lanes)")
            if self.num_loops > 0 and p <= self.loop_end:
                bad(f"PARALLEL_START_LAYER={p} must be > LOOP_END={self.loop_end}: a looped layer "
                    "cannot be a parallel-lane layer (or set PARALLEL_START_LAYER=0)")
        if self.parallel_final_lane not in ("mean", "attn", "mlp"):
            bad(f"PARALLEL_FINAL_LANE={self.parallel_final_lane!r} must be mean, attn or mlp")
        if self.compressor not in ("brotli", "lzma"):
            bad(f"COMPRESSOR={self.compressor!r} must be brotli or lzma")
        if self.attn_backend not in ("auto", "fa3", "fa4", "varlen", "varlen_gqa", "sdpa"):
            bad(f"ATTN_BACKEND={self.attn_backend!r} must be auto, fa3, fa4, varlen, varlen_gqa or sdpa")
        if self.mlp_kernel not in ("auto", "triton", "torch", "plain"):
            bad(f"MLP_KERNEL={self.mlp_kernel!r} must be auto, triton, torch or plain")
        if self.loss_kernel not in ("auto", "plain", "triton", "torch"):
            bad(f"LOSS_KERNEL={self.loss_kernel!r} must be auto, plain, triton or torch")
        if self.loss_kernel == "triton" and self.logit_softcap > LOSS_TRITON_MAX_CAP:
            bad(f"LOSS_KERNEL=triton needs LOGIT_SOFTCAP <= {LOSS_TRITON_MAX_CAP} (its sum of exponentials has no "
                f"running maximum), not {self.logit_softcap}; LOSS_KERNEL=auto takes Inductor's loss there")
        if self.qk_kernel not in ("auto", "plain", "triton", "torch"):
            bad(f"QK_KERNEL={self.qk_kernel!r} must be auto, plain, triton or torch")
        if self.qk_kernel == "triton" and not qk_triton_fits(head_dim):
            bad(f"QK_KERNEL=triton needs a power-of-two head_dim (MODEL_DIM / NUM_HEADS), not {head_dim}; "
                "QK_KERNEL=auto takes the plain ops there")
        if self.xsa_kernel not in ("auto", "plain", "triton", "torch"):
            bad(f"XSA_KERNEL={self.xsa_kernel!r} must be auto, plain, triton or torch")
        if self.xsa_kernel == "triton" and not qk_triton_fits(head_dim):
            bad(f"XSA_KERNEL=triton needs a power-of-two head_dim (MODEL_DIM / NUM_HEADS), not {head_dim}; "
                "XSA_KERNEL=auto takes the plain ops there")
        parse_loss_tile(self.loss_tile_fwd, "fwd")  # FUSED SOFT-CAPPED LOSS; raises ValueError naming the variable
        parse_loss_tile(self.loss_tile_bwd, "bwd")
        parse_mlp_tile(self.mlp_tile_up, "MLP_TILE_UP")  # FUSED MLP section; raises ValueError naming the variable
        parse_mlp_tile(self.mlp_tile_grad, "MLP_TILE_GRAD")
        per_rank = self.world_size * self.grad_accum_steps
        if self.train_batch_tokens % per_rank or self.train_batch_tokens // per_rank < 2:
            bad(f"TRAIN_BATCH_TOKENS={self.train_batch_tokens} must be a positive multiple of "
                f"WORLD_SIZE*grad_accum={per_rank}")
        if self.val_batch_seqs < 1:
            bad(f"VAL_BATCH_TOKENS={self.val_batch_tokens} gives less than one EVAL_SEQ_LEN="
                f"{self.eval_seq_len} sequence in an eighth of it (the batch a rank scores at once)")
        if self.val_chunks < 0:
            bad(f"VAL_CHUNKS={self.val_chunks} must be >= 0 (0 = no chunk sums)")
        if self.ttt_only_eval and not (self.eval_only_path or self.eval_only_quantized_path):
            bad("TTT_ONLY_EVAL=1 needs EVAL_ONLY_PATH or EVAL_ONLY_QUANTIZED_PATH")
        if self.ttt_enabled:
            check_ttt_settings(self)  # TTT section

    def env_values(self) -> dict:
        """{ENV NAME: resolved value} for results.json."""
        return {name: getattr(self, name.lower()) for name, _, _ in _ENV_SPEC}


# ==================================================================================================
# DATA
# ==================================================================================================

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
SHARD_HEADER_BYTES = 256 * 4
BOS_ID = 1
CU_PAD_COMPILED = 512


class ShardError(ValueError):
    pass


def read_shard_header(path: str) -> int:
    """Validate a challenge shard's header and size; return its token count."""
    size = os.path.getsize(path)
    if size < SHARD_HEADER_BYTES:
        raise ShardError(f"{path}: file is {size} bytes, shorter than the {SHARD_HEADER_BYTES}-byte header")
    header = np.fromfile(path, dtype="<i4", count=256)
    if int(header[0]) != SHARD_MAGIC:
        raise ShardError(f"{path}: wrong magic {int(header[0])} (expected {SHARD_MAGIC})")
    if int(header[1]) != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported version {int(header[1])} (expected {SHARD_VERSION})")
    n = int(header[2])
    if n < 0:
        raise ShardError(f"{path}: negative token count {n}")
    if size != SHARD_HEADER_BYTES + 2 * n:
        raise ShardError(f"{path}: size {size} bytes does not match header token count {n} "
                         f"(expected {SHARD_HEADER_BYTES + 2 * n} bytes)")
    return n


def load_shard(path: str) -> np.ndarray:
    """Token ids of a shard as a read-only uint16 memory map."""
    n = read_shard_header(path)
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=SHARD_HEADER_BYTES, shape=(n,))


def list_shards(pattern: str, what: str) -> list[str]:
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no {what} shards match {pattern} (check DATA_DIR and VOCAB_SIZE)")
    return files


def segment_starts(bos_positions: np.ndarray, length: int, max_len: int) -> list[int]:
    """Start offsets of attention segments in a buffer of `length` tokens: every BOS, plus 0, with every
    segment longer than max_len cut into pieces of at most max_len from its own start."""
    starts = sorted(set([0] + [int(p) for p in bos_positions if 0 <= p < length]))
    out = []
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else length
        out.extend(range(s, end, max_len))
    return out


def build_cu_seqlens(tokens: np.ndarray, max_len: int, pad_to: int = 64) -> tuple[np.ndarray, int]:
    """cu_seqlens (int32) for a packed buffer: segment starts + [len], padded with len to a multiple of
    pad_to (empty trailing segments keep the number of shapes small for torch.compile)."""
    length = len(tokens)
    starts = segment_starts(np.flatnonzero(tokens == BOS_ID), length, max_len)
    cu = starts + [length]
    max_seg = max(b - a for a, b in zip(cu[:-1], cu[1:]))
    n = len(cu)
    padded = ((n + pad_to - 1) // pad_to) * pad_to
    cu = cu + [length] * (padded - n)
    return np.asarray(cu, dtype=np.int32), max_seg


def cu_entries_in_use(cu: np.ndarray) -> int:
    """The entries of a padded cu_seqlens up to the first that equals the total (the end of the last segment);
    the rest are the empty trailing segments build_cu_seqlens pads with."""
    cu = np.asarray(cu)
    return int(np.argmax(cu == cu[-1])) + 1


class DocumentPackingLoader:
    """Training batches (§3.3): contiguous per-rank spans of L+1 tokens starting at the first BOS of a
    shard, cu_seqlens from BOS positions cut at TRAIN_SEQ_LEN; next batch prepared on a thread. A batch is
    (x, y, cu_seqlens) on the device and the number of cu_seqlens entries in use as a CPU tensor, which the
    attention op reads without waiting for the GPU (ATTN_CU_TRIM)."""

    def __init__(self, files: list[str], tokens_per_rank: int, seq_len: int, rank: int, world: int,
                 device: torch.device, pad_to: int = 64):
        self.files, self.L, self.seq_len, self.pad_to = files, tokens_per_rank, seq_len, pad_to
        self.rank, self.world, self.device = rank, world, device
        span = world * (tokens_per_rank + 1)
        sizes = [read_shard_header(f) for f in files]
        if max(sizes) < span:
            raise ValueError(f"every train shard is shorter than one step's span of {span} tokens "
                             f"(largest {max(sizes)}): lower TRAIN_BATCH_TOKENS")
        self.file_idx = -1
        self._pool = None
        self._next_shard = None
        self._open_next_shard()
        self._pending = None

    def _load(self, idx: int):
        tokens = np.asarray(load_shard(self.files[idx]))
        bos = np.flatnonzero(tokens == BOS_ID)
        return tokens, bos

    def _open_next_shard(self):
        span = self.world * (self.L + 1)
        for _ in range(len(self.files)):
            self.file_idx = (self.file_idx + 1) % len(self.files)
            if self._next_shard is not None and self._next_shard[0] == self.file_idx:
                self._next_shard[1].join()
                self.tokens, self.bos = self._next_shard[2]
            else:
                self.tokens, self.bos = self._load(self.file_idx)
            self._next_shard = None
            self.cursor = int(self.bos[0]) if len(self.bos) else 0
            # pre-load the following shard in the background
            nxt = (self.file_idx + 1) % len(self.files)
            holder: list = [nxt, None, None]
            def work(h=holder):
                h[2] = self._load(h[0])
            holder[1] = threading.Thread(target=work, daemon=True)
            holder[1].start()
            self._next_shard = holder
            if self.cursor + span <= len(self.tokens):
                return
        raise ValueError("no train shard can hold one step's span")

    def _make(self):
        span = self.world * (self.L + 1)
        if self.cursor + span > len(self.tokens):
            self._open_next_shard()
        start = self.cursor + self.rank * (self.L + 1)
        chunk = np.asarray(self.tokens[start:start + self.L + 1], dtype=np.int64)
        self.cursor += span
        x = torch.from_numpy(chunk[:-1].copy()).view(1, -1)
        y = torch.from_numpy(chunk[1:].copy()).view(1, -1)
        cu, _ = build_cu_seqlens(chunk[:-1], self.seq_len, self.pad_to)
        used = torch.tensor(cu_entries_in_use(cu))
        cu = torch.from_numpy(cu)
        if self.device.type == "cuda":
            x, y, cu = x.pin_memory(), y.pin_memory(), cu.pin_memory()
        return x, y, cu, used

    def next_batch(self):
        if self._pending is None:
            batch = self._make()
        else:
            self._pending[1].join()
            batch = self._pending[0][0]
        holder: list = [[None], None]
        def work(h=holder):
            h[0][0] = self._make()
        holder[1] = threading.Thread(target=work, daemon=True)
        holder[1].start()
        self._pending = holder
        nb = self.device.type == "cuda"
        *on_device, used = batch
        return (*(t.to(self.device, non_blocking=nb) for t in on_device), used)


def calibration_batches(files: list[str], seq_len: int, batch_seqs: int, rank: int, world: int):
    """GPTQ calibration batches (§3.4): rank r samples windows of seq_len+1 from shards r, r+world, ...
    with a PCG64 generator seeded by the rank; yields LongTensor (batch_seqs, seq_len) inputs."""
    mine = files[rank::world] or [files[rank % len(files)]]
    rng = np.random.Generator(np.random.PCG64(rank))
    shards = [load_shard(f) for f in mine]
    shards = [s for s in shards if len(s) >= seq_len + 2]
    if not shards:
        raise ValueError(f"no calibration shard has more than {seq_len + 1} tokens")

    def refill():
        out = []
        for s in shards:
            n = len(s)
            p = int(rng.integers(0, min(seq_len - 1, n - seq_len - 1) + 1))
            count = (n - 1 - p) // seq_len
            out.append(list(p + seq_len * rng.permutation(count)))
        return out

    windows = refill()
    while True:
        batch = np.empty((batch_seqs, seq_len), dtype=np.int64)
        for i in range(batch_seqs):
            remaining = np.array([len(w) for w in windows], dtype=np.float64)
            if remaining.sum() == 0:
                windows = refill()
                remaining = np.array([len(w) for w in windows], dtype=np.float64)
            k = int(rng.choice(len(windows), p=remaining / remaining.sum()))
            start = int(windows[k].pop())
            batch[i] = shards[k][start:start + seq_len]
        yield torch.from_numpy(batch)


def load_validation_tokens(pattern: str, seq_len: int) -> torch.Tensor:
    """All val shards concatenated, trimmed to a whole number of seq_len targets (+1 for the shift)."""
    tokens = np.concatenate([np.asarray(load_shard(f)) for f in list_shards(pattern, "validation")])
    usable = ((len(tokens) - 1) // seq_len) * seq_len
    if usable <= 0:
        raise ValueError(f"validation set has {len(tokens)} tokens, less than EVAL_SEQ_LEN={seq_len}+1")
    return torch.from_numpy(tokens[:usable + 1].astype(np.int64))


def subset_validation(h, tokens: torch.Tensor) -> torch.Tensor:
    """VAL_DOC_FRACTION < 1: the validation stream cut to a reproducible subset of its documents, drawn
    without replacement with PCG64(VAL_DOC_SEED, or SEED when it is -1) and kept in stream order; every
    evaluation then scores only those (the ablation's successive halving: every variant and the baseline
    see the same documents). Each document keeps its BOS; the BOS that ended the last one is kept too."""
    if h.val_doc_fraction >= 1.0:
        return tokens
    docs = find_documents(tokens.numpy())
    n = max(1, int(round(len(docs) * h.val_doc_fraction)))
    rng = np.random.Generator(np.random.PCG64(h.val_doc_seed if h.val_doc_seed >= 0 else h.seed))
    picked = docs[np.sort(rng.choice(len(docs), size=n, replace=False))]
    stream = tokens.numpy()
    last_start, last_len = (int(x) for x in picked[-1])
    parts = [stream[start:start + length - 1] for start, length in picked]
    parts.append(stream[last_start + last_len - 1:last_start + last_len])  # the last document's last target
    out = np.concatenate(parts)
    usable = ((len(out) - 1) // h.eval_seq_len) * h.eval_seq_len
    if usable <= 0:
        raise ValueError(f"VAL_DOC_FRACTION={h.val_doc_fraction} keeps {len(out)} tokens, less than "
                         f"EVAL_SEQ_LEN={h.eval_seq_len}+1")
    return torch.from_numpy(out[:usable + 1].astype(np.int64))


def build_byte_tables(pieces: list[tuple[str, str]], vocab_size: int):
    """BPB byte tables (§7.1) from (piece, kind) pairs, kind in normal|byte|control|unknown|unused.
    Returns (base_bytes int16, has_leading_space bool, is_boundary bool), each of length
    max(len(pieces), vocab_size)."""
    n = max(len(pieces), vocab_size)
    base = np.zeros(n, dtype=np.int16)
    lead = np.zeros(n, dtype=np.bool_)
    boundary = np.ones(n, dtype=np.bool_)
    for i, (piece, kind) in enumerate(pieces):
        if kind in ("control", "unknown", "unused"):
            continue
        boundary[i] = False
        if kind == "byte":
            base[i] = 1
            continue
        if piece.startswith("\u2581"):
            lead[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return base, lead, boundary


def sentencepiece_pieces(sp: spm.SentencePieceProcessor) -> list[tuple[str, str]]:
    out = []
    for i in range(sp.vocab_size()):
        if sp.is_control(i):
            kind = "control"
        elif sp.is_unknown(i):
            kind = "unknown"
        elif sp.is_unused(i):
            kind = "unused"
        elif sp.is_byte(i):
            kind = "byte"
        else:
            kind = "normal"
        out.append((sp.id_to_piece(i), kind))
    return out


def load_tokenizer(h: Hyperparameters) -> spm.SentencePieceProcessor:
    if not os.path.exists(h.tokenizer_path):
        raise FileNotFoundError(f"tokenizer {h.tokenizer_path} not found (check DATA_DIR and VOCAB_SIZE)")
    sp = spm.SentencePieceProcessor(model_file=h.tokenizer_path)
    if sp.vocab_size() != h.vocab_size:
        raise ValueError(f"VOCAB_SIZE={h.vocab_size} but tokenizer {h.tokenizer_path} has "
                         f"{sp.vocab_size()} pieces")
    space = sp.piece_to_id("\u2581")
    if sp.id_to_piece(space) != "\u2581":
        raise ValueError(f"tokenizer {h.tokenizer_path} has no '\u2581' piece of its own")
    return sp


# ==================================================================================================
# KERNELS: fused MLP up-projection + LeakyReLU(0.5)^2 (Triton, forward and backward)
# ==================================================================================================
# The record's one custom kernel (trainer-facts §10.3). Without it the 2048-wide hidden activations make
# extra round trips through memory: the up-projection writes `pre`, a pointwise pass reads it and writes
# `post`, and in the backward another pass multiplies dPost by the activation's derivative. Here the
# forward matmul writes pre and post from its fp32 accumulator, and the backward matmul dOut·W_down
# multiplies by phi'(pre) in its epilogue. Both are wrapped as torch.library custom ops with fake
# implementations and an autograd formula, so torch.compile(fullgraph=True) traces through them.
# MLP_KERNEL: auto (default: triton on CUDA when importable, else plain), triton, plain (plain ops, Inductor
# fuses them), torch (the same custom ops with torch math inside: the fallback that runs anywhere). On an H100
# (benchmarks/results/h100-kernels-1gpu-*.json) the fused pair is 4 % faster than Inductor's MLP (2.36 against
# 2.46 ms fwd+bwd), with 100 training steps' losses within the run-to-run noise of plain. MLP_SAVE_SIGNS=1 keeps
# pre's signs (a bit per element) instead of pre for the backward: 6 GiB less peak memory on an H100 at the record's
# shape, but about 1 % slower (the backward's square roots run on the SFU, in an epilogue nothing overlaps), so it
# is off by default.

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch fallback and the plain path need no Triton
    triton = None

# TRITON_INTERPRET=1 (read by triton.jit when it decorates, so here too at import): the kernels run on CPU
# tensors in Triton's interpreter, which is how the tests and benchmarks/kernel_equivalence_cpu.py check them.
_TRITON_INTERPRETED = triton is not None and os.environ.get("TRITON_INTERPRET") == "1"
# Launch configuration of each kernel ("up": forward, "grad": backward), smaller where the widths are. On Hopper
# (sm_90: H100, H200) the persistent forms of the kernels (below), which benchmarks/kernel_checks.py's mlp-tiles
# sweep on an H100 found the fastest of thirteen (2026-12-06: up 128×128×64 with 6 stages 1.073×, grad 128×256×64
# with 3 stages 1.116× the record's tiles, outputs bit-equal; in training 1.015× before looping, 1.019× with it).
# Elsewhere the record's tiles (128×256×64, 8 warps, 4 stages; §10.3) and the pointer kernels: TMA and the
# shared memory these need were timed on Hopper only. MLP_TILE_UP / MLP_TILE_GRAD set another; with BK kept,
# only how the work is cut and scheduled changes, not the sums (each output element still accumulates K in
# BK-wide dots). A seventh value picks the form: 0 the pointer kernels, 1 the persistent ones with one program per
# SM, 2 with two (where two fit an SM's shared memory and registers, one's epilogue can run beside the other's dots).
MLP_TILE_KEYS = ("BM", "BN", "BK", "GROUP_M", "num_warps", "num_stages", "persistent")
_MLP_TILE_RECORD = dict(zip(MLP_TILE_KEYS, (128, 256, 64, 8, 8, 4, 0)))
_MLP_TILE_HOPPER = {"up": dict(zip(MLP_TILE_KEYS, (128, 128, 64, 8, 8, 6, 1))),
                    "grad": dict(zip(MLP_TILE_KEYS, (128, 256, 64, 8, 8, 3, 1)))}
_MLP = {"kernel": "plain", "up": _MLP_TILE_RECORD, "grad": _MLP_TILE_RECORD, "signs": False}


def default_mlp_tile(which: str, capability: tuple[int, int] | None) -> dict:
    """The launch configuration of kernel `which` when its MLP_TILE_* is empty, for a GPU of compute capability
    `capability` (None: no GPU, the interpreter)."""
    return dict(_MLP_TILE_HOPPER[which] if capability is not None and capability[0] == 9 else _MLP_TILE_RECORD)


def parse_mlp_tile(text: str, name: str, default: dict | None = None) -> dict:
    """'' (`default`, else the record's tiles) or 'BM,BN,BK,GROUP_M,num_warps,num_stages[,persistent]'
    (MLP_TILE_UP, MLP_TILE_GRAD); persistent is 0 (when left out) or 1."""
    if not text:
        return dict(default or _MLP_TILE_RECORD)
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        vals = []
    vals += [0] if len(vals) == 6 else []
    pow2 = lambda v: v > 0 and v & (v - 1) == 0
    if not (len(vals) == 7 and all(v >= 16 and pow2(v) for v in vals[:3]) and vals[3] >= 1
            and pow2(vals[4]) and vals[4] <= 16 and 1 <= vals[5] <= 8 and vals[6] in (0, 1, 2)):
        raise ValueError(f"{name}={text!r} must be BM,BN,BK,GROUP_M,num_warps,num_stages[,persistent]: BM, BN, BK "
                         "powers of two >= 16, GROUP_M >= 1, num_warps a power of two <= 16, num_stages 1-8, "
                         "persistent 0, 1 or 2 (programs per SM; e.g. 128,256,64,8,8,4 or 128,256,64,8,8,3,1)")
    return dict(zip(MLP_TILE_KEYS, vals))


if triton is not None:
    @triton.jit
    def _mlp_tile_ids(tile, M, N, BM: tl.constexpr, BN: tl.constexpr, GROUP_M: tl.constexpr):
        # grouped tile order: GROUP_M row-tiles share each column sweep, so weight tiles stay in L2
        num_m = tl.cdiv(M, BM)
        num_n = tl.cdiv(N, BN)
        per_group = GROUP_M * num_n
        first_m = (tile // per_group) * GROUP_M
        size_m = min(num_m - first_m, GROUP_M)
        return first_m + ((tile % per_group) % size_m), (tile % per_group) // size_m

    @triton.jit
    def _leaky_sq(z):
        """phi(z) = leaky_relu(z, 0.5)^2"""
        a = tl.where(z > 0, z, 0.5 * z)
        return a * a

    @triton.jit
    def _leaky_sq_slope(z):
        """phi'(z) = 2z (z > 0) else z/2"""
        return tl.where(z > 0, 2.0 * z, 0.5 * z)

    @triton.jit
    def _slope_from_post(post, positive):
        """phi'(pre) from post = phi(pre) and pre > 0: 2z = 2 sqrt(post) there, z/2 = -sqrt(post) elsewhere"""
        r = tl.sqrt(post)
        return tl.where(positive, 2.0 * r, -r)

    @triton.jit
    def _store_signs(signs_ptr, h, offs_m, col0, M, N, BM: tl.constexpr, W: tl.constexpr):
        """Bit c % 8 of byte c // 8 in row m of signs (M × N/8 uint8) says h[m, c] > 0, for h's W columns from col0."""
        bits = tl.reshape((h > 0).to(tl.int32), (BM, W // 8, 8))
        packed = tl.sum(bits << tl.arange(0, 8)[None, None, :], axis=2)
        offs_b = col0 // 8 + tl.arange(0, W // 8)
        tl.store(signs_ptr + offs_m[:, None] * (N // 8) + offs_b[None, :], packed.to(tl.uint8),
                 mask=offs_m[:, None] < M)

    @triton.jit
    def _load_signs(signs_ptr, offs_m, col0, M, N, BM: tl.constexpr, W: tl.constexpr):
        """_store_signs read back: (BM, W) booleans, pre > 0."""
        offs_b = col0 // 8 + tl.arange(0, W // 8)
        packed = tl.load(signs_ptr + offs_m[:, None] * (N // 8) + offs_b[None, :], mask=offs_m[:, None] < M, other=0)
        bits = (packed.to(tl.int32)[:, :, None] >> tl.arange(0, 8)[None, None, :]) & 1
        return tl.reshape(bits, (BM, W)) != 0

    @triton.jit
    def _mlp_tile(pid, M, N, BM: tl.constexpr, BN: tl.constexpr, GROUP_M: tl.constexpr):
        """Row offsets, column offsets and first column of program pid's tile."""
        pid_m, pid_n = _mlp_tile_ids(pid, M, N, BM, BN, GROUP_M)
        return pid_m * BM + tl.arange(0, BM), pid_n * BN + tl.arange(0, BN), pid_n * BN

    @triton.jit
    def _mlp_up_act_kernel(x_ptr, w_ptr, pre_ptr, post_ptr, signs_ptr, M, N, K: tl.constexpr, sxm, swn, spm,
                           BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                           SIGNS: tl.constexpr, UPCAST: tl.constexpr):
        """pre = X·Wᵀ (X: M×K, W: N×K), post = leaky_relu(pre, 0.5)²; both from the fp32 accumulator. SIGNS: pre's
        signs (_store_signs) instead of pre. UPCAST (interpreter only): the dot's operands go to fp32 first, see
        _mlp_launch."""
        offs_m, offs_n, on = _mlp_tile(tl.program_id(0), M, N, BM, BN, GROUP_M)
        offs_k = tl.arange(0, BK)
        x_ptrs = x_ptr + offs_m[:, None] * sxm + offs_k[None, :]
        w_ptrs = w_ptr + offs_n[None, :] * swn + offs_k[:, None]
        row_ok = offs_m[:, None] < M
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for _ in range(0, K, BK):
            a = tl.load(x_ptrs, mask=row_ok, other=0.0)
            b = tl.load(w_ptrs)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc)
            x_ptrs += BK
            w_ptrs += BK
        post = _leaky_sq(acc)
        out = offs_m[:, None] * spm + offs_n[None, :]
        if SIGNS:
            _store_signs(signs_ptr, acc, offs_m, on, M, N, BM, BN)
        else:
            tl.store(pre_ptr + out, acc.to(pre_ptr.dtype.element_ty), mask=row_ok)
        tl.store(post_ptr + out, post.to(post_ptr.dtype.element_ty), mask=row_ok)

    @triton.jit
    def _mlp_act_grad_kernel(g_ptr, w_ptr, act_ptr, dpre_ptr, signs_ptr, M, N, K: tl.constexpr, sgm, swk, spm,
                             BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                             SIGNS: tl.constexpr, UPCAST: tl.constexpr):
        """dPre = (G·W) ⊙ phi'(pre) with G: M×K (dOut), W: K×N (W_down), phi'(z) = 2z (z>0) else z/2. act: pre, or
        with SIGNS post and pre's signs (_slope_from_post)."""
        offs_m, offs_n, on = _mlp_tile(tl.program_id(0), M, N, BM, BN, GROUP_M)
        offs_k = tl.arange(0, BK)
        g_ptrs = g_ptr + offs_m[:, None] * sgm + offs_k[None, :]
        w_ptrs = w_ptr + offs_k[:, None] * swk + offs_n[None, :]
        row_ok = offs_m[:, None] < M
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for _ in range(0, K, BK):
            a = tl.load(g_ptrs, mask=row_ok, other=0.0)
            b = tl.load(w_ptrs)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc)
            g_ptrs += BK
            w_ptrs += BK * swk
        out = offs_m[:, None] * spm + offs_n[None, :]
        act = tl.load(act_ptr + out, mask=row_ok, other=0.0).to(tl.float32)
        if SIGNS:
            slope = _slope_from_post(act, _load_signs(signs_ptr, offs_m, on, M, N, BM, BN))
        else:
            slope = _leaky_sq_slope(act)
        tl.store(dpre_ptr + out, (acc * slope).to(dpre_ptr.dtype.element_ty), mask=row_ok)

    # Persistent forms (tile spec ...,1). In the H100 profile each kernel above takes 0.49-0.53 ms a call where
    # its matmul alone would take about 0.30 at cuBLAS's rate: with K = 512 a tile's main loop is 8 steps, and
    # then the SM stalls while it writes 128 KiB (pre and post) because 4 pipeline stages leave no room for a
    # second block on the SM. Here one program per SM walks the tiles; the flattened loop lets the pipeliner load
    # the next tile's operands (TMA) while this tile's epilogue stores, and the epilogue goes out in two halves
    # through TMA stores so that 3 to 6 stages still fit. The dots and their K order are those of the kernels above.
    @triton.jit
    def _mlp_halves(acc, BM: tl.constexpr, BN: tl.constexpr):
        return tl.split(tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1)))

    @triton.jit
    def _mlp_tile_acc(a_desc, b_desc, om, on, K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                      BK: tl.constexpr, B_ROWS_N: tl.constexpr, UPCAST: tl.constexpr):
        """One output tile's fp32 sum of A[om:om+BM, :]·B[:, on:on+BN] through TMA; B_ROWS_N: b_desc holds B
        transposed, one row per output column (W_up, N×K), else as is (W_down, K×N)."""
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, K, BK):
            a = a_desc.load([om, k])
            if B_ROWS_N:
                b = b_desc.load([on, k]).T
            else:
                b = b_desc.load([k, on])
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b, acc)
        return acc

    @triton.jit
    def _mlp_up_act_persistent(x_desc, w_desc, pre_desc, post_desc, signs_ptr, M, N, K: tl.constexpr,
                               BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                               PROGRAMS: tl.constexpr, SIGNS: tl.constexpr, UPCAST: tl.constexpr):
        """_mlp_up_act_kernel over tiles PROGRAMS apart; descriptors: X [BM, BK], W [BN, BK], pre/post [BM, BN/2]
        (the signs by pointers: a TMA box is at least 16 bytes wide, a half tile's signs are BN/16 bytes a row)."""
        num_tiles = tl.cdiv(M, BM) * tl.cdiv(N, BN)
        for tile in tl.range(tl.program_id(0), num_tiles, PROGRAMS, flatten=True):
            pid_m, pid_n = _mlp_tile_ids(tile, M, N, BM, BN, GROUP_M)
            om = pid_m * BM
            on = pid_n * BN
            acc = _mlp_tile_acc(x_desc, w_desc, om, on, K, BM, BN, BK, True, UPCAST)
            h0, h1 = _mlp_halves(acc, BM, BN)
            _up_act_half(h0, pre_desc, post_desc, signs_ptr, om, on, M, N, BM, BN // 2, SIGNS)
            _up_act_half(h1, pre_desc, post_desc, signs_ptr, om, on + BN // 2, M, N, BM, BN // 2, SIGNS)

    @triton.jit
    def _up_act_half(h, pre_desc, post_desc, signs_ptr, om, on, M, N, BM: tl.constexpr, W: tl.constexpr,
                     SIGNS: tl.constexpr):
        """One half tile's epilogue of the forward: post, and pre or (SIGNS) its signs."""
        if SIGNS:
            _store_signs(signs_ptr, h, om + tl.arange(0, BM), on, M, N, BM, W)
        else:
            pre_desc.store([om, on], h.to(pre_desc.dtype))
        post_desc.store([om, on], _leaky_sq(h).to(post_desc.dtype))

    @triton.jit
    def _act_grad_half(h, act_desc, signs_ptr, om, on, M, N, BM: tl.constexpr, W: tl.constexpr, SIGNS: tl.constexpr):
        """One half tile's epilogue of the backward: h ⊙ phi'(pre), from pre or (SIGNS) from post and the signs."""
        act = act_desc.load([om, on]).to(tl.float32)
        if SIGNS:
            return h * _slope_from_post(act, _load_signs(signs_ptr, om + tl.arange(0, BM), on, M, N, BM, W))
        return h * _leaky_sq_slope(act)

    @triton.jit
    def _mlp_act_grad_persistent(g_desc, w_desc, act_desc, dpre_desc, signs_ptr, M, N, K: tl.constexpr,
                                 BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP_M: tl.constexpr,
                                 PROGRAMS: tl.constexpr, SIGNS: tl.constexpr, UPCAST: tl.constexpr):
        """_mlp_act_grad_kernel over tiles PROGRAMS apart; descriptors: G [BM, BK], W_down [BK, BN], act (pre, or
        post with SIGNS) and dPre [BM, BN/2] (act through TMA too: read by pointers, the pipeliner gave it
        num_stages buffers of its own)."""
        num_tiles = tl.cdiv(M, BM) * tl.cdiv(N, BN)
        for tile in tl.range(tl.program_id(0), num_tiles, PROGRAMS, flatten=True):
            pid_m, pid_n = _mlp_tile_ids(tile, M, N, BM, BN, GROUP_M)
            om = pid_m * BM
            on = pid_n * BN
            acc = _mlp_tile_acc(g_desc, w_desc, om, on, K, BM, BN, BK, False, UPCAST)
            h0, h1 = _mlp_halves(acc, BM, BN)
            d0 = _act_grad_half(h0, act_desc, signs_ptr, om, on, M, N, BM, BN // 2, SIGNS)
            dpre_desc.store([om, on], d0.to(dpre_desc.dtype))
            d1 = _act_grad_half(h1, act_desc, signs_ptr, om, on + BN // 2, M, N, BM, BN // 2, SIGNS)
            dpre_desc.store([om, on + BN // 2], d1.to(dpre_desc.dtype))

    from triton.tools.tensor_descriptor import TensorDescriptor

def _mlp_tiles(N: int, K: int, which: str = "up") -> dict | None:
    """The launch configuration of kernel `which` (up, grad) for hidden width N and model width K, or None where
    the tiles do not fit (Triton tiles are powers of two >= 16 that must divide the widths): the torch math then.
    The persistent kernels store half tiles, so below BN = 32 the pointer kernels run instead."""
    tile = _MLP[which]
    cfg = dict(tile, BN=min(tile["BN"], N), BK=min(tile["BK"], K))
    for size, width in ((cfg["BN"], N), (cfg["BK"], K)):
        if size < 16 or size & (size - 1) or width % size:
            return None
    cfg["persistent"] = cfg["persistent"] if cfg["BN"] >= 32 else 0
    return cfg


def mlp_descriptor_blocks(which: str, cfg: dict) -> list[list[int]]:
    """Block shapes of the persistent kernel's TMA descriptors, in argument order (the A operand, the B operand,
    the activations, the output): one place for the launch and for the test that compiles the kernels for sm_90."""
    BM, BN, BK = cfg["BM"], cfg["BN"], cfg["BK"]
    if which == "up":  # X (M, K), W_up (N, K), pre, post
        return [[BM, BK], [BN, BK], [BM, BN // 2], [BM, BN // 2]]
    return [[BM, BK], [BK, BN], [BM, BN // 2], [BM, BN // 2]]  # dOut (M, K), W_down (K, N), pre or post, dPre


def _mlp_programs(device: torch.device, tiles: int, per_sm: int = 1) -> int:
    """per_sm programs per SM (the SMs: 3 under the interpreter, so that each walks several tiles), at most one
    per tile."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 3
    return min(per_sm * sms, tiles)


def _tma_ok(t: torch.Tensor) -> bool:
    """A TMA descriptor needs a 16-byte aligned base and row stride; views that are not take the pointer kernels."""
    return t.data_ptr() % 16 == 0 and t.stride(0) * t.element_size() % 16 == 0


def _mlp_launch(which: str, tensors: list[torch.Tensor | None], signs: torch.Tensor | None, N: int) -> None:
    """Kernel `which` on its four tensors in argument order (mlp_descriptor_blocks; None: one it does not touch,
    pre when `signs` holds its signs) and the packed signs, if any."""
    a, b, _, out = tensors
    M, K = a.shape
    cfg = dict(_mlp_tiles(N, K, which))
    tiles = triton.cdiv(M, cfg["BM"]) * (N // cfg["BN"])
    # Triton's interpreter multiplies bf16 operands of tl.dot as their raw uint16 bit patterns (triton#11584,
    # 3.6 to 3.8), so there the operands are widened first; exact, as on the GPU (bf16 products, fp32 sums).
    # On a GPU UPCAST is False and the branch is compiled out.
    per_sm = cfg.pop("persistent")
    flags = dict(SIGNS=signs is not None, UPCAST=_TRITON_INTERPRETED, **cfg)
    if per_sm and all(_tma_ok(t) for t in tensors if t is not None):
        blocks = mlp_descriptor_blocks(which, cfg)
        descs = [t if t is None else TensorDescriptor.from_tensor(t, blk) for t, blk in zip(tensors, blocks)]
        programs = _mlp_programs(a.device, tiles, per_sm)
        kernel = _mlp_up_act_persistent if which == "up" else _mlp_act_grad_persistent
        kernel[(programs,)](*descs, signs, M, N, K, PROGRAMS=programs, **flags)
        return
    kernel = _mlp_up_act_kernel if which == "up" else _mlp_act_grad_kernel
    kernel[(tiles,)](*tensors, signs, M, N, K, a.stride(0), b.stride(0), out.stride(0), **flags)


def _up_act_triton(x: torch.Tensor, w_up: torch.Tensor, signs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre or its packed signs, post) as _up_act_torch; x (M, K), w_up (N, K)."""
    x, w_up = x.contiguous(), w_up.contiguous()
    post = x.new_empty(x.size(0), w_up.size(0))
    keep = x.new_empty(x.size(0), w_up.size(0) // 8, dtype=torch.uint8) if signs else torch.empty_like(post)
    _mlp_launch("up", [x, w_up, None if signs else keep, post], keep if signs else None, w_up.size(0))
    return keep, post


def _act_grad_triton(g: torch.Tensor, w_down: torch.Tensor, keep: torch.Tensor, post: torch.Tensor,
                     signs: bool = False) -> torch.Tensor:
    """dPre as _act_grad_torch."""
    g, w_down, post = g.contiguous(), w_down.contiguous(), post.contiguous()
    act = post if signs else keep.contiguous()
    dpre = torch.empty_like(post)
    _mlp_launch("grad", [g, w_down, act, dpre], keep.contiguous() if signs else None, post.size(1))
    return dpre


def pack_signs(pre: torch.Tensor) -> torch.Tensor:
    """(M, ceil(N/8)) uint8 whose bit c % 8 of byte c // 8 in row m says pre[m, c] > 0 (the Triton kernels' layout)."""
    bits = F.pad((pre > 0).to(torch.uint8), (0, -pre.size(1) % 8)).view(pre.size(0), -1, 8)
    return (bits << torch.arange(8, dtype=torch.uint8, device=pre.device)).sum(-1).to(torch.uint8)


def unpack_signs(signs: torch.Tensor, N: int) -> torch.Tensor:
    """pack_signs read back: (M, N) booleans."""
    bits = (signs[..., None] >> torch.arange(8, dtype=torch.uint8, device=signs.device)) & 1
    return bits.view(signs.size(0), -1)[:, :N].bool()


def _up_act_torch(x: torch.Tensor, w_up: torch.Tensor, signs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre, or with `signs` pack_signs(pre), post = leaky_relu(pre, 0.5)²) from pre in fp32."""
    pre = (x.float() @ w_up.float().t())
    keep = pack_signs(pre) if signs else pre.to(x.dtype)
    return keep, F.leaky_relu(pre, 0.5).square().to(x.dtype)


def _act_grad_torch(g: torch.Tensor, w_down: torch.Tensor, keep: torch.Tensor, post: torch.Tensor,
                    signs: bool = False) -> torch.Tensor:
    """dPre = (g·W_down) ⊙ phi'(pre): from pre (keep), or with `signs` from post and pre's signs."""
    if signs:
        r = post.float().sqrt()
        slope = torch.where(unpack_signs(keep, post.size(1)), 2.0 * r, -r)
    else:
        p = keep.float()
        slope = torch.where(p > 0, 2.0 * p, 0.5 * p)
    return ((g.float() @ w_down.float()) * slope).to(post.dtype)


def _register_mlp_ops() -> None:
    """golf::mlp_fused(x, w_up, w_down, use_triton, signs) -> (out, keep, post) and its backward op; keep is pre,
    or with `signs` (MLP_SAVE_SIGNS) its packed signs. Registered once per process (a second import of this
    file, as the tests do, reuses the first registration)."""
    if hasattr(torch.ops.golf, "mlp_fused"):
        return

    @torch.library.custom_op("golf::mlp_fused", mutates_args=())
    def mlp_fused(x: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor, use_triton: bool,
                  signs: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        use_triton = use_triton and _mlp_tiles(w_up.size(0), x.size(1)) is not None
        keep, post = (_up_act_triton if use_triton else _up_act_torch)(x, w_up, signs)
        return post @ w_down.t(), keep, post

    @mlp_fused.register_fake
    def _(x, w_up, w_down, use_triton, signs):
        M, N = x.size(0), w_up.size(0)
        keep = x.new_empty(M, -(-N // 8), dtype=torch.uint8) if signs else x.new_empty(M, N)
        return x.new_empty(M, w_down.size(0)), keep, x.new_empty(M, N)

    @torch.library.custom_op("golf::mlp_act_grad", mutates_args=())
    def mlp_act_grad(g: torch.Tensor, w_down: torch.Tensor, keep: torch.Tensor, post: torch.Tensor,
                     use_triton: bool, signs: bool) -> torch.Tensor:
        use_triton = use_triton and _mlp_tiles(post.size(1), g.size(1), "grad") is not None
        return (_act_grad_triton if use_triton else _act_grad_torch)(g, w_down, keep, post, signs)

    @mlp_act_grad.register_fake
    def _(g, w_down, keep, post, use_triton, signs):
        return torch.empty_like(post)

    def setup_context(ctx, inputs, output):
        x, w_up, w_down, use_triton, signs = inputs
        ctx.use_triton, ctx.signs = use_triton, signs
        ctx.save_for_backward(x, w_up, w_down, output[1], output[2])

    def backward(ctx, g, _g_keep, _g_post):  # keep and post are saved activations, never used downstream
        x, w_up, w_down, keep, post = ctx.saved_tensors
        dpre = torch.ops.golf.mlp_act_grad(g, w_down, keep, post, ctx.use_triton, ctx.signs)
        return dpre @ w_up, dpre.t() @ x, g.t() @ post, None, None

    mlp_fused.register_autograd(backward, setup_context=setup_context)


_register_mlp_ops()


def _auto_kernel(device: torch.device) -> str:
    """What MLP_KERNEL=auto and LOSS_KERNEL=auto pick: the Triton kernels on CUDA when Triton imports, else plain."""
    return "triton" if device.type == "cuda" and triton is not None else "plain"


def _require_triton(device: torch.device, setting: str) -> None:
    """`setting`=triton runs Triton kernels: on a CUDA device, or on CPU tensors under the interpreter."""
    if triton is None or (device.type != "cuda" and not _TRITON_INTERPRETED):
        raise RuntimeError(f"{setting}=triton needs an importable triton and a CUDA device (or TRITON_INTERPRET=1)")


def select_mlp_kernel(device: torch.device, requested: str = "auto", tile_up: str = "", tile_grad: str = "",
                      save_signs: bool = False) -> str:
    """triton / torch (the fused custom ops, Triton or torch math inside) or plain (plain ops); tile_up, tile_grad:
    the kernels' launch configurations (parse_mlp_tile; '' = default_mlp_tile for this device); save_signs:
    MLP_SAVE_SIGNS, the fused ops keep pre's signs for the backward instead of pre."""
    _MLP["signs"] = save_signs
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else None
    for which, text in (("up", tile_up), ("grad", tile_grad)):
        _MLP[which] = parse_mlp_tile(text, f"MLP_TILE_{which.upper()}", default_mlp_tile(which, cap))
    if requested == "triton":
        _require_triton(device, "MLP_KERNEL")
    name = _auto_kernel(device) if requested == "auto" else requested
    _MLP["kernel"] = name
    return name


def fused_mlp(a: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """w_down(leaky_relu(w_up(a), 0.5)²) through the fused custom op; a (..., K), w_up (N, K), w_down (K', N)."""
    x = a.reshape(-1, a.size(-1))
    out, _, _ = torch.ops.golf.mlp_fused(x, w_up, w_down, _MLP["kernel"] == "triton", _MLP["signs"])
    return out.view(*a.shape[:-1], w_down.size(0))


# ==================================================================================================
# FUSED SOFT-CAPPED LOSS
# ==================================================================================================
# The training loss is cross-entropy over z = c·tanh(logits / c) (LOGIT_SOFTCAP, §4.8). Inductor compiles it
# into reductions that loop over each 8192-wide row and evaluate the fp32 tanh in each pass: 25 ms of a 706 ms
# step on an H100 (13.4 forward, 12.1 backward; benchmarks/README.md), at about 1 TB/s. Here the custom op
# golf::softcap_ce streams tiles of ROWS × BLOCK_V bf16 logits through two Triton kernels. The soft cap bounds every
# z to [−c, c], so the forward sums e^z in fp32 without a running maximum (V·e^c fits for c <= LOSS_TRITON_MAX_CAP)
# in one reduction per row and reads the target's logit alone: lse and the nll out. The backward reads the logits
# once more and writes dlogits = g·(softmax(z) − onehot)·(1 − t²), elementwise over a 2-D grid of tiles.
# LOSS_KERNEL: auto (default: triton on CUDA when importable and c <= LOSS_TRITON_MAX_CAP, else plain), plain
# (Inductor's), triton, torch (the same custom ops with torch math inside). LOSS_TILE_FWD / LOSS_TILE_BWD set each
# kernel's launch (ROWS,BLOCK_V,num_warps; read when the op runs, so no compiled graph changes).
# On an H100 (benchmarks/README.md, sixth and ninth sessions): 2.92 ms forward and backward a micro-step against
# Inductor's 3.95. The first form of these kernels, one program per row of 16 warps with a running maximum, took
# 3.65 (its forward 1.40 ms where this one takes 0.63). In training this form gave +0.6 % tokens/s before looping
# against the first, and its 100 steps' losses drift from plain's as every kernel change's do (mean |Δ| 0.012;
# the first form 0.010, plain against a rerun of itself 0.0075). The head's matmul and the loss in one op was
# tried and trained no faster (seventh session), so it is not here.

LOSS_TRITON_MAX_CAP = 60.0  # e^60 · 2^20 < 3.4e38 and e^-60 > 1.2e-38: no overflow, no vanishing sum
LOSS_TILE_KEYS = ("ROWS", "BLOCK_V", "num_warps")
# the fastest of the loss check's sweep on an H100 (forward of 12 launches, backward of 12; ninth session)
_LOSS_TILE_DEFAULT = {"fwd": dict(zip(LOSS_TILE_KEYS, (1, 1024, 4))), "bwd": dict(zip(LOSS_TILE_KEYS, (1, 4096, 8)))}
_LOSS = {"kernel": "plain", **_LOSS_TILE_DEFAULT}


def parse_loss_tile(text: str, which: str) -> dict:
    """LOSS_TILE_FWD / LOSS_TILE_BWD (which: fwd, bwd): '' (the built-in launch) or 'ROWS,BLOCK_V,num_warps'."""
    name = f"LOSS_TILE_{which.upper()}"
    if not text:
        return dict(_LOSS_TILE_DEFAULT[which])
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        vals = []
    pow2 = lambda v: v > 0 and v & (v - 1) == 0
    if not (len(vals) == 3 and all(pow2(v) for v in vals) and vals[0] <= 64 and 16 <= vals[1] <= 16384
            and vals[0] * vals[1] <= 16384 and vals[2] <= 16):
        raise ValueError(f"{name}={text!r} must be ROWS,BLOCK_V,num_warps: powers of two, ROWS <= 64, "
                         "BLOCK_V 16-16384, ROWS·BLOCK_V <= 16384, num_warps <= 16 (e.g. 1,1024,4)")
    return dict(zip(LOSS_TILE_KEYS, vals))


if triton is not None:
    @triton.jit
    def _tanh_log2(x, cap):
        """(t, t·c·log2 e) with t = tanh(x / c) through exp2 (the SFU's own exp; to ~1e-7 absolute) and the
        divisions by c folded into one constant per program: t, and the exponent of e^z in base 2."""
        e = tl.exp2((-2.0 * 1.4426950408889634 / cap) * tl.abs(x))
        t = (1.0 - e) / (1.0 + e)
        t = tl.where(x < 0, -t, t)
        return t, t * (cap * 1.4426950408889634)

    @triton.jit
    def _softcap_ce_fwd_kernel(x_ptr, y_ptr, nll_ptr, lse_ptr, N, sx, cap, V: tl.constexpr, ROWS: tl.constexpr,
                               BLOCK_V: tl.constexpr, EVEN: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        rok = rows < N
        base = x_ptr + rows.to(tl.int64) * sx
        acc = tl.zeros((ROWS, BLOCK_V), dtype=tl.float32)
        for c0 in tl.range(0, V, BLOCK_V):
            cols = c0 + tl.arange(0, BLOCK_V)
            ptrs = base[:, None] + cols[None, :]
            if EVEN:
                _, z2 = _tanh_log2(tl.load(ptrs).to(tl.float32), cap)
                acc += tl.exp2(z2)
            else:
                ok = rok[:, None] & (cols < V)[None, :]
                _, z2 = _tanh_log2(tl.load(ptrs, mask=ok, other=0.0).to(tl.float32), cap)
                acc += tl.where(ok, tl.exp2(z2), 0.0)
        lse = tl.log(tl.sum(acc, 1))  # |z| <= cap: no running maximum (LOSS_TRITON_MAX_CAP)
        y = tl.load(y_ptr + rows, mask=rok, other=0)
        ty, _ = _tanh_log2(tl.load(base + y, mask=rok, other=0.0).to(tl.float32), cap)
        tl.store(nll_ptr + rows, lse - cap * ty, mask=rok)
        tl.store(lse_ptr + rows, lse, mask=rok)

    @triton.jit
    def _softcap_ce_bwd_kernel(g_ptr, x_ptr, y_ptr, lse_ptr, dx_ptr, N, sx, sdx, cap, V: tl.constexpr,
                               ROWS: tl.constexpr, BLOCK_V: tl.constexpr, EVEN: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
        rok = rows < N
        r64 = rows.to(tl.int64)
        ok = rok[:, None] & (cols < V)[None, :]
        if EVEN:
            x = tl.load(x_ptr + r64[:, None] * sx + cols[None, :]).to(tl.float32)
        else:
            x = tl.load(x_ptr + r64[:, None] * sx + cols[None, :], mask=ok, other=0.0).to(tl.float32)
        t, z2 = _tanh_log2(x, cap)
        lse2 = tl.load(lse_ptr + rows, mask=rok, other=0.0) * 1.4426950408889634
        y = tl.load(y_ptr + rows, mask=rok, other=0)
        g = tl.load(g_ptr + rows, mask=rok, other=0.0)
        p = tl.exp2(z2 - lse2[:, None])
        dz = p - tl.where(cols[None, :] == y[:, None], 1.0, 0.0)
        dx = (g[:, None] * dz * (1.0 - t * t)).to(dx_ptr.dtype.element_ty)
        if EVEN:
            tl.store(dx_ptr + r64[:, None] * sdx + cols[None, :], dx)
        else:
            tl.store(dx_ptr + r64[:, None] * sdx + cols[None, :], dx, mask=ok)


def _loss_tile(which: str, N: int, V: int) -> dict:
    """The launch of kernel `which` (fwd, bwd) for N rows of V logits: its tile, warps, and EVEN when the tiles
    cover the logits exactly (no masks)."""
    rows, block, warps = (_LOSS[which][k] for k in LOSS_TILE_KEYS)
    return {"ROWS": rows, "BLOCK_V": block, "num_warps": warps, "EVEN": N % rows == 0 and V % block == 0}


def _check_cap(cap: float) -> None:
    if not 0 < cap <= LOSS_TRITON_MAX_CAP:  # a larger e^c could overflow the sum that has no running maximum
        raise ValueError(f"the Triton loss needs 0 < LOGIT_SOFTCAP <= {LOSS_TRITON_MAX_CAP}, not {cap}")


def _softcap_ce_triton(x: torch.Tensor, y: torch.Tensor, cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check_cap(cap)
    N, V = x.shape
    nll = x.new_empty(N, dtype=torch.float32)
    lse = torch.empty_like(nll)
    launch = _loss_tile("fwd", N, V)
    _softcap_ce_fwd_kernel[(triton.cdiv(N, launch["ROWS"]),)](x, y, nll, lse, N, x.stride(0), cap, V=V, **launch)
    return nll, lse


def _softcap_ce_bwd_triton(g, x, y, lse, cap: float) -> torch.Tensor:
    _check_cap(cap)
    N, V = x.shape
    dx = torch.empty_like(x)
    launch = _loss_tile("bwd", N, V)
    grid = (triton.cdiv(N, launch["ROWS"]), triton.cdiv(V, launch["BLOCK_V"]))
    _softcap_ce_bwd_kernel[grid](g.contiguous(), x, y, lse, dx, N, x.stride(0), dx.stride(0), cap, V=V, **launch)
    return dx


def _softcap_ce_torch(x: torch.Tensor, y: torch.Tensor, cap: float) -> tuple[torch.Tensor, torch.Tensor]:
    z = cap * torch.tanh(x.float() / cap)
    lse = torch.logsumexp(z, -1)
    return lse - z.gather(1, y[:, None]).squeeze(1), lse


def _softcap_ce_bwd_torch(g, x, y, lse, cap: float) -> torch.Tensor:
    t = torch.tanh(x.float() / cap)
    p = torch.exp(cap * t - lse[:, None])
    dz = p.scatter_add(1, y[:, None], p.new_full((y.numel(), 1), -1.0))  # softmax − onehot, no (N, V) one-hot
    return (g[:, None] * dz * (1 - t * t)).to(x.dtype)


def _register_loss_ops() -> None:
    """golf::softcap_ce(logits (N, V), targets (N,), cap, use_triton) -> (nll (N,), lse (N,)) fp32, and its
    backward op, with fake impls and autograd, so torch.compile(fullgraph=True) calls them."""
    if hasattr(torch.ops.golf, "softcap_ce"):
        return

    @torch.library.custom_op("golf::softcap_ce", mutates_args=())
    def softcap_ce(x: torch.Tensor, y: torch.Tensor, cap: float, use_triton: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return (_softcap_ce_triton if use_triton else _softcap_ce_torch)(x.contiguous(), y.contiguous(), cap)

    @softcap_ce.register_fake
    def _(x, y, cap, use_triton):
        return x.new_empty(x.size(0), dtype=torch.float32), x.new_empty(x.size(0), dtype=torch.float32)

    @torch.library.custom_op("golf::softcap_ce_bwd", mutates_args=())
    def softcap_ce_bwd(g: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lse: torch.Tensor, cap: float,
                       use_triton: bool) -> torch.Tensor:
        return (_softcap_ce_bwd_triton if use_triton else _softcap_ce_bwd_torch)(g, x.contiguous(), y.contiguous(), lse, cap)

    @softcap_ce_bwd.register_fake
    def _(g, x, y, lse, cap, use_triton):
        return torch.empty_like(x)

    def setup_context(ctx, inputs, output):
        x, y, cap, use_triton = inputs
        ctx.cap, ctx.use_triton = cap, use_triton
        ctx.save_for_backward(x, y, output[1])

    def backward(ctx, g_nll, _g_lse):  # lse is saved for the backward, never used downstream
        x, y, lse = ctx.saved_tensors
        return torch.ops.golf.softcap_ce_bwd(g_nll, x, y, lse, ctx.cap, ctx.use_triton), None, None, None

    softcap_ce.register_autograd(backward, setup_context=setup_context)


_register_loss_ops()


def select_loss_kernel(device: torch.device, requested: str = "auto", tile_fwd: str = "", tile_bwd: str = "",
                       cap: float = 30.0) -> str:
    """plain (Inductor's), triton or torch (the fused custom ops, Triton or torch math inside); auto: triton on
    CUDA when Triton is importable and the soft cap `cap` is within LOSS_TRITON_MAX_CAP, else plain. tile_fwd,
    tile_bwd: the Triton kernels' launches (parse_loss_tile), read when the op runs: they change no compiled graph."""
    if requested == "triton":
        _require_triton(device, "LOSS_KERNEL")
    name = _auto_kernel(device) if requested == "auto" else requested
    if requested == "auto" and cap > LOSS_TRITON_MAX_CAP:
        name = "plain"
    _LOSS.update(kernel=name, fwd=parse_loss_tile(tile_fwd, "fwd"), bwd=parse_loss_tile(tile_bwd, "bwd"))
    return name


def softcap_ce_mean(logits: torch.Tensor, targets: torch.Tensor, cap: float) -> torch.Tensor:
    """Mean cross-entropy of the soft-capped logits (bf16 (..., V)) through golf::softcap_ce."""
    nll, _ = torch.ops.golf.softcap_ce(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), cap,
                                       _LOSS["kernel"] == "triton")
    return nll.mean()


# ==================================================================================================
# FUSED Q/K NORM AND ROPE
# ==================================================================================================
# Each attention layer normalizes q and k per head (RMSNorm over head_dim), rotates the first ROPE_DIMS of each
# head (partial RoPE, §4.4) and scales q by q_gain. Inductor fuses that into one kernel each way, but runs them at
# about 2.2 TB/s, the furthest of its kernels from their bytes on an H100 (ninth session, benchmarks/README.md:
# forward 11.6 ms a step against 8.3 at the copy bandwidth, backward 14.3 against 10.9, with their smaller
# variants about 13 ms above the floor in all). Here the custom op golf::qk_norm_rope runs both tensors through two
# Triton kernels that stream tiles of ROWS heads × head_dim. The rotated dimensions' pairs (d and d + half) are
# two narrow loads (ROWS × half) of lines the row's own load has just brought in, so no lanes are shuffled; the
# angles come from the rotary's own cos/sin table (bf16, T × half, as the plain path rounds them). The backward
# rotates the gradient back (the transposed rotation), applies RMSNorm's backward and writes each row's
# Σ dOut·rope(norm(q)) for q_gain's gradient, which torch sums per head.
# QK_KERNEL: auto (default: triton on CUDA when Triton imports and head_dim is a power of two, else plain), plain
# (Inductor's fused ops), triton, torch (the same custom op with torch math inside).
# On an H100 (benchmarks/README.md, tenth session) the kernels move their bytes at 2.76 TB/s forward and 2.58
# backward (a device copy: 3.0), 9.2 + 14.2 ms a step, while Inductor's kernels fell from 191 ms a step to 150
# (ninth and tenth sessions' profiles). In training: +1.9 % tokens/s before looping and +2.0 % with it; 100
# steps' losses drift from plain's by a mean |Δ| of 0.0094, where plain drifts 0.0090 from a rerun of itself.

# Launch of each kernel: ROWS head rows (of head_dim) a program. 16 rows of 4 warps keep the backward at 92
# registers a thread (ptxas for sm_90), so five programs fit an SM; the GPU check (kernel_checks.py qk) times others.
_QK_TILE_DEFAULT = {"fwd": {"ROWS": 16, "num_warps": 4}, "bwd": {"ROWS": 16, "num_warps": 4}}
_QK = {"kernel": "plain", **copy.deepcopy(_QK_TILE_DEFAULT)}
_RMS_EPS = float(torch.finfo(torch.float32).eps)  # F.rms_norm's eps=None: the epsilon of its fp32 math


if triton is not None:
    @triton.jit
    def _rope_angles(cos_ptr, sin_ptr, rows, rok, H, T, HALF: tl.constexpr, BH: tl.constexpr):
        """cos and sin of a tile of head rows' angles ((ROWS, BH); rows are (token, head) flattened, token % T their
        position), the rotated half's columns j < HALF, and which of them exist."""
        j = tl.arange(0, BH)
        ok = rok[:, None] & (j < HALF)[None, :]
        at = ((rows // H) % T)[:, None] * HALF + j[None, :]
        c = tl.load(cos_ptr + at, mask=ok, other=0.0).to(tl.float32)
        return c, tl.load(sin_ptr + at, mask=ok, other=0.0).to(tl.float32), j, ok

    @triton.jit
    def _qk_norm_rope_fwd_kernel(x_ptr, cos_ptr, sin_ptr, gain_ptr, out_ptr, N, H, T, eps, D: tl.constexpr,
                                 HALF: tl.constexpr, BH: tl.constexpr, HAS_GAIN: tl.constexpr, ROWS: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, D)
        rok = rows < N
        off = rows.to(tl.int64)[:, None] * D
        x = tl.load(x_ptr + off + cols[None, :], mask=rok[:, None], other=0.0).to(tl.float32)
        scale = tl.rsqrt(tl.sum(x * x, 1) / D + eps)[:, None]
        if HAS_GAIN:
            scale = scale * tl.load(gain_ptr + rows % H, mask=rok, other=0.0).to(tl.float32)[:, None]
        c, s, j, ok = _rope_angles(cos_ptr, sin_ptr, rows, rok, H, T, HALF, BH)
        u = tl.load(x_ptr + off + j[None, :], mask=ok, other=0.0).to(tl.float32)  # the rotated half's pairs:
        w = tl.load(x_ptr + off + HALF + j[None, :], mask=ok, other=0.0).to(tl.float32)  # lines x just loaded
        dt = out_ptr.dtype.element_ty
        tl.store(out_ptr + off + cols[None, :], (x * scale).to(dt), mask=rok[:, None] & (cols >= 2 * HALF)[None, :])
        tl.store(out_ptr + off + j[None, :], ((u * c + w * s) * scale).to(dt), mask=ok)
        tl.store(out_ptr + off + HALF + j[None, :], ((w * c - u * s) * scale).to(dt), mask=ok)

    @triton.jit
    def _qk_norm_rope_bwd_kernel(g_ptr, x_ptr, cos_ptr, sin_ptr, gain_ptr, dx_ptr, dot_ptr, N, H, T, eps,
                                 D: tl.constexpr, HALF: tl.constexpr, BH: tl.constexpr, HAS_GAIN: tl.constexpr,
                                 ROWS: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, D)
        rok = rows < N
        off = rows.to(tl.int64)[:, None] * D
        rest = rok[:, None] & (cols >= 2 * HALF)[None, :]  # the columns RoPE leaves alone
        x = tl.load(x_ptr + off + cols[None, :], mask=rok[:, None], other=0.0).to(tl.float32)
        g = tl.load(g_ptr + off + cols[None, :], mask=rest, other=0.0).to(tl.float32)
        r = tl.rsqrt(tl.sum(x * x, 1) / D + eps)
        c, s, j, ok = _rope_angles(cos_ptr, sin_ptr, rows, rok, H, T, HALF, BH)
        xu = tl.load(x_ptr + off + j[None, :], mask=ok, other=0.0).to(tl.float32)
        xw = tl.load(x_ptr + off + HALF + j[None, :], mask=ok, other=0.0).to(tl.float32)
        gu = tl.load(g_ptr + off + j[None, :], mask=ok, other=0.0).to(tl.float32)
        gw = tl.load(g_ptr + off + HALF + j[None, :], mask=ok, other=0.0).to(tl.float32)
        if HAS_GAIN:  # q_gain's gradient per row: Σ_d dOut·rope(norm(x)); torch sums the rows of each head
            dot = tl.sum(g * x, 1) + tl.sum(gu * (xu * c + xw * s) + gw * (xw * c - xu * s), 1)
            tl.store(dot_ptr + rows, dot * r, mask=rok)
            gain = tl.load(gain_ptr + rows % H, mask=rok, other=0.0).to(tl.float32)[:, None]
            g, gu, gw = g * gain, gu * gain, gw * gain
        du, dw = gu * c - gw * s, gu * s + gw * c  # the transposed rotation
        mean = (tl.sum(g * x, 1) + tl.sum(du * xu + dw * xw, 1)) * r / D  # mean(dn·n), n = x·r
        rr = (r * r * mean)[:, None]
        r = r[:, None]
        dt = dx_ptr.dtype.element_ty
        tl.store(dx_ptr + off + cols[None, :], (r * g - rr * x).to(dt), mask=rest)
        tl.store(dx_ptr + off + j[None, :], (r * du - rr * xu).to(dt), mask=ok)
        tl.store(dx_ptr + off + HALF + j[None, :], (r * dw - rr * xw).to(dt), mask=ok)


def _qk_launch(x: torch.Tensor, cos: torch.Tensor, which: str) -> dict:
    """Constexprs and grid of one call of kernel `which` (fwd, bwd) over x (B, T, H, D) with a (T, half) table."""
    B, T, H, D = x.shape
    N, half = B * T * H, cos.size(-1)
    rows = _QK[which]["ROWS"]
    return {"grid": (triton.cdiv(N, rows),), "args": (N, H, T, _RMS_EPS),
            "kw": {"D": D, "HALF": half, "BH": triton.next_power_of_2(max(half, 1)), "ROWS": rows,
                   "num_warps": _QK[which]["num_warps"]}}


def _qk_norm_rope_triton(q, k, gain, cos, sin):
    outs = []
    for x, has_gain in ((q, True), (k, False)):
        out, launch = torch.empty_like(x), _qk_launch(x, cos, "fwd")
        _qk_norm_rope_fwd_kernel[launch["grid"]](x, cos, sin, gain, out, *launch["args"], HAS_GAIN=has_gain,
                                                 **launch["kw"])
        outs.append(out)
    return tuple(outs)


def _qk_norm_rope_bwd_triton(gq, gk, q, k, gain, cos, sin):
    grads, dot = [], q.new_empty(q.shape[:3].numel(), dtype=torch.float32)  # written by q's launch alone
    for g, x, has_gain in ((gq, q, True), (gk, k, False)):
        dx, launch = torch.empty_like(x), _qk_launch(x, cos, "bwd")
        _qk_norm_rope_bwd_kernel[launch["grid"]](g.contiguous(), x, cos, sin, gain, dx, dot, *launch["args"],
                                                 HAS_GAIN=has_gain, **launch["kw"])
        grads.append(dx)
    return grads[0], grads[1], dot.view(-1, q.size(2)).sum(0).to(gain.dtype)


def rope_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, D) with its first 2·half dimensions rotated by the (T, half) angles (partial RoPE)."""
    half = cos.size(-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    u, w, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    return torch.cat((u * cos + w * sin, -u * sin + w * cos, rest), dim=-1)


def _qk_norm_rope_torch(q, k, gain, cos, sin):
    c, s = cos.float(), sin.float()
    norm = lambda x: x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + _RMS_EPS)
    qo = rope_rotate(norm(q), c, s) * gain.float()[:, None]
    return qo.to(q.dtype), rope_rotate(norm(k), c, s).to(k.dtype)


def _qk_norm_rope_bwd_torch(gq, gk, q, k, gain, cos, sin):
    c, s = cos.float(), sin.float()

    def back(g, x):
        xf = x.float()
        r = torch.rsqrt(xf.square().mean(-1, keepdim=True) + _RMS_EPS)
        n, dn = xf * r, rope_rotate(g, c, -s)  # rotating by −θ is the transposed rotation
        return (r * (dn - n * (dn * n).mean(-1, keepdim=True))).to(x.dtype), n
    dq, nq = back(gq.float() * gain.float()[:, None], q)
    dgain = (gq.float() * rope_rotate(nq, c, s)).sum((0, 1, 3))
    return dq, back(gk.float(), k)[0], dgain.to(gain.dtype)


def _register_qk_ops() -> None:
    """golf::qk_norm_rope(q (B, T, H, D), k (B, T, Hkv, D), gain (H,), cos, sin (T, half), use_triton) ->
    (rope(rms_norm(q))·gain, rope(rms_norm(k))), and its backward op, with fake impls and autograd."""
    if hasattr(torch.ops.golf, "qk_norm_rope"):
        return

    @torch.library.custom_op("golf::qk_norm_rope", mutates_args=())
    def qk_norm_rope(q: torch.Tensor, k: torch.Tensor, gain: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     use_triton: bool) -> tuple[torch.Tensor, torch.Tensor]:
        fn = _qk_norm_rope_triton if use_triton else _qk_norm_rope_torch
        return fn(q.contiguous(), k.contiguous(), gain.contiguous(), cos.contiguous(), sin.contiguous())

    @qk_norm_rope.register_fake
    def _(q, k, gain, cos, sin, use_triton):
        return torch.empty_like(q), torch.empty_like(k)

    @torch.library.custom_op("golf::qk_norm_rope_bwd", mutates_args=())
    def qk_norm_rope_bwd(gq: torch.Tensor, gk: torch.Tensor, q: torch.Tensor, k: torch.Tensor, gain: torch.Tensor,
                         cos: torch.Tensor, sin: torch.Tensor, use_triton: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fn = _qk_norm_rope_bwd_triton if use_triton else _qk_norm_rope_bwd_torch
        return fn(gq, gk, q.contiguous(), k.contiguous(), gain.contiguous(), cos.contiguous(), sin.contiguous())

    @qk_norm_rope_bwd.register_fake
    def _(gq, gk, q, k, gain, cos, sin, use_triton):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(gain)

    def setup_context(ctx, inputs, output):
        q, k, gain, cos, sin, use_triton = inputs
        ctx.use_triton = use_triton
        ctx.save_for_backward(q, k, gain, cos, sin)

    def backward(ctx, gq, gk):
        dq, dk, dgain = torch.ops.golf.qk_norm_rope_bwd(gq, gk, *ctx.saved_tensors, ctx.use_triton)
        return dq, dk, dgain, None, None, None

    qk_norm_rope.register_autograd(backward, setup_context=setup_context)


_register_qk_ops()


def qk_triton_fits(head_dim: int) -> bool:
    """Whether the q/k kernels take this head_dim: a power of two, one tile row (tl.arange) per head."""
    return head_dim > 0 and head_dim & (head_dim - 1) == 0


def select_qk_kernel(device: torch.device, requested: str = "auto", head_dim: int = 64) -> str:
    """plain (Inductor's fused ops), triton or torch (golf::qk_norm_rope, Triton or torch math inside); auto:
    triton on CUDA when Triton imports and head_dim is a power of two (one tile row per head), else plain."""
    pow2 = qk_triton_fits(head_dim)
    if requested == "triton":
        _require_triton(device, "QK_KERNEL")
        if not pow2:
            raise ValueError(f"QK_KERNEL=triton needs a power-of-two head_dim (MODEL_DIM / NUM_HEADS), not {head_dim}")
    name = _auto_kernel(device) if requested == "auto" else requested
    if requested == "auto" and not pow2:
        name = "plain"
    _QK["kernel"] = name
    return name


def qk_norm_rope(q: torch.Tensor, k: torch.Tensor, gain: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """(rope(rms_norm(q))·gain, rope(rms_norm(k))) through golf::qk_norm_rope; q, k (B, T, heads, head_dim)."""
    return torch.ops.golf.qk_norm_rope(q, k, gain, cos, sin, _QK["kernel"] == "triton")


# ==================================================================================================
# FUSED XSA
# ==================================================================================================
# XSA (§4.3: every layer, XSA_LAST_N) takes from each head's attention output y its component along the
# normalized value vector of the head's KV group: y - (y·n)n, n = v / max(|v|, 1e-12) (F.normalize). Inductor
# splits it into the normalization, the projection, and two or three backward kernels (the gradients of y and
# of n, normalize's backward, the sum over the heads of a group, the add to attention's dv). On an H100 the kernels
# whose names say so took 29-37 ms of a 647 ms step before looping (nineteenth session, benchmarks/README.md),
# where its tensors read and written once, the add included, need about 24 at a device copy's 3.0 TB/s. Here the
# custom op golf::xsa reads each token's KV row (v and the g heads of its group) once each way: the forward writes
# the projected heads, the backward their gradient (go - (go·n)n) and v's (the heads' -Σ (y·n)go + (go·n)y through
# normalize's backward, which attention's dv then gets added to). The backward recomputes n from v, so nothing is
# saved but y and v, which attention keeps.
# XSA_KERNEL: plain (default: Inductor's fused ops), auto (triton on CUDA when Triton imports and head_dim is a
# power of two, else plain), triton, torch (the same custom op with torch math inside). A candidate until an
# H100 has timed it (kernel_session's PENDING).

# Launch of each kernel: ROWS kv rows (a token's v and its g heads) a program. The backward holds twice the
# forward's tiles, so it takes twice the warps: 72 and 74 registers a thread (ptxas for sm_90, 16 rows, the
# record's groups of two heads of 64); the GPU check (kernel_checks.py xsa) times others.
_XSA_TILE_DEFAULT = {"fwd": {"ROWS": 16, "num_warps": 4}, "bwd": {"ROWS": 16, "num_warps": 8}}
_XSA = {"kernel": "plain", **copy.deepcopy(_XSA_TILE_DEFAULT)}
_XSA_EPS = 1e-12  # F.normalize's default eps: |v| below it divides by eps instead


if triton is not None:
    @triton.jit
    def _xsa_unit(v_ptr, rows, rok, cols, eps, D: tl.constexpr):
        """A tile of kv rows' n = v / max(|v|, eps) (ROWS, D) in fp32, and that divisor (ROWS, 1)."""
        v = tl.load(v_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], mask=rok[:, None], other=0.0)
        v = v.to(tl.float32)
        den = tl.maximum(tl.sqrt(tl.sum(v * v, 1)), eps)[:, None]
        return v / den, den

    @triton.jit
    def _xsa_fwd_kernel(y_ptr, v_ptr, out_ptr, N, eps, D: tl.constexpr, G: tl.constexpr, ROWS: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # kv rows: (token, kv head) flattened
        cols = tl.arange(0, D)
        rok = rows < N
        n, _ = _xsa_unit(v_ptr, rows, rok, cols, eps, D)
        dt = out_ptr.dtype.element_ty
        for i in tl.static_range(G):  # the group's heads follow each other: head row = kv row · G + i
            off = (rows.to(tl.int64) * G + i)[:, None] * D + cols[None, :]
            y = tl.load(y_ptr + off, mask=rok[:, None], other=0.0).to(tl.float32)
            tl.store(out_ptr + off, (y - tl.sum(y * n, 1)[:, None] * n).to(dt), mask=rok[:, None])

    @triton.jit
    def _xsa_bwd_kernel(go_ptr, y_ptr, v_ptr, dy_ptr, dv_ptr, N, eps, D: tl.constexpr, G: tl.constexpr,
                        ROWS: tl.constexpr):
        rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        cols = tl.arange(0, D)
        rok = rows < N
        n, den = _xsa_unit(v_ptr, rows, rok, cols, eps, D)
        dn = tl.zeros_like(n)
        dt = dy_ptr.dtype.element_ty
        for i in tl.static_range(G):
            off = (rows.to(tl.int64) * G + i)[:, None] * D + cols[None, :]
            go = tl.load(go_ptr + off, mask=rok[:, None], other=0.0).to(tl.float32)
            y = tl.load(y_ptr + off, mask=rok[:, None], other=0.0).to(tl.float32)
            s, c = tl.sum(y * n, 1)[:, None], tl.sum(go * n, 1)[:, None]
            tl.store(dy_ptr + off, (go - c * n).to(dt), mask=rok[:, None])
            dn -= s * go + c * y
        # normalize's backward: (dn - (dn·n)n) / |v| where |v| > eps; dn / eps below it (n = v / eps there)
        radial = tl.where(den > eps, tl.sum(dn * n, 1)[:, None], 0.0)
        dv = (dn - radial * n) / den
        tl.store(dv_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], dv.to(dt), mask=rok[:, None])


def _xsa_launch(v: torch.Tensor, which: str) -> dict:
    """Grid and launch of kernel `which` (fwd, bwd) over v's kv rows (B, T, Hkv, D)."""
    N, rows = v.shape[:3].numel(), _XSA[which]["ROWS"]
    return {"grid": (triton.cdiv(N, rows),), "N": N,
            "kw": {"D": v.size(-1), "ROWS": rows, "num_warps": _XSA[which]["num_warps"]}}


def _xsa_triton(y, v):
    out, launch = torch.empty_like(y), _xsa_launch(v, "fwd")
    _xsa_fwd_kernel[launch["grid"]](y, v, out, launch["N"], _XSA_EPS, G=y.size(2) // v.size(2), **launch["kw"])
    return out


def _xsa_bwd_triton(go, y, v):
    dy, dv, launch = torch.empty_like(y), torch.empty_like(v), _xsa_launch(v, "bwd")
    _xsa_bwd_kernel[launch["grid"]](go, y, v, dy, dv, launch["N"], _XSA_EPS, G=y.size(2) // v.size(2),
                                    **launch["kw"])
    return dy, dv


def _xsa_groups(y, v):
    """y (B, T, H, D) as fp32 (B, T, Hkv, g, D), and n = normalize(v) as fp32 (B, T, Hkv, 1, D)."""
    B, T, H, D = y.shape
    n = F.normalize(v.float(), dim=-1, eps=_XSA_EPS)
    return y.float().view(B, T, v.size(2), H // v.size(2), D), n[:, :, :, None]


def _xsa_torch(y, v):
    yg, n = _xsa_groups(y, v)
    return (yg - (yg * n).sum(-1, keepdim=True) * n).view(y.shape).to(y.dtype)


def _xsa_bwd_torch(go, y, v):
    yg, n = _xsa_groups(y, v)
    gg = go.float().view(yg.shape)
    s, c = (yg * n).sum(-1, keepdim=True), (gg * n).sum(-1, keepdim=True)
    dn = -(s * gg + c * yg).sum(3)
    n = n[:, :, :, 0]
    den = v.float().norm(dim=-1, keepdim=True).clamp_min(_XSA_EPS)
    radial = torch.where(den > _XSA_EPS, (dn * n).sum(-1, keepdim=True), 0.0)
    return (gg - c * n[:, :, :, None]).view(y.shape).to(y.dtype), ((dn - radial * n) / den).to(v.dtype)


def _register_xsa_ops() -> None:
    """golf::xsa(y (B, T, H, D), v (B, T, Hkv, D), use_triton) -> y less its component along normalize(v) of each
    head's group, and its backward op golf::xsa_bwd, with fake impls and autograd."""
    if hasattr(torch.ops.golf, "xsa"):
        return

    @torch.library.custom_op("golf::xsa", mutates_args=())
    def xsa(y: torch.Tensor, v: torch.Tensor, use_triton: bool) -> torch.Tensor:
        return (_xsa_triton if use_triton else _xsa_torch)(y.contiguous(), v.contiguous())

    @xsa.register_fake
    def _(y, v, use_triton):
        return y.new_empty(y.shape)

    @torch.library.custom_op("golf::xsa_bwd", mutates_args=())
    def xsa_bwd(go: torch.Tensor, y: torch.Tensor, v: torch.Tensor, use_triton: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return (_xsa_bwd_triton if use_triton else _xsa_bwd_torch)(go.contiguous(), y.contiguous(), v.contiguous())

    @xsa_bwd.register_fake
    def _(go, y, v, use_triton):
        return y.new_empty(y.shape), v.new_empty(v.shape)

    def setup_context(ctx, inputs, output):
        y, v, use_triton = inputs
        ctx.use_triton = use_triton
        ctx.save_for_backward(y, v)

    def backward(ctx, go):
        dy, dv = torch.ops.golf.xsa_bwd(go, *ctx.saved_tensors, ctx.use_triton)
        return dy, dv, None

    xsa.register_autograd(backward, setup_context=setup_context)


_register_xsa_ops()


def select_xsa_kernel(device: torch.device, requested: str = "plain", head_dim: int = 64) -> str:
    """plain (Inductor's fused ops), triton or torch (golf::xsa, Triton or torch math inside); auto: triton on CUDA
    when Triton imports and head_dim is a power of two (one tile row per head), else plain."""
    if requested == "triton":
        _require_triton(device, "XSA_KERNEL")
        if not qk_triton_fits(head_dim):
            raise ValueError(f"XSA_KERNEL=triton needs a power-of-two head_dim (MODEL_DIM / NUM_HEADS), not {head_dim}")
    name = _auto_kernel(device) if requested == "auto" else requested
    if requested == "auto" and not qk_triton_fits(head_dim):
        name = "plain"
    _XSA["kernel"] = name
    return name


def xsa_plain(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """y (B, T, H, D) less each head's component along its KV group's normalize(v) (B, T, Hkv, D), as plain ops."""
    B, T, H, D = y.shape
    yg = y.view(B, T, v.size(2), H // v.size(2), D)
    vn = F.normalize(v, dim=-1).unsqueeze(3)
    return (yg - (yg * vn).sum(-1, keepdim=True) * vn).reshape(B, T, H, D)


def xsa(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """xsa_plain's result through golf::xsa where XSA_KERNEL chose it, else xsa_plain."""
    if _XSA["kernel"] == "plain":
        return xsa_plain(y, v)
    # contiguous as the op's outputs are: Inductor lays an op's output out as its input (attend's SDPA path hands y
    # over transposed); a no-op for the varlen and flash-attn-4 paths
    return torch.ops.golf.xsa(y.contiguous(), v.contiguous(), _XSA["kernel"] == "triton")


# ==================================================================================================
# MODEL
# ==================================================================================================

def layer_schedule(num_layers: int, num_loops: int, loop_start: int, loop_end: int, looping: bool):
    """(encoder, decoder) physical-layer order; with looping the segment loop_start..loop_end runs
    num_loops extra times, and the first half of the whole sequence is the encoder."""
    if looping and num_loops > 0:
        seq = (list(range(loop_start)) + list(range(loop_start, loop_end + 1)) * (num_loops + 1)
               + list(range(loop_end + 1, num_layers)))
    else:
        seq = list(range(num_layers))
    n_enc = len(seq) // 2
    return seq[:n_enc], seq[n_enc:]


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


# Attention kernels. Chosen once per process by select_attention(); `packed` calls carry cu_seqlens.
_ATTN = {"name": "sdpa", "fa3": None, "fa4": None, "varlen": None, "varlen_gqa": False, "gqa_op": False,
         "cu_trim": False}


# ATTN_CU_TRIM: one compiled graph serves every batch because the loader pads cu_seqlens to CU_PAD_COMPILED entries
# with empty trailing segments. The varlen kernels' backwards size their zero-filled fp32 dQ (and, for GQA, dK/dV)
# accumulators by the number of entries, a 128-row tile of slack each, empty ones included: at the benchmarks'
# ~780 short documents a micro-step, 1,024 entries make FA4 fill 0.94 GB a call where 0.40 would do. The custom
# ops below hand the kernels only the entries in use, counted by the loader on the host (a CPU tensor, so no
# wait on the GPU); the compiled graph keeps its one shape, since the cut happens inside the op.
# On an H100 (benchmarks/README.md, eleventh session): FA4's forward + backward of one layer at the record's shape
# (136 sequences) takes 2.07 ms with the entries in use, 2.26 with 512 entries, 2.44 with 1,024 and 2.09 with
# 1,024 cut by the op; in training on the benchmarks' data, +0.9 % tokens/s before looping and +1.2 % with it,
# losses within plain's run-to-run noise. On by default (ATTN_CU_TRIM=1).
def trim_cu(cu: torch.Tensor, cu_used: torch.Tensor | None) -> torch.Tensor:
    """cu_seqlens cut to its entries in use when ATTN_CU_TRIM is on and the caller counted them, else as given."""
    if cu_used is None or not _ATTN["cu_trim"]:
        return cu
    return cu[:min(max(int(cu_used), 2), cu.size(0))]


def _register_varlen_op(name: str, forward, backward) -> None:
    """golf::<name>(q, k, v, cu, max_seqlen, cu_used) -> (out, lse) and golf::<name>_bwd: a causal varlen
    attention kernel pair as torch.library custom ops with fake impls and autograd, so torch.compile(fullgraph=True)
    traces through them without looking inside (the kernels are launchers dynamo cannot trace).
    forward(q (T,H,D), k, v (T,Hkv,D), cu int32, max_seqlen) -> (out (T,H,D), lse (H,T) fp32);
    backward(g, q, k, v, out, lse, cu, max_seqlen) -> (dq, dk, dv), dk/dv with Hkv heads. Both get cu cut to
    the entries in use (trim_cu; cu_used: a CPU int tensor or None)."""
    if hasattr(torch.ops.golf, name):
        return

    def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_seqlen: int,
            cu_used: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return forward(q, k, v, trim_cu(cu, cu_used), max_seqlen)

    def bwd(g: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
            lse: torch.Tensor, cu: torch.Tensor, max_seqlen: int,
            cu_used: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return backward(g, q, k, v, out, lse, trim_cu(cu, cu_used), max_seqlen)

    fwd_op = torch.library.custom_op(f"golf::{name}", fwd, mutates_args=())
    bwd_op = torch.library.custom_op(f"golf::{name}_bwd", bwd, mutates_args=())
    fwd_op.register_fake(lambda q, k, v, cu, max_seqlen, cu_used=None: (
        torch.empty_like(q), q.new_empty((q.size(1), q.size(0)), dtype=torch.float32)))
    bwd_op.register_fake(lambda g, q, k, v, out, lse, cu, max_seqlen, cu_used=None: (
        torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)))

    def setup_context(ctx, inputs, output):
        q, k, v, cu, max_seqlen, cu_used = inputs
        ctx.max_seqlen = max_seqlen
        ctx.save_for_backward(q, k, v, cu, cu_used, *output)

    def grad(ctx, g, _g_lse):
        q, k, v, cu, cu_used, out, lse = ctx.saved_tensors
        return (*bwd_op(g, q, k, v, out, lse, cu, ctx.max_seqlen, cu_used), None, None, None)

    fwd_op.register_autograd(grad, setup_context=setup_context)


# golf::flash_varlen: torch's flash-2 varlen kernel called with fewer K/V heads than query heads. The kernel
# handles GQA natively (its backward sums dK/dV over each group), but torch 2.11's `varlen_attn` rejects unequal
# head counts (no `enable_gqa` before 2.12), which made us copy K/V per query head: (T, 8, 64) instead of
# (T, 4, 64) per layer, forward and backward.
def _flash2_varlen_fwd(q, k, v, cu, max_seqlen):
    out, lse = torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, max_seqlen, max_seqlen, 0.0, True, False)[:2]
    return out, lse


def _flash2_varlen_bwd(g, q, k, v, out, lse, cu, max_seqlen):
    rng = torch.zeros(2, dtype=torch.uint64, device=q.device)  # no dropout: the philox state is unused
    unused = torch.empty(0, device=q.device)
    dq, dk, dv = torch.ops.aten._flash_attention_backward(g.contiguous(), q, k, v, out, lse, cu, cu, max_seqlen,
                                                           max_seqlen, 0.0, True, rng, unused)
    return dq, dk, dv


# golf::fa4_varlen: flash-attn-4 (`flash_attn.cute`, the CuTe-DSL FlashAttention with Hopper forward and
# backward; its interface module is _ATTN["fa4"], imported by select_attention). GQA is native. The forward
# is FA4's public flash_attn_varlen_func; FA4 has no public backward, so the backward calls
# flash_attn.cute.interface._flash_attn_bwd, which is what FA4's own autograd Function calls (4.0.0b40).
# Its autograd Function is bypassed because we register our own: the custom op is what the compiler sees.
def _fa4_varlen_fwd(q, k, v, cu, max_seqlen):
    with torch.no_grad():  # FA4's autograd Function must not save tensors for a backward it will never run
        out, lse = _ATTN["fa4"].flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu,
                                                       max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen,
                                                       causal=True, return_lse=True)
    return out, lse


def _fa4_varlen_bwd(g, q, k, v, out, lse, cu, max_seqlen):
    # On sm_90 FA4's GQA backward sums the query heads' dK/dV in zero-filled fp32 buffers and converts them in
    # extra kernels. Giving it K/V repeated per query head avoids them but was slower on an H100 (2.34 ms against
    # 2.12 per layer; benchmarks/README.md), so K/V go in as they are. FA4 picks the backward's launch configuration
    # itself (FA3's for head dim 64); of 15 others swept on an H100 none was faster and most do not fit sm_90.
    return _ATTN["fa4"]._flash_attn_bwd(q, k, v, out, g.contiguous(), lse, causal=True, cu_seqlens_q=cu,
                                        cu_seqlens_k=cu, max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen)[:3]


_register_varlen_op("flash_varlen", _flash2_varlen_fwd, _flash2_varlen_bwd)
_register_varlen_op("fa4_varlen", _fa4_varlen_fwd, _fa4_varlen_bwd)


def select_attention(device: torch.device, requested: str = "auto", cu_trim: bool = True) -> str:
    """The attention kernel, by speed at the record's packed shape (fwd+bwd per layer on an H100,
    benchmarks/results/h100-kernels-1gpu-checks.json: fa4 2.10 ms, varlen_gqa 3.03, varlen 3.28). auto on
    CUDA: FA3 when importable (the records' kernel), else flash-attn-4 (golf::fa4_varlen) on Hopper or newer
    when importable, else torch's varlen flash kernel through golf::flash_varlen (varlen_gqa: K/V not copied
    for GQA); SDPA with a block-diagonal causal mask on the CPU. `varlen` forces the record's path (K/V
    repeated). cu_trim: ATTN_CU_TRIM, read by golf::fa4_varlen and golf::flash_varlen (trim_cu). Returns the
    name chosen: fa3, fa4, varlen_gqa, varlen or sdpa."""
    name = "sdpa"
    _ATTN["gqa_op"] = False
    _ATTN["cu_trim"] = cu_trim
    if device.type == "cuda" and requested == "fa4":
        name = _import_fa4(required=True)
    if device.type == "cuda" and requested in ("auto", "fa3"):
        try:
            import flash_attn_interface  # noqa: F401
            _ATTN["fa3"] = flash_attn_interface
            name = "fa3"
        except ImportError:
            if requested == "fa3":
                raise RuntimeError("ATTN_BACKEND=fa3 but flash_attn_interface is not importable")
    if name == "sdpa" and device.type == "cuda" and requested == "auto" and _sm90_or_newer(device):
        name = _import_fa4(required=False)
    if name == "sdpa" and device.type == "cuda" and requested in ("auto", "varlen", "varlen_gqa"):
        try:
            from torch.nn.attention.varlen import varlen_attn
            import inspect
            _ATTN["varlen"] = varlen_attn
            _ATTN["varlen_gqa"] = "enable_gqa" in inspect.signature(varlen_attn).parameters
            _ATTN["gqa_op"] = requested != "varlen"
            name = "varlen"
        except ImportError:
            if requested != "auto":
                raise RuntimeError(f"ATTN_BACKEND={requested} but torch.nn.attention.varlen is missing")
    _ATTN["name"] = name
    return "varlen_gqa" if name == "varlen" and (_ATTN["gqa_op"] or _ATTN["varlen_gqa"]) else name


def _import_fa4(required: bool) -> str:
    """"fa4" with flash_attn.cute imported into _ATTN, else "sdpa" (or an error when it was asked for)."""
    try:
        from flash_attn.cute import interface as fa4
    except (ImportError, OSError) as e:  # OSError: a CuTe DSL shared library that does not load
        if required:
            raise RuntimeError(f"ATTN_BACKEND=fa4 but flash_attn.cute is not importable: {e}") from e
        return "sdpa"
    _ATTN["fa4"] = fa4
    return "fa4"


def _sm90_or_newer(device: torch.device) -> bool:
    # flash-attn-4 was checked and timed on Hopper (sm_90); older GPUs keep torch's kernel under auto
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 9


def attention_backend_label() -> str:
    native = _ATTN["gqa_op"] or _ATTN["varlen_gqa"]
    varlen = "torch flash varlen, native GQA" if native else "torch flash varlen, K/V repeated for GQA"
    return {"fa3": "fa3 (flash_attn_interface)", "fa4": "fa4 (flash_attn.cute varlen, native GQA)",
            "varlen": varlen, "sdpa": "sdpa (block-diagonal causal mask)"}[_ATTN["name"]]


def _segment_ids(cu: torch.Tensor, length: int) -> torch.Tensor:
    pos = torch.arange(length, device=cu.device, dtype=cu.dtype)
    return torch.searchsorted(cu, pos, right=True)


def unbatched(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each x (1, ...) as x[0], through a view. Indexing (x[0]) is a select, whose backward Inductor lowers as a
    kernel that writes the whole gradient again: for q and k, copies of flash-attn-4's dq and dk that took 10.8 ms
    of an H100's step before looping (eleventh session's byte count, benchmarks/README.md). A view's backward is a
    view. Fails unless the batch is one."""
    return tuple(x.view(x.shape[1:]) for x in xs)


def attend(q, k, v, cu_seqlens=None, max_seqlen: int = 0, cu_used=None):
    """Causal attention. q (B,T,H,D), k/v (B,T,Hkv,D). With cu_seqlens (B must be 1) attention stays
    inside each segment; cu_used (CPU int tensor): its entries in use, which our varlen ops may cut it to
    (ATTN_CU_TRIM). Returns (B,T,H,D)."""
    B, T, H, D = q.shape
    Hkv = k.size(2)
    name = _ATTN["name"]
    if name == "fa3":
        fa = _ATTN["fa3"]
        if cu_seqlens is None:
            out = fa.flash_attn_func(q, k, v, causal=True)
        else:
            out = fa.flash_attn_varlen_func(*unbatched(q, k, v), cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens,
                                            max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen, causal=True)
        out = out[0] if isinstance(out, tuple) else out  # FA3 builds differ: tensor or (out, lse) (quirk §11.20)
        return out if cu_seqlens is None else out[None]
    if name == "fa4" and cu_seqlens is not None:  # dense calls (no cu_seqlens) take SDPA below, as with varlen
        return torch.ops.golf.fa4_varlen(*unbatched(q, k, v), cu_seqlens, max_seqlen, cu_used)[0][None]
    if name == "varlen" and cu_seqlens is not None:
        if Hkv != H and _ATTN["gqa_op"] and not _ATTN["varlen_gqa"]:
            return torch.ops.golf.flash_varlen(*unbatched(q, k, v), cu_seqlens, max_seqlen, cu_used)[0][None]
        qq, kk, vv = q[0], k[0], v[0]  # the record's path (ATTN_BACKEND=varlen) kept as measured: the reference
        kw = {}
        if Hkv != H:
            if _ATTN["varlen_gqa"]:
                kw["enable_gqa"] = True
            else:
                kk = kk.repeat_interleave(H // Hkv, dim=1)
                vv = vv.repeat_interleave(H // Hkv, dim=1)
        out = _ATTN["varlen"](qq, kk, vv, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
                              window_size=(-1, 0), **kw)
        return out[None]
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if cu_seqlens is None:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=Hkv != H)
    elif max_seqlen and T > 2 * max_seqlen:
        return _local_block_attention(q, k, v, cu_seqlens, max_seqlen)
    else:
        seg = _segment_ids(cu_seqlens, T)
        idx = torch.arange(T, device=q.device)
        mask = (seg[:, None] == seg[None, :]) & (idx[:, None] >= idx[None, :])
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, enable_gqa=Hkv != H)
    return out.transpose(1, 2)


def _local_block_attention(q, k, v, cu_seqlens, M: int):
    """Masked attention in O(T*M) instead of O(T^2): no segment is longer than M, so the queries of
    block b (positions bM..bM+M-1) only see keys of blocks b-1 and b."""
    _, T, H, D = q.shape
    Hkv = k.size(2)
    nb = (T + M - 1) // M
    pad = nb * M - T
    seg = _segment_ids(cu_seqlens, T).to(torch.int64)
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
        # padded positions form their own one-token segments (no fully masked rows)
        seg = torch.cat([seg, torch.arange(pad, device=seg.device) + (1 << 40)])
    qb = q[0].view(nb, M, H, D).transpose(1, 2)
    kb = k[0].view(nb, M, Hkv, D).transpose(1, 2)
    vb = v[0].view(nb, M, Hkv, D).transpose(1, 2)
    zeros = torch.zeros_like(kb[:1])
    kk = torch.cat([torch.cat([zeros, kb[:-1]]), kb], dim=2)
    vv = torch.cat([torch.cat([zeros, vb[:-1]]), vb], dim=2)
    segb = seg.view(nb, M)
    seg_prev = torch.cat([torch.full_like(segb[:1], -1), segb[:-1]])
    kseg = torch.cat([seg_prev, segb], dim=1)  # (nb, 2M)
    i = torch.arange(M, device=q.device)
    j = torch.arange(2 * M, device=q.device)
    causal = (j[None, :] - M) <= i[:, None]
    mask = (kseg[:, None, :] == segb[:, :, None]) & causal[None]
    out = F.scaled_dot_product_attention(qb, kk, vv, attn_mask=mask[:, None], enable_gqa=Hkv != H)
    out = out.transpose(1, 2).reshape(1, nb * M, H, D)
    return out[:, :T]


class Rotary(nn.Module):
    """Partial RoPE (half-split pairs) on the first `dims` of each head; positions are buffer indices."""

    def __init__(self, head_dim: int, dims: int, base: float):
        super().__init__()
        self.dims = dims or head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, self.dims, 2, dtype=torch.float32) / self.dims))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def table(self, T: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of every position's angles, (T, dims / 2), rounded to the activations' dtype."""
        pos = torch.arange(T, device=device, dtype=torch.float32)
        theta = torch.outer(pos, self.inv_freq.to(device))
        return theta.cos().to(dtype), theta.sin().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rope_rotate(x, *self.table(x.size(1), x.device, x.dtype))


class Attention(nn.Module):
    def __init__(self, h: Hyperparameters):
        super().__init__()
        self.num_heads, self.num_kv_heads = h.num_heads, h.num_kv_heads
        self.head_dim = h.model_dim // h.num_heads
        self.q_gain = nn.Parameter(torch.full((h.num_heads,), float(h.qk_gain_init)))
        self.rotary = Rotary(self.head_dim, h.rope_dims, h.rope_base)


class Block(nn.Module):
    """Per-layer control tensors; the layer's matrices live in the model's banks."""

    def __init__(self, h: Hyperparameters, layer_idx: int):
        super().__init__()
        d = h.model_dim
        self.attn = Attention(h)
        self.attn_scale = nn.Parameter(torch.ones(d))
        self.mlp_scale = nn.Parameter(torch.ones(d))
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(d), torch.zeros(d))))
        self.ln_scale = 1.0 / math.sqrt(layer_idx + 1) if h.ln_scale else 1.0
        self.xsa = layer_idx >= h.num_layers - h.xsa_last_n


class GPT(nn.Module):
    def __init__(self, h: Hyperparameters):
        super().__init__()
        self.h = h
        L, d, V = h.num_layers, h.model_dim, h.vocab_size
        kv = h.num_kv_heads * (d // h.num_heads)
        hidden = int(h.mlp_mult * d)
        self.num_layers, self.hidden = L, hidden
        self.tok_emb = nn.Embedding(V, d)
        self.qo_bank = nn.Parameter(torch.empty(2 * L, d, d))
        self.kv_bank = nn.Parameter(torch.empty(2 * L, kv, d))
        self.mlp_up_bank = nn.Parameter(torch.empty(L, hidden, d))
        self.mlp_down_bank = nn.Parameter(torch.empty(L, d, hidden))
        self.blocks = nn.ModuleList([Block(h, i) for i in range(L)])
        enc, dec = layer_schedule(L, h.num_loops, h.loop_start, h.loop_end, looping=True)
        self.num_skips = min(len(enc), len(dec))
        self.skip_weights = nn.Parameter(torch.ones(self.num_skips, d))
        if h.skip_gates_enabled:
            self.skip_gates = nn.Parameter(torch.zeros(self.num_skips, d))
        else:
            self.skip_gates = None
        self.parallel_post_lambdas = nn.Parameter(torch.ones(L, 2, 2))
        self.parallel_resid_lambdas = nn.Parameter(torch.full((L, 2), 1.1))
        self.looping = False
        self.hessian_tap = None
        self.compute_dtype = torch.float32
        if self.qo_bank.device.type != "meta":
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        L = self.num_layers
        nn.init.normal_(self.tok_emb.weight, std=self.h.tied_embed_init_std)
        for i in range(L):
            nn.init.orthogonal_(self.qo_bank[i])
            nn.init.orthogonal_(self.kv_bank[i])
            nn.init.orthogonal_(self.kv_bank[L + i])
            nn.init.orthogonal_(self.mlp_up_bank[i])
        self.qo_bank[L:].zero_()
        self.mlp_down_bank.zero_()

    def schedule(self):
        h = self.h
        return layer_schedule(self.num_layers, h.num_loops, h.loop_start, h.loop_end, self.looping)

    def _tap(self, name: str, x: torch.Tensor) -> None:
        if self.hessian_tap is not None:
            self.hessian_tap(name, x)

    def _attn(self, l: int, a: torch.Tensor, cu, max_seqlen: int, lora=None, slot: int = 0,
              cu_used=None) -> torch.Tensor:
        blk = self.blocks[l]
        at = blk.attn
        L = self.num_layers
        B, T, _ = a.shape
        self._tap(f"blocks.{l}.attn.qkv_in", a)
        dt = a.dtype
        q = F.linear(a, self.qo_bank[l].to(dt)).view(B, T, at.num_heads, at.head_dim)
        k = F.linear(a, self.kv_bank[l].to(dt)).view(B, T, at.num_kv_heads, at.head_dim)
        v = F.linear(a, self.kv_bank[L + l].to(dt)).view(B, T, at.num_kv_heads, at.head_dim)
        if lora is not None:  # test-time-training adapters (TTT section); None in training and plain eval
            q, k, v = lora.add_qkv(slot, a, q, k, v)
        # training steps only, as the fused MLP (FUSED Q/K NORM AND ROPE): eval and TTT's LoRA keep the plain ops
        if _QK["kernel"] != "plain" and self.training and lora is None:
            q, k = qk_norm_rope(q, k, at.q_gain.to(dt), *at.rotary.table(T, a.device, dt))
        else:
            q, k = rms_norm(q), rms_norm(k)
            q, k = at.rotary(q), at.rotary(k)
            q = q * at.q_gain.to(dt)[None, None, :, None]
        y = attend(q, k, v, cu, max_seqlen, cu_used)
        if blk.xsa:  # FUSED XSA: the custom op in training steps where XSA_KERNEL chose it, else the plain ops
            y = xsa(y, v) if self.training and lora is None else xsa_plain(y, v)
        y = y.reshape(B, T, -1)
        self._tap(f"blocks.{l}.attn.proj", y)
        out = F.linear(y, self.qo_bank[L + l].to(dt))
        return out if lora is None else lora.add(slot, "o", a, out)

    def _mlp(self, l: int, a: torch.Tensor, lora=None, slot: int = 0) -> torch.Tensor:
        dt = a.dtype
        if _MLP["kernel"] != "plain" and self.training and lora is None and self.hessian_tap is None:
            # training steps only, as the record (§10.3): eval, TTT scoring and Hessians keep plain ops
            return fused_mlp(a, self.mlp_up_bank[l].to(dt), self.mlp_down_bank[l].to(dt))
        self._tap(f"blocks.{l}.mlp.fc", a)
        hdn = F.leaky_relu(F.linear(a, self.mlp_up_bank[l].to(dt)), 0.5).square()
        self._tap(f"blocks.{l}.mlp.proj", hdn)
        out = F.linear(hdn, self.mlp_down_bank[l].to(dt))
        return out if lora is None else lora.add(slot, "mlp", a, out)

    def _block(self, l: int, x, x0, cu, max_seqlen, lora=None, slot: int = 0, cu_used=None):
        blk = self.blocks[l]
        dt = x.dtype
        mix = blk.resid_mix.to(dt)
        x = mix[0] * x + mix[1] * x0
        x = x + blk.attn_scale.to(dt) * self._attn(l, blk.ln_scale * rms_norm(x), cu, max_seqlen, lora, slot,
                                                   cu_used)
        return x + blk.mlp_scale.to(dt) * self._mlp(l, blk.ln_scale * rms_norm(x), lora, slot)

    def _parallel_block(self, l: int, lane0, lane1, x0, cu, max_seqlen, lora=None, slot: int = 0, cu_used=None):
        blk = self.blocks[l]
        dt = lane0.dtype
        mix = blk.resid_mix.to(dt)
        a_in = mix[0] * lane0 + mix[1] * x0
        A = blk.attn_scale.to(dt) * self._attn(l, blk.ln_scale * rms_norm(a_in), cu, max_seqlen, lora, slot,
                                               cu_used)
        M = blk.mlp_scale.to(dt) * self._mlp(l, blk.ln_scale * rms_norm(lane1), lora, slot)
        P = self.parallel_post_lambdas[l].to(dt)
        r = self.parallel_resid_lambdas[l].to(dt)
        new0 = r[0] * lane0 + P[0, 0] * A + P[1, 0] * M
        new1 = r[1] * lane1 + P[0, 1] * A + P[1, 1] * M
        return new0, new1

    def hidden_states(self, input_ids: torch.Tensor, cu_seqlens=None, max_seqlen: int = 0, lora=None,
                      cu_used=None) -> torch.Tensor:
        """Final RMS-normalized hidden state (B, T, d). lora: per-document TTT adapters, one slot per layer
        application (slot = position in the encoder+decoder schedule). cu_used: see attend."""
        x = rms_norm(self.tok_emb(input_ids).to(self.compute_dtype))
        x0 = x
        enc, dec = self.schedule()
        pstart = self.h.parallel_start_layer
        stack = []
        for i, l in enumerate(enc):
            x = self._block(l, x, x0, cu_seqlens, max_seqlen, lora, i, cu_used)
            stack.append(x)
        lane0 = lane1 = None
        for j, l in enumerate(dec):
            parallel = pstart > 0 and l >= pstart
            if parallel and lane0 is None:
                lane0 = lane1 = x
            if j < self.num_skips and stack:
                s = stack.pop()
                w = self.skip_weights[j].to(x.dtype)
                cur = lane0 if parallel else x
                if self.skip_gates is not None:
                    g = torch.sigmoid(self.skip_gates[j].to(x.dtype))
                    cur = g * cur + (1 - g) * (w * s)
                else:
                    cur = cur + w * s
                if parallel:
                    lane0 = cur
                else:
                    x = cur
            if parallel:
                lane0, lane1 = self._parallel_block(l, lane0, lane1, x0, cu_seqlens, max_seqlen, lora, len(enc) + j,
                                                    cu_used)
            else:
                x = self._block(l, x, x0, cu_seqlens, max_seqlen, lora, len(enc) + j, cu_used)
        if lane0 is not None:
            mode = self.h.parallel_final_lane
            x = (lane0 + lane1) * 0.5 if mode == "mean" else (lane0 if mode == "attn" else lane1)
        x = rms_norm(x)
        self._tap("tok_emb", x)
        return x

    def head(self, x: torch.Tensor, lora=None) -> torch.Tensor:
        """Logits before the soft cap, in x's dtype (the tied embedding as the output projection)."""
        logits = F.linear(x, self.tok_emb.weight.to(x.dtype))
        return logits if lora is None else lora.add(0, "head", x, logits)

    def logits_from_hidden(self, x: torch.Tensor, lora=None) -> torch.Tensor:
        logits = self.head(x, lora).float()
        c = self.h.logit_softcap
        return c * torch.tanh(logits / c)

    def forward_logits(self, input_ids: torch.Tensor, cu_seqlens=None, max_seqlen: int = 0,
                       cu_used=None) -> torch.Tensor:
        return self.logits_from_hidden(self.hidden_states(input_ids, cu_seqlens, max_seqlen, cu_used=cu_used))

    def forward(self, input_ids, target_ids, cu_seqlens=None, max_seqlen: int = 0, reduction: str = "mean",
                cu_used=None):
        """reduction: "mean" (training), "none" (flat per-target NLL) or "prob_sum" (score dumps: flat per-target
        (NLL, sum p), see target_scores). cu_used: see attend (training steps pass the loader's count)."""
        if _LOSS["kernel"] != "plain" and reduction == "mean" and self.training:  # training steps (FUSED LOSS)
            logits = self.head(self.hidden_states(input_ids, cu_seqlens, max_seqlen, cu_used=cu_used))
            return softcap_ce_mean(logits, target_ids, self.h.logit_softcap)
        logits = self.forward_logits(input_ids, cu_seqlens, max_seqlen, cu_used)
        if reduction == "prob_sum":
            return target_scores(logits, target_ids.reshape(-1), prob_sum=True)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target_ids.reshape(-1), reduction=reduction)


def target_scores(logits: torch.Tensor, y: torch.Tensor, prob_sum: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(NLL in nats, sum p or None), both shaped like y: y under softmax(logits) over the full vocabulary.
    prob_sum (SCORE_DUMP_PATH only; it materializes the log-probabilities once more): each target's sum over
    the vocabulary of the probabilities of the distribution its NLL is read from, from those very log-probs,
    so a scoring rule that stopped normalizing (a bonus added after the softmax) shows as sum p != 1. The NLL
    is the same either way: F.cross_entropy is log_softmax then nll_loss."""
    flat, t = logits.reshape(-1, logits.size(-1)), y.reshape(-1)
    if not prob_sum:
        return F.cross_entropy(flat, t, reduction="none").view(y.shape), None
    logp = F.log_softmax(flat, dim=-1)
    nll = F.nll_loss(logp, t, reduction="none").view(y.shape)
    return nll, logp.detach().exp().sum(-1).view(y.shape)


def control_patterns(h: Hyperparameters) -> tuple[str, ...]:
    return tuple(p for p in h.control_tensor_name_patterns.split(",") if p)


def set_training_dtypes(model: GPT, h: Hyperparameters) -> GPT:
    """Record recipe (§4.1): cast everything to bf16, then banks and control / small tensors back to fp32;
    the token embedding stays bf16 (its fp32 masters start from bf16-rounded values)."""
    model.to(torch.bfloat16)
    patterns = control_patterns(h)
    for name, p in model.named_parameters():
        if name.endswith("_bank") or p.ndim < 2 or any(pat in name for pat in patterns):
            p.data = p.data.float()
    return model


def build_model(h: Hyperparameters, device: torch.device) -> GPT:
    model = GPT(h).to(device)
    set_training_dtypes(model, h)
    model.compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ==================================================================================================
# OPTIMIZER
# ==================================================================================================

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalize each matrix of a (B, r, c) stack (bf16 quintic Newton-Schulz)."""
    a, b, c = NS_COEFFS
    x = g.bfloat16()
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    transposed = x.size(-2) > x.size(-1)
    if transposed:
        x = x.mT
    for _ in range(steps):
        A = x @ x.mT
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    return x.mT if transposed else x


class Muon:
    """Muon on the four weight banks (§5.2). Distributed: each bank is padded to a multiple of the world
    size and split into shards; gradients are reduce-scattered, each rank orthogonalizes its shard and the
    updates are all-gathered. gloo (CPU) has no reduce-scatter/all-gather for these tensors, so there the
    same sharded math runs over two fp32 all-reduces (sum of gradients, sum of zero-padded shard updates)."""

    def __init__(self, banks: list[tuple[str, nn.Parameter]], h: Hyperparameters, rank: int, world: int):
        self.h, self.rank, self.world = h, rank, world
        self.banks = sorted(banks, key=lambda kv: -kv[1].numel())  # biggest first, as the record
        self.lr = h.matrix_lr
        self.momentum = h.muon_momentum_warmup_start
        self.nccl = world > 1 and dist.get_backend() == "nccl"
        self.state: dict[str, torch.Tensor] = {}
        self._pending: dict[str, tuple] = {}
        self._ns = newton_schulz5
        if torch.cuda.is_available() and h.compile_enabled and banks[0][1].device.type == "cuda":
            self._ns = torch.compile(newton_schulz5)

    def _shard(self, p: torch.Tensor):
        B = p.size(0)
        per = (B + self.world - 1) // self.world
        return per, per * self.world

    def launch(self) -> None:
        """Start gradient communication (called before the Adam steps, overlapping them)."""
        for name, p in self.banks:
            g = p.grad.bfloat16()
            if self.world == 1:
                self._pending[name] = (None, g)
                continue
            per, padded = self._shard(p)
            if padded > g.size(0):
                g = torch.cat([g, g.new_zeros(padded - g.size(0), *g.shape[1:])])
            if self.nccl:
                out = g.new_empty(per, *g.shape[1:])
                work = dist.reduce_scatter_tensor(out, g, op=dist.ReduceOp.AVG, async_op=True)
            else:
                out = g.float()
                work = dist.all_reduce(out, op=dist.ReduceOp.SUM, async_op=True)
            self._pending[name] = (work, out)

    def _update(self, name: str, g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        buf = self.state.get(name)
        if buf is None:
            buf = self.state[name] = torch.zeros_like(g)
        mu = self.momentum
        buf.mul_(mu).add_(g)
        u = g + mu * buf
        if self.h.muon_row_normalize:
            u = (u.float() / u.float().norm(dim=-1, keepdim=True).clamp_min(1e-7)).bfloat16()
        return self._ns(u, self.h.muon_backend_steps)

    @torch.no_grad()
    def _apply(self, p: torch.Tensor, upd: torch.Tensor) -> None:
        r, c = p.shape[-2:]
        scale = math.sqrt(max(1.0, r / c))
        p.mul_(1 - self.lr * self.h.muon_wd)
        p.add_(upd[: p.size(0)].to(p.dtype), alpha=-self.lr * scale)

    @torch.no_grad()
    def step(self) -> None:
        prev = None
        for name, p in self.banks:
            work, g = self._pending.pop(name)
            if self.world == 1:
                nxt = (None, p, self._update(name, g, p))
            else:
                work.wait()
                per, padded = self._shard(p)
                if self.nccl:
                    upd = self._update(name, g, p)
                    full = upd.new_empty(padded, *upd.shape[1:])
                    w2 = dist.all_gather_into_tensor(full, upd, async_op=True)
                    nxt = (w2, p, full)
                else:
                    lo = self.rank * per
                    shard = (g[lo:lo + per] / self.world).bfloat16()
                    upd = self._update(name, shard, p)
                    full = torch.zeros(padded, *upd.shape[1:], dtype=torch.float32, device=upd.device)
                    full[lo:lo + per] = upd.float()
                    w2 = dist.all_reduce(full, op=dist.ReduceOp.SUM, async_op=True)
                    nxt = (w2, p, full)
            if prev is not None:
                self._finish(prev)
            prev = nxt
        if prev is not None:
            self._finish(prev)

    def _finish(self, item) -> None:
        work, p, full = item
        if work is not None:
            work.wait()
        self._apply(p, full.bfloat16() if full.dtype != torch.bfloat16 else full)

    def state_dict(self) -> dict:
        return {k: v.clone() for k, v in self.state.items()}

    def load_state_dict(self, sd: dict) -> None:
        self.state = {k: v.clone() for k, v in sd.items()}


class Optimizers:
    """AdamW for the embedding and the control tensors, Muon for the banks (§5.1), plus the replicated-
    gradient all-reduce of §5.7 (embedding on its own, all small tensors in one flat buffer)."""

    def __init__(self, model: GPT, h: Hyperparameters, rank: int, world: int, device: torch.device):
        self.h, self.world = h, world
        named = dict(model.named_parameters())
        banks = [(n, p) for n, p in named.items() if n.endswith("_bank")]
        self.embed = [named["tok_emb.weight"]]
        self.scalars = [p for n, p in named.items() if not n.endswith("_bank") and n != "tok_emb.weight"]
        self.replicated = self.embed + self.scalars
        fused = device.type == "cuda"
        betas = (h.beta1, h.beta2)
        self.adam_embed = torch.optim.AdamW([{"params": self.embed, "lr": h.tied_embed_lr, "base_lr": h.tied_embed_lr}],
                                            betas=betas, eps=h.adam_eps, weight_decay=h.embed_wd, fused=fused)
        self.adam_scalar = torch.optim.AdamW([{"params": self.scalars, "lr": h.scalar_lr, "base_lr": h.scalar_lr}],
                                             betas=betas, eps=h.adam_eps, weight_decay=h.adam_wd, fused=fused)
        self.muon = Muon(banks, h, rank, world)
        self.nccl = world > 1 and dist.get_backend() == "nccl"
        self.all_params = [p for _, p in named.items()]

    def set_schedule(self, lr_mult: float, step: int) -> None:
        for opt in (self.adam_embed, self.adam_scalar):
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * lr_mult
        self.muon.lr = self.h.matrix_lr * lr_mult
        f = min(step / self.h.muon_momentum_warmup_steps, 1.0) if self.h.muon_momentum_warmup_steps > 0 else 1.0
        self.muon.momentum = (1 - f) * self.h.muon_momentum_warmup_start + f * self.h.muon_momentum

    def _all_reduce_avg(self, t: torch.Tensor):
        if self.nccl:
            return dist.all_reduce(t, op=dist.ReduceOp.AVG, async_op=True), t, None
        tmp = t.float()
        return dist.all_reduce(tmp, op=dist.ReduceOp.SUM, async_op=True), t, tmp

    def step(self) -> None:
        if self.h.grad_clip_norm > 0:
            # rank-local clip before any communication, as the record (trainer-facts §11.2)
            torch.nn.utils.clip_grad_norm_(self.all_params, self.h.grad_clip_norm)
        self.muon.launch()
        if self.world > 1:
            works = [self._all_reduce_avg(self.embed[0].grad)]
            small = [p.grad for p in self.scalars]
            flat = torch.cat([g.reshape(-1) for g in small])
            works.append(self._all_reduce_avg(flat))
            for work, t, tmp in works:
                work.wait()
                if tmp is not None:
                    t.copy_(tmp / self.world)
            off = 0
            for g in small:
                g.copy_(flat[off:off + g.numel()].view_as(g))
                off += g.numel()
        self.adam_embed.step()
        self.adam_scalar.step()
        self.muon.step()
        for p in self.all_params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"embed": copy.deepcopy(self.adam_embed.state_dict()),
                "scalar": copy.deepcopy(self.adam_scalar.state_dict()),
                "muon": self.muon.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.adam_embed.load_state_dict(sd["embed"])
        self.adam_scalar.load_state_dict(sd["scalar"])
        self.muon.load_state_dict(sd["muon"])


# ==================================================================================================
# TRAINING LOOP
# ==================================================================================================

def lr_multiplier(h: Hyperparameters, frac: float) -> float:
    if frac < 1.0 - h.warmdown_frac:
        return 1.0
    return max((1.0 - frac) / h.warmdown_frac, h.min_lr) if h.warmdown_frac > 0 else max(0.0, h.min_lr)


class EMA:
    """fp32 shadow of every state-dict tensor, e <- d*e + (1-d)*w after each step (§5.4)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.state_dict().values()]
        self.shadow = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.shadow, [p.float() for p in self.params], 1.0 - self.decay)

    @torch.no_grad()
    def apply_to(self, model: nn.Module) -> None:
        for p, e in zip(model.state_dict().values(), self.shadow):
            p.copy_(e.to(p.dtype))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(h, model_fn, opt: Optimizers, loader: DocumentPackingLoader) -> torch.Tensor:
    """One optimizer step over h.grad_accum_steps microbatches. Returns the mean training loss on the device:
    reading it waits for the step, so the caller decides when (StepClock)."""
    losses = []
    for _ in range(h.grad_accum_steps):
        x, y, cu, cu_used = loader.next_batch()
        loss = model_fn(x, y, cu, h.train_seq_len, cu_used=cu_used)
        (loss / h.grad_accum_steps).backward()
        losses.append(loss.detach())
    opt.step()
    return torch.stack(losses).float().mean()


class Launched(NamedTuple):
    """A training step the host has launched: its number, its loss on the device, whether it looped, the host
    time its launch began, and a CUDA event after its last kernel (None on a CPU)."""
    step: int
    loss: torch.Tensor
    looping: bool
    at: float
    done: object


def gpu_mark(device: torch.device):
    """A CUDA event with timing, recorded now on the current stream: a point on the GPU's timeline (None on a CPU)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def launched(step: int, loss: torch.Tensor, looping: bool, at: float, device: torch.device) -> Launched:
    return Launched(step, loss, looping, at, gpu_mark(device))


class StepClock:
    """The host's side of each training step, done when its loss is read back as soon as the step is launched (the
    record's loop): training time, tokens and seconds before and with looping, the wall-clock stop (agreed by every
    rank) and the train_loss line. (A loop that read each step back after launching the next, so that the GPU had
    a step queued while the host waited, ran at the same rate on an H100 at 8 microbatches a step and at one:
    benchmarks/README.md, fourteenth to sixteenth sessions. It is gone.)"""

    def __init__(self, h, device: torch.device, world: int, max_ms: float | None, log0):
        self.h, self.device, self.world, self.max_ms, self.log0 = h, device, world, max_ms, log0
        self.training_ms, self.t0 = 0.0, None
        self.step_s = 0.0  # the last step's duration
        self.mark = None  # on a GPU: where the next step's time starts on its timeline (the resume, a step's end)
        self.stop_after = None
        self.tokens = {"pre": [0, 0.0], "loop": [0, 0.0]}

    def resume(self) -> None:
        self.t0 = time.perf_counter()
        self.mark = gpu_mark(self.device)

    def pause(self) -> None:
        self.training_ms += 1000.0 * (time.perf_counter() - self.t0)

    def elapsed_ms(self, now: float | None = None) -> float:
        return self.training_ms + 1000.0 * ((time.perf_counter() if now is None else now) - self.t0)

    def finish(self, run: Launched) -> None:
        """Reads `run` back (waiting for it) and accounts for it."""
        if run.done is not None:
            run.done.synchronize()
        loss = run.loss.item()
        now = time.perf_counter()
        if run.done is not None and self.mark is not None:
            # a step's time on the GPU's timeline, from the previous step's end (or the resume) to its own
            self.step_s, self.mark = self.mark.elapsed_time(run.done) / 1000.0, run.done
        else:
            self.step_s = now - run.at  # launched after the step before was read back: its time is its own
        bucket = self.tokens["loop" if run.looping else "pre"]
        bucket[0] += self.h.train_batch_tokens
        bucket[1] += self.step_s
        approx_ms = self.elapsed_ms(now)
        reached = self._agree(self.max_ms is not None and approx_ms >= self.max_ms)
        if reached and self.stop_after is None:
            self.stop_after = run.step
        step, h = run.step, self.h
        if step <= 5 or (h.train_log_every > 0 and step % h.train_log_every == 0) or self.stop_after == step:
            tps = step * h.train_batch_tokens / max(approx_ms / 1000.0, 1e-9)
            self.log0(f"{step}/{h.iterations} train_loss: {loss:.4f} train_time: {approx_ms / 60000:.1f}m "
                      f"tok/s: {tps:.0f}")

    def _agree(self, reached: bool) -> bool:
        """The stop flag, MAX over the ranks, so that every rank stops after the same step."""
        if self.world == 1:
            return reached
        flag = torch.tensor(int(reached), device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def warmup_list_str(xs) -> str:
    return "[" + ", ".join(str(x) for x in xs) + "]"


def prime_compile(h, base_model: GPT, model_fn, opt: Optimizers, make_loader, log0, compiled: bool):
    """Compile priming (§5.5): real steps whose effect is rolled back. Decision (docs/trainer.md, quirk
    §11.1): ALL optimizer state, Muon momentum included, is restored, so training starts identically
    for every world size."""
    if h.warmup_steps <= 0:
        return
    model_state = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
    opt_state = opt.state_dict()
    loader = make_loader()
    if compiled:
        # The graphs for the first batch's cu_seqlens length (a multiple of CU_PAD_COMPILED): 512 entries where a
        # micro-step holds fewer documents (FineWeb), 1,024 for the benchmarks' short ones. Priming another length
        # would compile graphs that training never runs and leave its own to the first warm-up step.
        x, y, cu_first, _ = loader.next_batch()
        L, bucket = x.size(1), cu_first.size(0)
        log0(f"warmup_cu_buckets:{bucket} iters_each:3")
        starts = list(range(0, L, h.train_seq_len))[:bucket - 1]
        cu_t = torch.tensor(starts + [L] * (bucket - len(starts)), dtype=torch.int32, device=x.device)
        for looping in ([False, True] if h.num_loops > 0 else [False]):
            base_model.looping = looping
            # The graph is the same for any count in use, but flash-attn-4 compiles other kernels above 256
            # sequences, and with ATTN_CU_TRIM a batch may land on either side: one call with few sequences
            # and one with the whole bucket compile both here, not inside a timed step
            for used, iters in ((bucket, 3), (len(starts) + 1, 1)):
                for _ in range(iters):
                    model_fn(x, y, cu_t, h.train_seq_len, cu_used=torch.tensor(used)).backward()
            for p in base_model.parameters():
                p.grad = None
        base_model.looping = False
    opt.set_schedule(1.0, 0)
    for i in range(1, h.warmup_steps + 1):
        train_step(h, model_fn, opt, loader)
        if i <= 6 or i % 10 == 0 or i == h.warmup_steps:
            log0(f"warmup_step: {i}/{h.warmup_steps}")
    if h.num_loops > 0:
        base_model.looping = True
        enc, dec = base_model.schedule()
        log0(f"loop_warmup:enabled encoder:{warmup_list_str(enc)} decoder:{warmup_list_str(dec)}")
        for i in range(1, h.warmup_steps + 1):
            train_step(h, model_fn, opt, loader)
            if i <= 6 or i % 10 == 0 or i == h.warmup_steps:
                log0(f"loop_warmup_step: {i}/{h.warmup_steps}")
        base_model.looping = False
    with torch.no_grad():
        for k, v in base_model.state_dict().items():
            v.copy_(model_state[k])
    opt.load_state_dict(opt_state)
    for p in base_model.parameters():
        p.grad = None


def train(h, base_model: GPT, model_fn, device, val_tokens, tables, log0, rank, world, compiled: bool) -> dict:
    """Training loop (§5.6). Returns stats for results.json; leaves EMA weights in base_model."""
    tokens_per_rank = h.train_batch_tokens // (world * h.grad_accum_steps)
    train_files = list_shards(h.train_files, "train")
    # cu_seqlens padded to multiples of 512 entries when compiled: one length for a whole FineWeb run (one graph
    # per looping state, primed at the first batch's length); the record's 64-multiples would cost one each
    pad_to = CU_PAD_COMPILED if compiled else 64
    make_loader = lambda: DocumentPackingLoader(train_files, tokens_per_rank, h.train_seq_len, rank, world, device,
                                                pad_to)
    opt = Optimizers(base_model, h, rank, world, device)
    max_ms = None
    if h.max_wallclock_seconds > 0:
        max_ms = 1000.0 * (h.max_wallclock_seconds - h.gptq_reserve_seconds)
        log0(f"gptq:reserving {h.gptq_reserve_seconds:.0f}s, effective={max_ms:.0f}ms")
    sync(device)
    tp = time.perf_counter()
    prime_compile(h, base_model, model_fn, opt, make_loader, log0, compiled)
    sync(device)
    priming_s = time.perf_counter() - tp
    loader = make_loader()
    ema = EMA(base_model, h.ema_decay)
    clock = StepClock(h, device, world, max_ms, log0)
    step = 0
    sync(device)
    t_first = time.perf_counter()
    clock.resume()

    while True:
        last = step == h.iterations or (clock.stop_after is not None and step >= clock.stop_after)
        if last or (h.val_loss_every > 0 and step % h.val_loss_every == 0):
            sync(device)
            clock.pause()
            base_model.eval()
            vl, vb = eval_plain(h, base_model, val_tokens, tables, rank, world, device)
            base_model.train()
            log0(f"{step}/{h.iterations} val_loss: {vl:.4f} val_bpb: {vb:.4f}")
            sync(device)
            clock.resume()
        if last:
            if clock.stop_after is not None and step < h.iterations:
                log0(f"stopping_early: wallclock_cap train_time: {clock.training_ms:.0f}ms "
                     f"step: {step}/{h.iterations}")
            break
        frac = clock.elapsed_ms() / max_ms if max_ms else step / max(h.iterations, 1)
        if h.num_loops > 0 and not base_model.looping and frac >= h.enable_looping_at:
            base_model.looping = True
            enc, dec = base_model.schedule()
            log0(f"layer_loop:enabled step:{step} frac:{frac:.3f} encoder:{warmup_list_str(enc)} "
                 f"decoder:{warmup_list_str(dec)}")
        opt.set_schedule(lr_multiplier(h, frac), step)
        ts = time.perf_counter()
        loss = train_step(h, model_fn, opt, loader)
        step += 1
        ema.update()
        clock.finish(launched(step, loss, base_model.looping, ts, device))
    stats = training_stats({"steps": step, "train_time_ms": clock.training_ms,
                            "stopped_early": clock.stop_after is not None and clock.stop_after < h.iterations,
                            "tokens_per_s": step * h.train_batch_tokens / max(clock.training_ms / 1000.0, 1e-9),
                            "priming_s": priming_s, "first_step_at": t_first}, clock.tokens, device, log0)
    log0("ema:applying EMA weights")
    ema.apply_to(base_model)
    return stats


def training_stats(stats: dict, loop_tokens: dict, device, log0) -> dict:
    """Adds peak memory and the tokens/s before and after looping to the training stats, and logs them
    (the peak-memory line is the record's; the throughput line, ours, is what the benchmarks read: `all` is the
    whole run's rate by the training time, the figure that compares two loops)."""
    if device.type == "cuda":
        alloc = torch.cuda.max_memory_allocated() // (1024 * 1024)
        reserved = torch.cuda.max_memory_reserved() // (1024 * 1024)
    else:
        alloc = reserved = peak_rss_mib()
    log0(f"peak memory allocated: {alloc} MiB reserved: {reserved} MiB")
    rates = {k: n / sec if sec else None for k, (n, sec) in loop_tokens.items()}
    shown = {k: f"{r:.0f}" if r is not None else "-" for k, r in rates.items()}
    log0(f"throughput tok/s preloop:{shown['pre']} loop:{shown['loop']} priming_s:{stats['priming_s']:.1f} "
         f"all:{stats['tokens_per_s']:.0f}")
    return {**stats, "peak_mem_mib": int(alloc), "tokens_per_s_preloop": rates["pre"],
            "tokens_per_s_loop": rates["loop"]}


def peak_rss_mib() -> int:
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


# ==================================================================================================
# SERIALIZATION: GPTQ quantization, compression, the code-size launcher
# ==================================================================================================

# >>> SERIALIZATION SECTION BEGIN
import base64
import io
import lzma
import re
from typing import Any, Callable

# Story: code size -> final_model.pt -> unbank -> Hessians -> GPTQ -> torch.save + byte shuffle +
# compress -> final_model.int6.ptz; and back: decompress -> unshuffle -> dequantize -> rebank.
# Every rank quantizes with its own calibration data and only rank 0's artifact is written and
# used (the record's behaviour, kept on purpose: docs/trainer.md "Serialization").

QUANT_MIN_NUMEL = 65_536  # floating tensors with more elements than this are GPTQ matrices
GPTQ_BLOCK = 128
BSHF_MAGIC = b"BSHF"
XZ_MAGIC = b"\xfd7zXZ\x00"
CODE_LAUNCHER_HEAD = 'import brotli as B,base64 as A\nexec(B.decompress(A.b85decode("'
CODE_LAUNCHER_TAIL = '")))\n'
# (bank key, weight name of slice i, weight name of slice L+i or None)
BANKS = (
    ("qo_bank", "attn.c_q.weight", "attn.proj.weight"),
    ("kv_bank", "attn.c_k.weight", "attn.c_v.weight"),
    ("mlp_up_bank", "mlp.fc.weight", None),
    ("mlp_down_bank", "mlp.proj.weight", None),
)
# tap name suffix -> the weights that read that input
HESSIAN_TAPS = {
    "attn.qkv_in": ("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight"),
    "attn.proj": ("attn.proj.weight",),
    "mlp.fc": ("mlp.fc.weight",),
    "mlp.proj": ("mlp.proj.weight",),
}


def unbank_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Banked keys -> per-layer matrices blocks.{i}.attn.c_q.weight, ...; other keys unchanged."""
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        spec = next((b for b in BANKS if b[0] == key), None)
        if spec is None:
            out[key] = t
            continue
        _, first, second = spec
        n = t.shape[0] // 2 if second else t.shape[0]
        for i in range(n):
            out[f"blocks.{i}.{first}"] = t[i]
            if second:
                out[f"blocks.{i}.{second}"] = t[n + i]
    return out


def rebank_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of unbank_state_dict."""
    out = dict(sd)
    for key, first, second in BANKS:
        n = 0
        while f"blocks.{n}.{first}" in out:
            n += 1
        if n == 0:
            continue
        names = [f"blocks.{i}.{first}" for i in range(n)]
        if second:
            names += [f"blocks.{i}.{second}" for i in range(n)]
        out[key] = torch.stack([out.pop(name) for name in names])
    return out


def _first_tensor(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


@torch.no_grad()
def collect_hessians(model: nn.Module, calib_batches: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """H = sum over batches of X^T X (fp32) per weight, / number of batches, on the CPU.

    The c_q/c_k/c_v weights share one input, so they share one Hessian tensor (GPTQ copies it)."""
    sums: dict[str, torch.Tensor] = {}

    def tap(name: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        acc = sums.get(name)
        if acc is None:
            acc = sums[name] = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float32, device=x.device)
        acc.addmm_(x.T, x)

    was_training = model.training
    model.eval()
    model.hessian_tap = tap
    n_batches = 0
    try:
        for batch in calib_batches:
            model.forward_logits(_first_tensor(batch).to(device=device, dtype=torch.int64, non_blocking=True))
            n_batches += 1
    finally:
        model.hessian_tap = None
        model.train(was_training)
    if n_batches == 0:
        raise RuntimeError("GPTQ: the calibration loader yielded no batches (GPTQ_CALIBRATION_BATCHES=0 or no training shards)")
    hessians: dict[str, torch.Tensor] = {}
    for name, acc in sums.items():
        hess = (acc / n_batches).cpu()
        if name == "tok_emb":
            hessians["tok_emb.weight"] = hess
            continue
        prefix, _, suffix = name.partition(".")
        layer, _, kind = suffix.partition(".")
        for weight in HESSIAN_TAPS[kind]:
            hessians[f"{prefix}.{layer}.{weight}"] = hess
    return hessians


def gptq_quantize(w: torch.Tensor, hess: torch.Tensor, bits: int, clip_sigmas: float,
                  device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ of one (rows, cols) matrix with its (cols, cols) Hessian -> (int8 q, fp16 per-row scale)."""
    device = device or w.device
    rng = 2 ** (bits - 1) - 1
    w0 = w.detach().to(device=device, dtype=torch.float32)
    W = w0.clone()
    H = hess.detach().to(device=device, dtype=torch.float32).clone()
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    diag = torch.arange(cols, device=device)
    H[diag, diag] += 0.01 * torch.mean(torch.diag(H))
    perm = torch.argsort(torch.diag(H), descending=True)
    W = W[:, perm]
    H = H[perm][:, perm]
    # A 1% damping is the record's; more is tried only where its Cholesky would have failed.
    for attempt in range(6):
        L, info = torch.linalg.cholesky_ex(H)
        if int(info) == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if int(info) == 0:
                break
        H[diag, diag] += 0.01 * 10**attempt * torch.mean(torch.diag(H))
    else:
        raise RuntimeError(f"GPTQ: Hessian of shape {tuple(H.shape)} is not positive definite even after damping")
    # fp16 cannot hold the 1e-10 floor (it rounds to 0): an all-zero row would divide 0 by 0.
    scale16 = (clip_sigmas * w0.std(dim=1) / rng).clamp_min(1e-10).to(torch.float16)
    scale16 = torch.where(scale16 == 0, torch.full_like(scale16, 2.0**-24), scale16)
    s = scale16.float()
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, GPTQ_BLOCK):
        i2 = min(i1 + GPTQ_BLOCK, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = W1[:, j]
            q = torch.clamp(torch.round(col / s), -rng, rng)
            Q[:, i1 + j] = q
            err = (col - q * s) / U1[j, j]
            W1[:, j:] -= err.unsqueeze(1) * U1[j, j:].unsqueeze(0)
            Err1[:, j] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    q_int = torch.empty_like(Q)
    q_int[:, perm] = Q
    return q_int.to(torch.int8).cpu(), scale16.cpu()


def quant_spec(h: Any, name: str, t: torch.Tensor) -> tuple[int, float] | None:
    """(bits, clip sigmas) for a GPTQ tensor, None for a passthrough one (§6.3 classes)."""
    if not t.is_floating_point():
        return None
    if "tok_emb" in name:
        return h.embed_bits, h.embed_clip_sigmas
    if t.numel() > QUANT_MIN_NUMEL:
        return h.matrix_bits, h.matrix_clip_sigmas
    return None


def quantize_state_dict(h: Any, sd: dict[str, torch.Tensor], hessians: dict[str, torch.Tensor], log0: Callable[[str], None],
                        device: torch.device | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Unbanked state dict -> ({name.q, name.scale, passthrough name}, {name: category})."""
    result: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    for name, t in sd.items():
        spec = quant_spec(h, name, t)
        if spec is not None:
            if name not in hessians:
                raise RuntimeError(f"GPTQ: no Hessian collected for {name} (its hessian_tap never fired)")
            bits, k = spec
            result[name + ".q"], result[name + ".scale"] = gptq_quantize(t, hessians[name], bits, k, device)
            meta[name] = f"gptq (int{bits})"
        else:
            # clone: a bank slice or view would otherwise drag its whole storage into torch.save
            result[name] = (t.detach().to("cpu", torch.float16) if t.is_floating_point() else t.detach().cpu()).clone()
            meta[name] = f"passthrough ({str(result[name].dtype).removeprefix('torch.')})"
    categories: dict[str, set[str]] = {}
    for name, cat in meta.items():
        categories.setdefault(cat, set()).add(re.sub(r"blocks\.\d+", "blocks", name))
    log0("Quantized weights:")
    for cat in sorted(categories):
        log0(f"  {cat}: {', '.join(sorted(categories[cat]))}")
    return result, meta


def default_dtype(name: str) -> torch.dtype:
    """The dtype of a freshly built model's tensor: bf16 embedding, everything else fp32 (§4.1)."""
    return torch.bfloat16 if "tok_emb" in name else torch.float32


def dequantize_state_dict(result: dict[str, torch.Tensor], meta: dict[str, str],
                          dtypes: dict[str, torch.dtype] | None = None) -> dict[str, torch.Tensor]:
    """Inverse of quantize_state_dict (unbanked names; W = q * row scale, cast to the model's dtype)."""
    out: dict[str, torch.Tensor] = {}
    for name, cat in meta.items():
        dtype = (dtypes or {}).get(name) or default_dtype(name)
        if cat.startswith("passthrough"):
            t = result[name]
            out[name] = t.to(dtype) if t.is_floating_point() else t
        else:
            q, s = result[name + ".q"], result[name + ".scale"]
            out[name] = (q.float() * s.float().view(-1, *([1] * (q.ndim - 1)))).to(dtype)
    return out


def byte_shuffle(data: bytes, stride: int = 2) -> bytes:
    """BSHF + stride byte + bytes at positions 0 mod stride, then 1 mod stride, ... (groups alike bytes)."""
    src = np.frombuffer(data, dtype=np.uint8)
    return BSHF_MAGIC + bytes([stride]) + b"".join(src[p::stride].tobytes() for p in range(stride))


def byte_unshuffle(data: bytes) -> bytes:
    if data[:4] != BSHF_MAGIC or len(data) < 5:
        raise ValueError("quantized artifact: payload does not start with the BSHF byte-shuffle magic")
    stride = data[4]
    src = np.frombuffer(data, dtype=np.uint8, offset=5)
    out = np.empty_like(src)
    off = 0
    for p in range(stride):
        n = len(out[p::stride])
        out[p::stride] = src[off:off + n]
        off += n
    return out.tobytes()


def _import_brotli(why: str) -> Any:
    try:
        import brotli
    except ImportError as exc:
        raise RuntimeError(f"{why} needs the brotli package, which is not installed "
                           "(pip install brotli, or set COMPRESSOR=lzma)") from exc
    return brotli


def check_compressor(name: str) -> None:
    """Fail early and clearly: an unknown COMPRESSOR, or brotli without the package (never switch silently)."""
    if name not in ("brotli", "lzma"):
        raise ValueError(f"COMPRESSOR={name!r} is not supported (use brotli or lzma)")
    if name == "brotli":
        _import_brotli("COMPRESSOR=brotli")


def compress_bytes(data: bytes, compressor: str) -> bytes:
    check_compressor(compressor)
    if compressor == "lzma":
        return lzma.compress(data, preset=6)
    return _import_brotli("COMPRESSOR=brotli").compress(data, quality=11)


def decompress_bytes(data: bytes) -> bytes:
    """The compressor is recognised from the stream (xz magic, else brotli), so any COMPRESSOR can load."""
    if data.startswith(XZ_MAGIC):
        return lzma.decompress(data)
    return _import_brotli("reading a brotli-compressed artifact").decompress(data)


def code_launcher(minified: str, brotli: Any) -> str:
    """The self-extracting two-line file whose length is the counted code size."""
    payload = base64.b85encode(brotli.compress(minified.encode("utf-8"), quality=11)).decode("ascii")
    return CODE_LAUNCHER_HEAD + payload + CODE_LAUNCHER_TAIL


def code_size_bytes(h: Any, log0: Callable[[str], None] | None = None) -> int:
    """Counted code bytes (§6.5): the size of a self-extracting launcher holding the minified source.

    python_minifier (names kept, no literal hoisting, docstrings and other literal statements removed)
    -> brotli quality 11 -> base85 -> two-line launcher. Without python_minifier or brotli the raw
    file size is counted instead, and a line says so (h is unused: the counted file is this one)."""
    source = Path(__file__).read_text(encoding="utf-8")
    raw = len(source.encode("utf-8"))
    counted = raw
    try:
        import brotli
        import python_minifier
    except ImportError as exc:
        why = f"{exc.name} not installed"
    else:
        try:
            mini = python_minifier.minify(source, rename_locals=False, rename_globals=False,
                                          hoist_literals=False, remove_literal_statements=True)
        except Exception as exc:  # a minifier that cannot parse this Python must not lose a trained model
            why = f"python_minifier failed ({type(exc).__name__}: {exc})"
        else:
            counted = len(code_launcher(mini, brotli).encode("utf-8"))
            why = ""
    if why and log0:
        log0(f"code_size: {why}, counting the raw source bytes")
    if log0:
        log0(f"Code size (uncompressed): {raw} bytes")
        log0(f"Code size (compressed): {counted} bytes")
    return counted


def serialize(h: Any, model: nn.Module, calib_batches: Any, log0: Callable[[str], None], rank: int,
              world_size: int, device: torch.device) -> dict[str, Any]:
    """Code size (§6.5), rank-0 final_model.pt, unbank, Hessians, GPTQ, torch.save+byte shuffle+compress, rank-0 .ptz.
    calib_batches: an iterable of LongTensor (B, T) token batches (the §3.4 calibration loader, already limited to GPTQ_CALIBRATION_BATCHES).
    Returns dict(path, model_bytes, code_bytes, total_bytes, compressor) for results.json."""
    # CPU copies: portable final_model.pt, and GPTQ reads its weights from here.
    sd = {k.removeprefix("_orig_mod."): v.detach().cpu() for k, v in model.state_dict().items()}
    if rank == 0:
        torch.save(sd, h.model_path)
        log0(f"Serialized model: {os.path.getsize(h.model_path)} bytes")
    # After the save, before the work: a bad compressor keeps the trained weights (EVAL_ONLY_PATH reruns).
    check_compressor(h.compressor)
    code_bytes = code_size_bytes(h, log0)
    unbanked = unbank_state_dict(sd)
    bad = [k for k, v in unbanked.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a diverged run: GPTQ would only fail later, on a Hessian that is not positive definite
        raise RuntimeError(f"GPTQ: {len(bad)} weight tensor(s) are not finite (NaN/Inf), first {bad[0]}: training "
                           f"diverged (see the train_loss lines); final_model.pt is kept, no quantized model written")
    log0("GPTQ:collecting Hessians from calibration data...")
    t0 = time.perf_counter()
    hessians = collect_hessians(model, calib_batches, device)
    log0(f"GPTQ:collected {len(hessians)} Hessians in {time.perf_counter() - t0:.1f}s")
    result, meta = quantize_state_dict(h, unbanked, hessians, log0, device)
    buf = io.BytesIO()
    torch.save({"w": result, "m": meta}, buf)
    blob = compress_bytes(byte_shuffle(buf.getvalue()), h.compressor)
    path = h.quantized_model_path
    if rank == 0:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
        log0(f"Serialized model quantized+{h.compressor}: {len(blob)} bytes")
        log0(f"Total submission size quantized+{h.compressor}: {len(blob) + code_bytes} bytes")
    return dict(path=path, model_bytes=len(blob), code_bytes=code_bytes,
                total_bytes=len(blob) + code_bytes, compressor=h.compressor)


def load_quantized(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A .ptz file -> (quantized tensors, meta), as quantize_state_dict returned them."""
    with open(path, "rb") as f:
        blob = f.read()
    obj = torch.load(io.BytesIO(byte_unshuffle(decompress_bytes(blob))), map_location="cpu", weights_only=True)
    return obj["w"], obj["m"]


def deserialize(h: Any, path: str, device: torch.device,
                template: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Read a .ptz; return the banked state dict with the dtypes of a freshly built model (fp32 banks and control tensors, bf16 embedding).
    template: the state dict of the model it will be loaded into, if its dtypes differ from those."""
    result, meta = load_quantized(path)
    dtypes = {k: v.dtype for k, v in unbank_state_dict(template).items()} if template is not None else None
    sd = rebank_state_dict(dequantize_state_dict(result, meta, dtypes))
    return {k: v.to(device) for k, v in sd.items()}
# <<< SERIALIZATION SECTION END


# ==================================================================================================
# EVALUATION
# ==================================================================================================

class ByteTables:
    def __init__(self, base, lead, boundary, device):
        self.base = torch.as_tensor(base, dtype=torch.int16, device=device)
        self.lead = torch.as_tensor(lead, dtype=torch.bool, device=device)
        self.boundary = torch.as_tensor(boundary, dtype=torch.bool, device=device)

    def bytes_for(self, prev: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        b = self.base[tgt].to(torch.float64)
        return b + (self.lead[tgt] & ~self.boundary[prev]).to(torch.float64)


def _reduce_sums(sums: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(sums, op=dist.ReduceOp.SUM)
    return sums


def score_batch(model_fn, x, y, cu, max_seqlen: int, sinks) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flat per-target NLL of one packed batch; with a score dump also each target's sum p (target_scores)."""
    if sinks is None or not sinks.prob_sum:
        return model_fn(x, y, cu, max_seqlen, "none"), None
    return model_fn(x, y, cu, max_seqlen, "prob_sum")


@torch.no_grad()
def eval_plain(h, model_fn, val_tokens: torch.Tensor, tables: ByteTables, rank: int, world: int, device,
               sinks=None) -> tuple[float, float]:
    """Plain evaluation (§7.3): each rank scores whole batches of EVAL_SEQ_LEN sequences from its contiguous
    range; attention restarts at every BOS, every EVAL_SEQ_LEN piece and every batch start. sinks: ScoreSinks."""
    seq = h.eval_seq_len
    n_seqs = (val_tokens.numel() - 1) // seq
    lo, hi = n_seqs * rank // world, n_seqs * (rank + 1) // world
    batch_seqs = h.val_batch_seqs
    count = ((hi - lo) // batch_seqs) * batch_seqs
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for b in range(lo, lo + count, batch_seqs):
        chunk = val_tokens[b * seq:(b + batch_seqs) * seq + 1]
        x_np = chunk[:-1].numpy()
        cu, _ = build_cu_seqlens(x_np, seq)
        x = chunk[:-1].to(device).view(1, -1)
        y = chunk[1:].to(device).view(1, -1)
        cu_t = torch.from_numpy(cu).to(device)
        loss, psum = score_batch(model_fn, x, y, cu_t, seq, sinks)
        nbytes = tables.bytes_for(x.view(-1), y.view(-1))
        sums[0] += loss.double().sum()
        if sinks is not None:  # SCORE_DUMP_PATH, VAL_CHUNKS (TTT section): entry i scores token i+1
            sinks.add(torch.arange(b * seq, b * seq + y.numel(), device=device), loss, psum, nbytes)
        sums[1] += y.numel()
        sums[2] += nbytes.sum()
    _reduce_sums(sums, world)
    if sums[1] == 0:
        raise ValueError(f"plain eval scored no tokens: the validation set has {n_seqs} sequences of "
                         f"EVAL_SEQ_LEN={seq}, fewer than one batch of {batch_seqs} per rank; lower VAL_BATCH_TOKENS")
    val_loss = (sums[0] / sums[1]).item()
    val_bpb = (sums[0] / (math.log(2) * sums[2])).item()
    return val_loss, val_bpb


@torch.no_grad()
def eval_sliding(h, model_fn, val_tokens, tables, rank, world, device, log0, sinks=None) -> tuple[float, float]:
    """Sliding-window evaluation (§7.4): windows of EVAL_SEQ_LEN every EVAL_STRIDE tokens, 32 per packed
    batch; each window scores only its last EVAL_STRIDE targets (the first window scores all)."""
    W, s = h.eval_seq_len, h.eval_stride
    c = W - s
    N = val_tokens.numel() - 1
    starts = list(range(0, max(N - c, 0), s))
    mine = starts[len(starts) * rank // world: len(starts) * (rank + 1) // world]
    per_batch = 32
    n_batches = (len(mine) + per_batch - 1) // per_batch
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    t0 = time.perf_counter()
    for bi in range(n_batches):
        group = mine[bi * per_batch:(bi + 1) * per_batch]
        xs, ys, masks, bounds = [], [], [], []
        off = 0
        for st in group:
            ln = min(W, N - st)
            win = val_tokens[st:st + ln + 1]
            x, y = win[:-1], win[1:]
            m = torch.zeros(ln, dtype=torch.bool)
            m[0 if st == 0 else c:] = True
            bos = (x == BOS_ID).nonzero().view(-1).tolist()
            bounds.extend(off + p for p in sorted(set([0] + bos)))
            xs.append(x), ys.append(y), masks.append(m)
            off += ln
        cu = bounds + [off]
        cu = cu + [off] * ((-len(cu)) % 64)
        x = torch.cat(xs).to(device).view(1, -1)
        y = torch.cat(ys).to(device).view(1, -1)
        m = torch.cat(masks).to(device)
        cu_t = torch.tensor(cu, dtype=torch.int32, device=device)
        loss, psum = score_batch(model_fn, x, y, cu_t, W, sinks)
        nbytes = tables.bytes_for(x.view(-1)[m], y.view(-1)[m])
        sums[0] += loss[m].double().sum()
        if sinks is not None:  # SCORE_DUMP_PATH, VAL_CHUNKS (TTT section)
            pos = torch.cat([torch.arange(st, st + min(W, N - st)) for st in group]).to(device)
            sinks.add(pos[m], loss[m], None if psum is None else psum[m], nbytes)
        sums[1] += m.sum()
        sums[2] += nbytes.sum()
        if log0 is not None and (bi + 1) % 50 == 0:
            rl = (sums[0] / sums[1]).item()
            rb = (sums[0] / (math.log(2) * sums[2])).item()
            log0(f"sliding_progress: batch {bi + 1}/{n_batches} tokens:{int(sums[1].item())} running_loss:{rl:.4f} "
                 f"running_bpb:{rb:.4f} elapsed:{time.perf_counter() - t0:.1f}s")
    _reduce_sums(sums, world)
    return (sums[0] / sums[1]).item(), (sums[0] / (math.log(2) * sums[2])).item()


# ==================================================================================================
# TEST-TIME TRAINING: LoRA TTT evaluation, phased global SGD, n-gram corrector
# ==================================================================================================

# >>> TTT SECTION BEGIN
# Story: score dumps and chunk sums (every evaluation) -> documents of the validation stream (§3.6) ->
# length-sorted batches and the longest-first queue (§7.5) -> static cost-balanced assignment of queue batches to
# ranks -> batched per-document LoRA adapters -> the n-gram corrector (§7.8) -> the TTT forward ->
# one batch's chunk loop (score, then update) -> phased global SGD (§7.6) -> compile warm-up on
# synthetic tokens (§7.7) -> the timed evaluator run_ttt_eval. docs/trainer.md "Test-time training"
# lists every decided deviation from the record.

def score_dump_path(h, label: str) -> str:
    """SCORE_DUMP_PATH=x.npz: evaluation `label` writes x.<label>.npz (spaces -> _); main copies the final
    score's file to x.npz itself."""
    base, ext = os.path.splitext(h.score_dump_path)
    return f"{base}.{label.replace(' ', '_')}{ext or '.npz'}"


class ScoreDump:
    """Per-target record of one evaluation: entry i scores token i+1 of the trimmed stream given tokens <= i.
    nll (nats), prob_sum (sum over the vocabulary of the scored distribution's probabilities, target_scores) and
    count (times scored) are sums over scorings and ranks: a target scored k times holds the sum of its k NLLs
    and of its k sums p (about k; golfrun's audit divides by count and flags count > 1 on its own). Never
    scored: nll and prob_sum NaN. step is the TTT scoring event (-1 elsewhere)."""

    def __init__(self, n_targets: int, device):
        self.nll = torch.zeros(n_targets, dtype=torch.float64, device=device)
        self.prob_sum = torch.zeros(n_targets, dtype=torch.float64, device=device)
        self.count = torch.zeros(n_targets, dtype=torch.int64, device=device)
        self.step = torch.full((n_targets,), -1, dtype=torch.int64, device=device)

    @classmethod
    def maybe(cls, h, val_tokens: torch.Tensor, device):
        return cls(val_tokens.numel() - 1, device) if h.score_dump_path else None

    def add(self, pos: torch.Tensor, nll: torch.Tensor, prob_sum: torch.Tensor, step: int = -1) -> None:
        pos = pos.reshape(-1).to(self.nll.device)
        self.nll.index_add_(0, pos, nll.detach().reshape(-1).double())
        self.prob_sum.index_add_(0, pos, prob_sum.detach().reshape(-1).double())
        self.count.index_add_(0, pos, torch.ones_like(pos))
        if step >= 0:
            self.step[pos] = step

    def write(self, path: str, val_tokens: torch.Tensor, tables, rank: int, world: int) -> None:
        if world > 1:
            for t, op in ((self.nll, dist.ReduceOp.SUM), (self.prob_sum, dist.ReduceOp.SUM),
                          (self.count, dist.ReduceOp.SUM), (self.step, dist.ReduceOp.MAX)):
                dist.all_reduce(t, op=op)
        if rank != 0:
            return
        nll, prob_sum = self.nll.cpu().numpy().copy(), self.prob_sum.cpu().numpy().copy()
        count = self.count.cpu().numpy()
        nll[count == 0] = prob_sum[count == 0] = np.nan
        v = val_tokens.to(tables.base.device)
        nbytes = tables.bytes_for(v[:-1], v[1:]).cpu().numpy().astype(np.int64)
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, nll=nll, prob_sum=prob_sum, bytes=nbytes, count=count, step=self.step.cpu().numpy())


class ChunkScores:
    """VAL_CHUNKS=C: one evaluation's NLL (nats), scored targets and bytes summed over C chunks of the validation
    documents. Chunk c holds documents [c·D/C, (c+1)·D/C) of the D in the (subset) stream, by position, so two
    evaluations of the same documents (a variant and its baseline on one VAL_DOC_SEED) have the same chunks
    whatever order they score them in; target i (scoring token i+1) belongs to the document it lies in, as in
    ScoreDump. The sums over chunks are the evaluation's own totals. Kept on the device: C numbers per sum."""

    def __init__(self, val_tokens: torch.Tensor, n_chunks: int, device):
        starts = find_documents(val_tokens.numpy())[:, 0]
        n = min(n_chunks, len(starts))
        bounds = starts[np.arange(n) * len(starts) // n]
        bounds[0] = 0  # a stream that starts mid-document: its first targets go to chunk 0
        self.bounds = torch.as_tensor(bounds, dtype=torch.int64, device=device)
        self.sums = torch.zeros(3, n, dtype=torch.float64, device=device)  # nll, targets, bytes

    @classmethod
    def maybe(cls, h, val_tokens: torch.Tensor, device):
        return cls(val_tokens, h.val_chunks, device) if h.val_chunks > 0 else None

    def add(self, pos: torch.Tensor, nll: torch.Tensor, nbytes: torch.Tensor) -> None:
        pos = pos.reshape(-1).to(self.bounds.device)
        c = torch.searchsorted(self.bounds, pos, right=True) - 1
        for row, vals in enumerate((nll.detach().reshape(-1).double(), torch.ones_like(c, dtype=torch.float64),
                                    nbytes.reshape(-1).double())):
            self.sums[row].index_add_(0, c, vals)

    def entry(self, world: int) -> dict:
        """{"nll": [...], "targets": [...], "bytes": [...]}: results.json's `chunks` of the evaluation."""
        if world > 1:
            dist.all_reduce(self.sums, op=dist.ReduceOp.SUM)
        nll, targets, nbytes = self.sums.cpu().tolist()
        return {"nll": nll, "targets": [int(t) for t in targets], "bytes": [int(b) for b in nbytes]}


class ScoreSinks:
    """Where an evaluation sends its per-target scores besides its totals: the score dump (SCORE_DUMP_PATH) and
    the chunk sums (VAL_CHUNKS). None of the evaluators' `sinks` when neither is asked for."""

    def __init__(self, dump: ScoreDump | None, chunks: ChunkScores | None):
        self.dump, self.chunks = dump, chunks

    @classmethod
    def maybe(cls, h, val_tokens: torch.Tensor, device):
        dump, chunks = ScoreDump.maybe(h, val_tokens, device), ChunkScores.maybe(h, val_tokens, device)
        return None if dump is None and chunks is None else cls(dump, chunks)

    @property
    def prob_sum(self) -> bool:
        """The dump also records each target's sum p, which takes another reduction of the log-probabilities."""
        return self.dump is not None

    def add(self, pos: torch.Tensor, nll: torch.Tensor, psum, nbytes: torch.Tensor, step: int = -1) -> None:
        if self.dump is not None:
            self.dump.add(pos, nll, psum, step)
        if self.chunks is not None:
            self.chunks.add(pos, nll, nbytes)

    def finish(self, h, label: str, val_tokens, tables, rank: int, world: int, entry: dict) -> None:
        """Writes the dump of evaluation `label` and puts the chunk sums into its results.json entry."""
        if self.dump is not None:
            self.dump.write(score_dump_path(h, label), val_tokens, tables, rank, world)
        if self.chunks is not None:
            entry["chunks"] = self.chunks.entry(world)


def find_documents(tokens: np.ndarray) -> np.ndarray:
    """(D, 2) int64 rows (start, length) (§3.6): a document runs from its BOS through the next document's
    BOS inclusive; the last one to the end of the stream. A stream that does not start with BOS gets a
    document starting at 0 (deviation: the record assumes the BOS), so every target belongs to one."""
    bos = np.flatnonzero(tokens == BOS_ID).astype(np.int64)
    if len(bos) == 0 or bos[0] != 0:
        bos = np.concatenate([np.zeros(1, dtype=np.int64), bos])
    ends = np.append(bos[1:] + 1, len(tokens))
    lens = ends - bos
    keep = lens >= 2
    return np.stack([bos[keep], lens[keep]], axis=1)


def select_documents(h, docs: np.ndarray) -> np.ndarray:
    """TTT_DOC_LIMIT (first N documents); VAL_DOC_FRACTION was applied to the stream (subset_validation)."""
    if h.ttt_doc_limit > 0:
        docs = docs[:h.ttt_doc_limit]
    return docs


def make_ttt_batches(h, docs: np.ndarray) -> tuple[list[np.ndarray], list[int]]:
    """Documents sorted by length (stable) cut into TTT_BATCH_SIZE batches (orig index 0 = shortest);
    the queue runs longest batch first, or the TTT_EVAL_BATCHES list (orig indices) ascending."""
    order = np.argsort(docs[:, 1], kind="stable")
    bs = h.ttt_batch_size
    batches = [docs[order[i:i + bs]] for i in range(0, len(order), bs)]
    if h.ttt_eval_batches.strip():
        wanted = sorted({int(x) for x in h.ttt_eval_batches.split(",") if x.strip()})
        bad = [b for b in wanted if not 0 <= b < len(batches)]
        if bad:
            raise ValueError(f"TTT_EVAL_BATCHES={h.ttt_eval_batches!r}: batches {bad} do not exist "
                             f"(there are {len(batches)}, numbered from 0)")
        return batches, wanted
    queue = sorted(range(len(batches)), key=lambda i: -int(batches[i][:, 1].max()))
    return batches, queue


def ttt_batch_cost(h, batch: np.ndarray) -> int:
    """Padded tokens the chunk loop pushes through the model: rows x sum over chunks of the window width."""
    k = int(-(-(int(batch[:, 1].max()) - 1) // h.ttt_chunk_size))
    widths = np.minimum(h.ttt_chunk_size * np.arange(1, k + 1), h.ttt_eval_seq_len)
    return len(batch) * int(widths.sum())


def assign_batches(costs: list[int], world: int) -> list[int]:
    """Owner rank of each queue entry: greedy longest-processing-time in queue order (ties -> lowest rank).
    Static and computed identically on every rank, so it needs no shared file and works across nodes."""
    load = [0] * world
    owner = []
    for c in costs:
        r = min(range(world), key=lambda i: (load[i], i))
        owner.append(r)
        load[r] += c
    return owner


def check_ttt_settings(h) -> None:
    """TTT settings that would only fail at the end of a run, rejected at start."""
    if h.ttt_optimizer not in ("adam", "sgd"):
        raise ValueError(f"TTT_OPTIMIZER={h.ttt_optimizer!r} must be adam or sgd")
    for name in ("ttt_lora_rank", "ttt_chunk_size", "ttt_batch_size", "ttt_grad_steps", "ttt_eval_seq_len"):
        if getattr(h, name) < 1:
            raise ValueError(f"{name.upper()}={getattr(h, name)} must be >= 1")
    if h.ttt_eval_seq_len < h.ttt_chunk_size:
        raise ValueError(f"TTT_EVAL_SEQ_LEN={h.ttt_eval_seq_len} must be >= TTT_CHUNK_SIZE={h.ttt_chunk_size}")
    if not 0.0 < h.val_doc_fraction <= 1.0:
        raise ValueError(f"VAL_DOC_FRACTION={h.val_doc_fraction} must be in (0, 1]")
    if h.corrector_alpha < 0:
        raise ValueError(f"CORRECTOR_ALPHA={h.corrector_alpha} must be >= 0")
    corrector_orders(h)


def corrector_orders(h) -> list[int]:
    try:
        orders = sorted({int(x) for x in h.corrector_orders.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"CORRECTOR_ORDERS={h.corrector_orders!r} must be a comma list of integers") from None
    if not orders or orders[0] < 1:
        raise ValueError(f"CORRECTOR_ORDERS={h.corrector_orders!r} must list orders >= 1")
    return orders


class BatchedLora:
    """One LoRA set per document of a batch: delta(x) = (x A^T) B^T with A (rank, in) ~ U(+-1/sqrt(in)),
    B (out, rank) = 0, no scaling. Kinds q, k, v, o, mlp exist once per layer application (slot), head once.
    The weights are plain leaf tensors, not nn.Parameters: torch.compile keeps parameter shapes static, and
    a static batch dimension would recompile the TTT forward inside the eval timer for the queue's one
    batch of fewer rows; as plain tensors their batch dimension can be symbolic (compile_ttt_forward)."""

    def __init__(self, h, n_slots: int, bsz: int, device):
        d = h.model_dim
        kv = h.num_kv_heads * (d // h.num_heads)
        kinds = {"q": d, "v": kv}
        if h.ttt_k_lora:
            kinds["k"] = kv
        if h.ttt_o_lora:
            kinds["o"] = d
        if h.ttt_mlp_lora:
            kinds["mlp"] = d
        r = h.ttt_lora_rank
        self.a: dict[str, torch.Tensor] = {}
        self.b: dict[str, torch.Tensor] = {}
        for kind, out in list(kinds.items()) + [("head", h.vocab_size)]:
            s = 1 if kind == "head" else n_slots
            self.a[kind] = torch.empty(s, bsz, r, d, device=device, requires_grad=True)
            self.b[kind] = torch.zeros(s, bsz, out, r, device=device, requires_grad=True)
        self.bsz = bsz

    def parameters(self) -> list[torch.Tensor]:
        return [t for kind in sorted(self.a) for t in (self.a[kind], self.b[kind])]

    @torch.no_grad()
    def reset(self, gen: torch.Generator) -> None:
        for kind in sorted(self.a.keys()):
            bound = 1.0 / math.sqrt(self.a[kind].size(-1))
            self.a[kind].uniform_(-bound, bound, generator=gen)
            self.b[kind].zero_()

    def add(self, slot: int, kind: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if kind not in self.a:
            return out
        A = self.a[kind][slot].to(x.dtype)
        B = self.b[kind][slot].to(x.dtype)
        return out + torch.matmul(torch.matmul(x, A.transpose(1, 2)), B.transpose(1, 2)).view_as(out)

    def add_qkv(self, slot: int, x, q, k, v):
        return self.add(slot, "q", x, q), self.add(slot, "k", x, k), self.add(slot, "v", x, v)


def ttt_adapter_generator(h, device, batch_index: int) -> torch.Generator:
    """Adapter initialisation depends on SEED and the batch, never on which rank runs it (quirk §11.13)."""
    g = torch.Generator(device=device)
    g.manual_seed((h.seed * 1_000_003 + batch_index) % (2**63 - 1))
    return g


def make_ttt_optimizer(h, params):
    params = list(params)
    if h.ttt_optimizer == "sgd":
        return torch.optim.SGD(params, lr=h.ttt_lora_lr, momentum=h.ttt_beta1, weight_decay=h.ttt_weight_decay)
    return torch.optim.AdamW(params, lr=h.ttt_lora_lr, betas=(h.ttt_beta1, h.ttt_beta2), eps=1e-10,
                             weight_decay=h.ttt_weight_decay, fused=params[0].device.type == "cuda")


class NgramCorrector:
    """The n-gram posterior corrector of §7.8 with the record's semantics, on tensors instead of dicts.

    State per slot: unigram counts (Laplace 1) and the history of pushed tokens. The table {token: count} of
    an order-n context is recovered exactly at query time, densely over the history: the positions j whose
    preceding min(n-1, j) tokens equal the slot's current context (same length, token by token) are the
    context's occurrences, and the tokens at those positions are its counts. Order 1's table is the whole
    history. Nothing waits on the GPU: history lengths have a host copy and no step has a data-dependent size.
    Its own time is taken with CUDA events (host clock on the CPU), so measuring it adds no sync either."""

    def __init__(self, slots: int, vocab: int, alpha: float, orders: list[int], device, cap: int = 1024):
        self.S, self.V, self.alpha, self.orders, self.device = slots, vocab, alpha, orders, device
        self.cap0 = cap
        self.cpu_seconds = 0.0
        self.events: list[tuple] = []
        self.reset()

    def reset(self) -> None:
        self.uni = torch.ones(self.S, self.V, dtype=torch.float64, device=self.device)
        self.cap = self.cap0
        self.hist = torch.zeros(self.S, self.cap, dtype=torch.int64, device=self.device)
        self.m = np.zeros(self.S, dtype=np.int64)  # history length per slot (host copy, no syncs)

    def _grow(self, need: int) -> None:
        if need <= self.cap:
            return
        cap = max(need, 2 * self.cap)
        hist = torch.zeros(self.S, cap, dtype=self.hist.dtype, device=self.device)
        hist[:, :self.cap] = self.hist
        self.hist, self.cap = hist, cap

    def _counts(self, n: int) -> torch.Tensor:
        """(S, V) counts of the table of each slot's current context of order n (zero rows: no table)."""
        if n == 1:
            return self.uni - 1.0
        mmax = int(self.m.max())
        m = torch.as_tensor(self.m, device=self.device)
        H = self.hist[:, :mmax]
        pos = torch.arange(mmax, device=self.device)
        Lq = torch.clamp(m, max=n - 1)[:, None]
        match = (pos[None, :] < m[:, None]) & (torch.clamp(pos, max=n - 1)[None, :] == Lq)
        for i in range(1, min(n, mmax + 1)):
            before = torch.zeros_like(H)  # before[:, j] = H[:, j - i]; j < i never passes the length test
            before[:, i:] = H[:, :mmax - i]
            now = torch.gather(self.hist, 1, (m - i).clamp(min=0)[:, None])
            match &= (i > Lq) | (before == now)
        K = torch.zeros(self.S, self.V, dtype=torch.float64, device=self.device)
        return K.scatter_add_(1, H, match.double())

    def _timed(self):
        """Start of a timed section; pass the result to _stop."""
        if self.device.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def _stop(self, start) -> None:
        if self.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((start, end))
        else:
            self.cpu_seconds += time.perf_counter() - start

    @property
    def seconds(self) -> float:
        """Time spent in bias and update (waits for the GPU: call once, at the end)."""
        if self.events:
            torch.cuda.synchronize(self.device)
        return self.cpu_seconds + sum(a.elapsed_time(b) for a, b in self.events) / 1000.0

    @torch.no_grad()
    def bias(self, active: np.ndarray) -> torch.Tensor:
        """(S, 1, V) fp32 additive logit bias for the next chunk; zero rows for inactive slots."""
        t = self._timed()
        logq = self.uni.log() - self.uni.sum(1, keepdim=True).log()
        beta = logq.clone()
        if self.m.max() > 0:
            for n in self.orders:
                K = self._counts(n)
                T = K.sum(1, keepdim=True)
                corr = torch.log((K + 1.0) / (T + self.V)) - logq
                beta += torch.where(K > 0, corr, torch.zeros_like(corr))
        beta = self.alpha * beta
        beta[~torch.as_tensor(active, device=self.device)] = 0.0
        out = beta.float().unsqueeze(1)
        self._stop(t)
        return out

    @torch.no_grad()
    def update(self, tokens: torch.Tensor, n_valid: np.ndarray) -> None:
        """Push tokens[s, :n_valid[s]] (the slot's scored targets, in order) onto each slot's state."""
        t = self._timed()
        S, C = tokens.shape
        # one column more than the longest history: the scratch column that invalid entries write to, so
        # that no shape depends on the data
        self._grow(int((self.m + n_valid).max()) + 1)
        m = torch.as_tensor(self.m, device=self.device)
        nv = torch.as_tensor(n_valid, device=self.device)
        J = m[:, None] + torch.arange(C, device=self.device)[None, :]
        valid = torch.arange(C, device=self.device)[None, :] < nv[:, None]
        self.hist.scatter_(1, torch.where(valid, J, self.cap - 1), torch.where(valid, tokens, 0))
        self.uni.scatter_add_(1, tokens, valid.double())
        self.m = self.m + n_valid
        self._stop(t)


def ttt_token_nll(model: GPT, lora: BatchedLora | None, x: torch.Tensor, y: torch.Tensor,
                  bias: torch.Tensor, prob_sum: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, W) per-token CE of the adapted model, dense causal attention per row, RoPE from the window start;
    bias (B, 1, V) is added after the softcap (§7.8), so softmax still normalizes over the full vocabulary.
    Without the corrector the bias is zero (adding it is exact): one compiled graph serves both.
    Returns (nll, sum p): sum p (B, W) of the biased distribution with prob_sum (score dumps), else None."""
    logits = model.logits_from_hidden(model.hidden_states(x, lora=lora), lora=lora) + bias
    return target_scores(logits, y, prob_sum)


class TTTContext:
    """Everything one rank's chunk loop needs, built once per evaluation."""

    def __init__(self, h, model, fwd, tokens, tables, device, corrector, sinks):
        self.h, self.model, self.fwd, self.tokens, self.tables = h, model, fwd, tokens, tables
        self.device, self.corrector, self.sinks = device, corrector, sinks
        enc, dec = model.schedule()
        self.n_slots = len(enc) + len(dec)
        self.loras: dict[int, BatchedLora] = {}
        self.zero_bias: dict[int, torch.Tensor] = {}
        self.step = 0

    def lora(self, bsz: int) -> BatchedLora:
        if bsz not in self.loras:
            self.loras[bsz] = BatchedLora(self.h, self.n_slots, bsz, self.device)
            self.zero_bias[bsz] = torch.zeros(bsz, 1, self.h.vocab_size, device=self.device)
        return self.loras[bsz]


def ttt_run_batch(ctx: TTTContext, batch: np.ndarray, batch_index: int) -> torch.Tensor:
    """Score-first LoRA TTT of one batch (§7.5). Returns float64 sums (loss, targets, bytes)."""
    h, dev = ctx.h, ctx.device
    C, S = h.ttt_chunk_size, h.ttt_eval_seq_len
    n = len(batch)
    lora = ctx.lora(n)
    lora.reset(ttt_adapter_generator(h, dev, batch_index))
    opt = make_ttt_optimizer(h, lora.parameters())
    starts = torch.as_tensor(batch[:, 0], device=dev)
    P = batch[:, 1] - 1
    K = -(-P // C)
    N = ctx.tokens.numel() - 1
    sums = torch.zeros(3, dtype=torch.float64, device=dev)
    for c in range(int(K.max())):
        active = c < K
        last = c == K - 1
        chunk_end = np.where(last, P, C * (c + 1))
        ws = np.maximum(0, chunk_end - S)
        wl = np.where(active, chunk_end - ws, 0)
        off = C * c - ws
        W = min(C * (c + 1), S)
        t = torch.arange(W, device=dev)[None, :]
        ws_t, wl_t, off_t = (torch.as_tensor(a, device=dev)[:, None] for a in (ws, wl, off))
        idx = starts[:, None] + ws_t + t
        inwin = t < wl_t
        x = torch.where(inwin, ctx.tokens[idx.clamp(max=N)], 0)
        y = torch.where(inwin, ctx.tokens[(idx + 1).clamp(max=N)], 0)
        score = inwin & (t >= off_t)
        train_rows = active & ~last
        bias = ctx.zero_bias[n]
        if ctx.corrector is not None:
            bias = ctx.corrector.bias(np.pad(active, (0, ctx.corrector.S - n)))[:n]
        # grad-enabled even when no row trains (a batch's last chunk): a no-grad call would compile a
        # second graph, and this forward costs the same either way
        nll, psum = ctx.fwd(ctx.model, lora, x, y, bias)
        nd = nll.detach()
        sums[0] += torch.where(score, nd.double(), 0.0).sum()
        sums[1] += score.sum()
        nbytes = target_bytes(ctx.tables, x, y)
        sums[2] += torch.where(score, nbytes, 0.0).sum()
        if ctx.sinks is not None:
            ctx.sinks.add(idx[score], nd[score], None if psum is None else psum[score], nbytes[score], ctx.step)
        if ctx.corrector is not None:
            cols = (off_t + torch.arange(C, device=dev)[None, :]).clamp(max=W - 1)
            pushed = torch.gather(y, 1, cols)
            nv = np.pad(np.where(active, chunk_end - C * c, 0), (0, ctx.corrector.S - n))
            ctx.corrector.update(F.pad(pushed, (0, 0, 0, ctx.corrector.S - n)), nv)
        if train_rows.any():
            mask = score & torch.as_tensor(train_rows, device=dev)[:, None]
            for g in range(h.ttt_grad_steps):
                if g > 0:
                    nll, _ = ctx.fwd(ctx.model, lora, x, y, bias)
                opt.zero_grad(set_to_none=True)
                (torch.where(mask, nll, 0.0).sum() / C).backward()
                opt.step()
        ctx.step += 1
    return sums


def target_bytes(tables, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return tables.bytes_for(x.reshape(-1), y.reshape(-1)).view(y.shape)


def global_ttt_lr(h, c: int, n_chunks: int) -> float:
    wc = h.global_ttt_warmup_chunks
    if c < wc:
        return h.global_ttt_warmup_start_lr + (h.global_ttt_lr - h.global_ttt_warmup_start_lr) * c / wc
    span = max(n_chunks - 1 - wc, 1)
    return h.global_ttt_lr * 0.5 * (1.0 + math.cos(math.pi * (c - wc) / span))


def global_sgd(h, model: GPT, tokens: torch.Tensor, docs: np.ndarray, rank: int, world: int, device, log0) -> int:
    """Phased global SGD (§7.6) on the concatenated already-scored documents: every base parameter, SGD with
    momentum, cosine LR per 32K-token chunk (last chunk skipped), sequences split contiguously across ranks,
    gradients all-reduced and averaged, norm clipped. Returns the number of trained chunks."""
    stream = torch.cat([tokens[int(s):int(s) + int(l)] for s, l in docs])
    n = stream.numel()
    CT, S = h.global_ttt_chunk_tokens, h.ttt_eval_seq_len
    n_chunks = -(-(n - 1) // CT)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    model.train()
    opt = torch.optim.SGD(params, lr=h.global_ttt_lr, momentum=h.global_ttt_momentum)
    t0 = time.perf_counter()
    for c in range(n_chunks - 1):
        lr = global_ttt_lr(h, c, n_chunks)
        for g in opt.param_groups:
            g["lr"] = lr
        lo = c * CT
        nseq = (min(lo + CT, n - 1) - lo) // S
        a, b = nseq * rank // world, nseq * (rank + 1) // world
        bs = h.global_ttt_batch_seqs
        n_micro = -(-(-(-nseq // world)) // bs)
        for _ in range(h.global_ttt_epochs):
            for mb in range(n_micro):
                s0, s1 = min(a + mb * bs, b), min(a + (mb + 1) * bs, b)
                if s1 > s0:
                    x = stream[lo + s0 * S:lo + s1 * S]
                    y = stream[lo + s0 * S + 1:lo + s1 * S + 1]
                    if h.global_ttt_respect_doc_boundaries:
                        cu, max_seg = build_cu_seqlens(x.cpu().numpy(), S)
                    else:
                        cu, max_seg = np.arange(0, x.numel() + 1, S, dtype=np.int32), S
                        cu = np.concatenate([cu, np.full((-len(cu)) % 64, x.numel(), dtype=np.int32)])
                    loss = model(x.view(1, -1), y.view(1, -1), torch.from_numpy(cu).to(device), max_seg)
                    loss.backward()
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                if world > 1:
                    flat = torch.cat([g.reshape(-1).float() for g in grads])
                    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
                    flat /= world
                    o = 0
                    for g in grads:
                        g.copy_(flat[o:o + g.numel()].view_as(g))
                        o += g.numel()
                for p, g in zip(params, grads):
                    p.grad = g
                if h.global_ttt_grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, h.global_ttt_grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
        sync(device)
        log0(f"tttg: c{c + 1}/{n_chunks} lr:{lr:.6f} t:{time.perf_counter() - t0:.1f}s")
    model.eval()
    for p in params:
        p.requires_grad_(False)
    return max(n_chunks - 1, 0)


def compile_ttt_forward(backend: str = "inductor", prob_sum: bool = False):
    """ttt_token_nll compiled with two symbolic dimensions, batch rows and window width W, so the queue's
    batches of every size >= 2 and every W share one graph; every other dimension stays static (making
    the LoRA shapes symbolic too tripled the compile time on an H100). Duck sizing is off while tracing:
    it would fuse rows and W into one symbol whenever they are equal at the first call. prob_sum is fixed
    per forward (a score dump's graph also returns sum p), so the warm-up compiles the graph the eval runs."""
    compiled = torch.compile(ttt_token_nll, backend=backend)

    def fwd(model, lora, x, y, bias):
        mark = torch._dynamo.maybe_mark_dynamic
        for t in (x, y):
            mark(t, 0)
            mark(t, 1)
        mark(bias, 0)
        for t in lora.parameters():
            mark(t, 1)
        with torch.fx.experimental._config.patch(use_duck_shape=False):
            return compiled(model, lora, x, y, bias, prob_sum)
    return fwd


def graphs_compiled() -> int:
    """Graphs dynamo has compiled in this process (torch._dynamo is loaded by torch.compile; 0 without it)."""
    dynamo = sys.modules.get("torch._dynamo.utils")
    return int(dynamo.counters["stats"]["unique_graphs"]) if dynamo else 0


def ttt_compile_warmup(h, model: GPT, fwd, n_slots: int, device, batch_sizes: list[int]) -> None:
    """Compile the TTT forward before the timer for both window widths and every batch row count of the
    queue (sizes >= 2 share a graph; a one-row batch has its own), on synthetic tokens only (uniform ids
    from a private generator seeded 0, never validation data) and throwaway adapter sets."""
    g = torch.Generator(device=device)
    g.manual_seed(0)
    C, S, V = h.ttt_chunk_size, h.ttt_eval_seq_len, h.vocab_size
    for bsz in batch_sizes:
        lora = BatchedLora(h, n_slots, bsz, device)
        lora.reset(g)
        opt = make_ttt_optimizer(h, lora.parameters())
        bias = torch.zeros(bsz, 1, V, device=device)
        for W in sorted({min(C, S), S}):
            x = torch.randint(0, V, (bsz, W), generator=g, device=device)
            y = torch.randint(0, V, (bsz, W), generator=g, device=device)
            nll, _ = fwd(model, lora, x, y, bias)
            nll[:, :min(C, W)].mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    sync(device)


def ttt_warmup(h, model: GPT, fwd, sizes: list[int], device, log0) -> float:
    """Compile warm-up before the timer for every batch size of the queue; seconds spent (0 when bypassed)."""
    if h.ttt_debug_bypass:
        log0("ttt_lora:DEBUG BYPASS active - using forward_logits directly (no compile warmup)")
        return 0.0
    log0("ttt_lora:warming up compile")
    tw = time.perf_counter()
    enc, dec = model.schedule()
    ttt_compile_warmup(h, model, fwd, len(enc) + len(dec), device, sizes)
    warmup_s = time.perf_counter() - tw
    log0(f"ttt_lora:compile warmup done ({warmup_s:.1f}s)")
    return warmup_s


def ttt_phases(h, batches: list[np.ndarray], queue: list[int], n_docs: int, log0) -> list[list[int]]:
    """The queue as one part, or (phased) as the batches up to PHASED_TTT_PREFIX_DOCS documents and the rest."""
    if not h.phased_ttt_enabled:
        return [queue]
    prefix = min(h.phased_ttt_prefix_docs, n_docs)
    log0(f"ttt_phased: total_docs:{n_docs} prefix_docs:{prefix} suffix_docs:{n_docs - prefix}")
    seen, cut = 0, len(queue)
    for i, q in enumerate(queue):
        seen += len(batches[q])
        if seen >= prefix:
            cut = i + 1
            break
    return [queue[:cut], queue[cut:]]


def log_ttt_batch(log0, phased: bool, q: int, n_batches: int, bs: torch.Tensor, sums: torch.Tensor,
                  lens: np.ndarray, gd: int) -> None:
    b, s = bs.tolist(), sums.tolist()
    bl, bb = b[0] / max(b[1], 1), b[0] / (math.log(2) * max(b[2], 1e-12))
    rl, rb = s[0] / max(s[1], 1), s[0] / (math.log(2) * max(s[2], 1e-12))
    if phased:
        log0(f"ttp: b{q + 1}/{n_batches} bl:{bl:.4f} bb:{bb:.4f} rl:{rl:.4f} rb:{rb:.4f} "
             f"dl:{int(lens.min())}-{int(lens.max())} gd:{gd}")
    else:
        log0(f"ttt_progress: batch {q + 1}/{n_batches} batch_loss:{bl:.4f} batch_bpb:{bb:.4f} "
             f"running_loss:{rl:.4f} running_bpb:{rb:.4f} doc_len:{int(lens.min())}-{int(lens.max())}")


def global_sgd_pause(ctx: TTTContext, part: list[int], batches: list[np.ndarray], t0: float, info: dict,
                     rank: int, world: int, log0) -> None:
    """Between the phases (§7.6): global SGD on the phase-1 documents, corrector reset, phase-2 step numbers."""
    h, model, device = ctx.h, ctx.model, ctx.device
    if world > 1:
        dist.barrier()
    # every rank knows the phase-1 set: the assignment is static, so nothing needs gathering
    entries = sorted((q, j) for q in part for j in range(len(batches[q])))
    chosen = entries[:h.phased_ttt_prefix_docs]
    sel = np.array([batches[q][j] for q, j in chosen], dtype=np.int64).reshape(-1, 2)
    sync(device)
    t_pause = time.perf_counter() - t0
    info.update(phase1_s=t_pause, prefix_docs_scored=len(entries), global_sgd_docs=len(chosen))
    log0(f"ttpp: pd:{len(entries)} gd:{len(chosen)} t:{t_pause:.1f}s")
    tg = time.perf_counter()
    info["global_sgd_chunks"] = global_sgd(h, model, ctx.tokens, sel, rank, world, device, log0) if len(sel) else 0
    info["global_sgd_s"] = time.perf_counter() - tg
    if ctx.corrector is not None:
        ctx.corrector.reset()
    # phase-2 steps are numbered after every possible phase-1 step of every rank
    ctx.step = sum(-(-(int(batches[q][:, 1].max()) - 1) // h.ttt_chunk_size) for q in part)
    info["phase2_first_step"] = ctx.step
    if world > 1:
        dist.barrier()
    log0(f"ttpr: t:{time.perf_counter() - t0:.1f}s")


def run_ttt_eval(h, model, val_tokens, tables, rank, world, device, log0, backend: str | None = None) -> dict:
    """Phased (or plain) LoRA test-time training of the quantized model; returns the results.json entry.
    backend: the torch.compile backend of the TTT forward; None = inductor on CUDA (COMPILE_ENABLED), eager
    on the CPU (tests pass one to exercise the compiled path at tiny sizes)."""
    check_ttt_settings(h)
    model.looping = h.num_loops > 0
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokens = val_tokens.to(device)
    docs = select_documents(h, find_documents(val_tokens.numpy()))
    batches, queue = make_ttt_batches(h, docs)
    costs = {q: ttt_batch_cost(h, batches[q]) for q in queue}
    orders = corrector_orders(h)
    use_corrector = h.corrector_alpha > 0
    if backend is None and device.type == "cuda" and h.compile_enabled:
        backend = "inductor"
    compiled = backend is not None and not h.ttt_debug_bypass
    sinks = ScoreSinks.maybe(h, val_tokens, device)
    with_psum = sinks is not None and sinks.prob_sum
    fwd = compile_ttt_forward(backend, with_psum) if compiled else functools.partial(ttt_token_nll, prob_sum=with_psum)
    warmup_s = ttt_warmup(h, model, fwd, sorted({len(batches[q]) for q in queue}, reverse=True), device, log0)

    log0("\nbeginning TTT eval timer")
    graphs_before = graphs_compiled()
    sync(device)
    t0 = time.perf_counter()
    corrector = None
    if use_corrector:
        corrector = NgramCorrector(h.ttt_batch_size, h.vocab_size, h.corrector_alpha, orders, device)
        log0(f"corrector: alpha={h.corrector_alpha} orders={orders}")
    ctx = TTTContext(h, model, fwd, tokens, tables, device, corrector, sinks)
    phased = h.phased_ttt_enabled
    n_docs = len(docs)
    parts = ttt_phases(h, batches, queue, n_docs, log0)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    gd = 0
    info = {"phase1_s": None, "global_sgd_s": None, "prefix_docs_scored": None, "global_sgd_docs": None,
            "global_sgd_chunks": None, "phase2_first_step": None}
    for part_i, part in enumerate(parts):
        owner = assign_batches([costs[q] for q in part], world)
        for q, r in zip(part, owner):
            if r != rank:
                continue
            bs = ttt_run_batch(ctx, batches[q], q)
            sums += bs
            if rank == 0:
                log_ttt_batch(log0, phased, q, len(queue), bs, sums, batches[q][:, 1], gd)
        if phased and part_i == 0:
            global_sgd_pause(ctx, part, batches, t0, info, rank, world, log0)
            gd = 1
    _reduce_sums(sums, world)
    sync(device)
    eval_ms = 1000.0 * (time.perf_counter() - t0)
    return ttt_result(h, ctx, sums, eval_ms, graphs_before, compiled, warmup_s, info, n_docs, len(queue), orders,
                      val_tokens, rank, world, log0)


def ttt_result(h, ctx: TTTContext, sums: torch.Tensor, eval_ms: float, graphs_before: int, compiled: bool,
               warmup_s: float, info: dict, n_docs: int, n_batches: int, orders: list[int], val_tokens,
               rank: int, world: int, log0) -> dict:
    """The TTT score line, the score dump, the worst rank's corrector time and in-timer compiles, and the
    results.json entry (with the chunk sums under VAL_CHUNKS)."""
    device, corrector, sinks, tables = ctx.device, ctx.corrector, ctx.sinks, ctx.tables
    phased = h.phased_ttt_enabled
    n_tok, n_bytes = sums[1].item(), sums[2].item()
    if n_tok == 0:
        raise ValueError("TTT scored no tokens (no documents selected: check TTT_DOC_LIMIT / VAL_DOC_FRACTION / TTT_EVAL_BATCHES)")
    val_loss = sums[0].item() / n_tok
    val_bpb = sums[0].item() / (math.log(2) * n_bytes)
    label = "quantized_ttt_phased" if phased else "quantized_ttt_lora"
    log0(f"{label} val_loss:{val_loss:.8f} val_bpb:{val_bpb:.8f} eval_time:{eval_ms:.0f}ms")
    log0(f"total_eval_time:{eval_ms / 1000.0:.1f}s")
    entry = {"label": label, "val_loss": val_loss, "val_bpb": val_bpb, "eval_time_ms": eval_ms}
    if sinks is not None:
        sinks.finish(h, label, val_tokens, tables, rank, world, entry)
    # both figures are the worst rank's: the corrector's own seconds, and graphs compiled inside the timer
    # (anything but 0 means a shape the warm-up missed was compiled on the clock)
    worst = torch.tensor([corrector.seconds if corrector is not None else 0.0, graphs_compiled() - graphs_before],
                         dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    corr_s, in_timer = worst[0].item(), int(worst[1].item())
    if compiled and in_timer:
        log0(f"ttt_lora:WARNING {in_timer} graph(s) compiled inside the eval timer")
    ttt = {"docs": n_docs, "batches": n_batches, "scored_tokens": int(n_tok), "warmup_s": warmup_s,
           "compiled": compiled, "graphs_compiled_in_timer": in_timer if compiled else None,
           "tokens_per_s": n_tok / max(eval_ms / 1000.0, 1e-9),
           "assignment": "static-lpt", "corrector": None if corrector is None else
           {"alpha": h.corrector_alpha, "orders": orders, "seconds_max_rank": corr_s}}
    if phased:
        ttt.update(info)
    return {**entry, "ttt": ttt}
# <<< TTT SECTION END


# ==================================================================================================
# MAIN
# ==================================================================================================

def make_logger(h: Hyperparameters):
    if h.is_main_process:
        d = os.path.dirname(h.logfile)
        if d:
            os.makedirs(d, exist_ok=True)

    def log0(msg: str, console: bool = True) -> None:
        if not h.is_main_process:
            return
        if console:
            print(msg, flush=True)
        with open(h.logfile, "a", encoding="utf-8") as f:
            print(msg, file=f)
    return log0


def compile_model(h, model: GPT, device) -> tuple[object, bool]:
    """Returns (fn(x, y, cu, max_seqlen, reduction='mean') -> loss, compiled?). torch.compile only on CUDA:
    on a CPU it costs more than it saves at the sizes a CPU can train."""
    if device.type == "cuda" and h.compile_enabled:
        # Speed only: torch 2.11's mix-order reductions over-fuse a norm backward with per-channel gradients into
        # slow kernels (no cap on their loads, pytorch#179423): in the looped graph two of them (off: looped step
        # -10%), and in the plain graph one of 62 ms a step once attend's views removed the select copies
        # (benchmarks/README.md, twelfth session). The same math, only the order of fp32 sums differs.
        import torch._inductor.config as inductor_config
        opts = {"triton.mix_order_reduction": False} if hasattr(inductor_config.triton, "mix_order_reduction") else None
        plain = torch.compile(model, dynamic=False, fullgraph=True, options=opts)
        if h.num_loops <= 0:
            return plain, True
        looped = torch.compile(model, dynamic=False, fullgraph=True, options=opts)

        def model_fn(*args, **kwargs):
            return (looped if model.looping else plain)(*args, **kwargs)
        return model_fn, True
    return model, False


def select_kernels(h: Hyperparameters, device: torch.device) -> list[str]:
    """Attention, MLP, loss, q/k norm and XSA kernels as the settings ask (each chosen once per process); the log lines saying so."""
    mlp = select_mlp_kernel(device, h.mlp_kernel, h.mlp_tile_up, h.mlp_tile_grad, h.mlp_save_signs)
    lines = [f"attention_backend:{select_attention(device, h.attn_backend, h.attn_cu_trim)}",
             f"attn_cu_trim:{int(h.attn_cu_trim)}",
             f"mlp_kernel:{mlp}",
             f"mlp_save_signs:{int(h.mlp_save_signs)}",
             f"loss_kernel:{select_loss_kernel(device, h.loss_kernel, h.loss_tile_fwd, h.loss_tile_bwd, h.logit_softcap)}",
             f"qk_kernel:{select_qk_kernel(device, h.qk_kernel, h.model_dim // h.num_heads)}",
             f"xsa_kernel:{select_xsa_kernel(device, h.xsa_kernel, h.model_dim // h.num_heads)}"]
    if _MLP["kernel"] == "triton":  # BM,BN,BK,GROUP_M,num_warps,num_stages of each kernel
        lines.append("mlp_tiles:" + " ".join(f"{w}={','.join(str(_MLP[w][k]) for k in MLP_TILE_KEYS)}"
                                             for w in ("up", "grad")))
    if _LOSS["kernel"] == "triton":  # ROWS,BLOCK_V,num_warps of each kernel
        lines.append("loss_tiles:" + " ".join(f"{w}={','.join(str(_LOSS[w][k]) for k in LOSS_TILE_KEYS)}"
                                              for w in ("fwd", "bwd")))
    return lines


def versions(device) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda if device.type == "cuda" else None,
            "attention": attention_backend_label(), "attn_cu_trim": _ATTN["cu_trim"], "mlp_kernel": _MLP["kernel"],
            "mlp_save_signs": _MLP["signs"],
            "mlp_tiles": {which: dict(_MLP[which]) for which in ("up", "grad")}, "loss_kernel": _LOSS["kernel"],
            "loss_tiles": {which: dict(_LOSS[which]) for which in ("fwd", "bwd")}, "qk_kernel": _QK["kernel"],
            "xsa_kernel": _XSA["kernel"]}


def finite_or_null(data):
    """`data` with every NaN or infinite float replaced by None (nested dicts and lists). A diverged run
    scores NaN; JSON has no such number and strict readers reject the `NaN` token, so it is written as null."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_or_null(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_null(v) for v in data]
    return data


def write_results(h, payload: dict) -> None:
    out_dir = h.artifact_dir or "."
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    tmp = path + f".tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(finite_or_null(payload), f, indent=2, sort_keys=False, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_state_into(model: GPT, sd: dict) -> None:
    model.load_state_dict(sd, strict=True)


class RunContext:
    """What the phases of main() share: settings, device, ranks, the logger, validation data and byte
    tables, wall seconds per phase (results.json `timings_s`, golfrun's GPU-time ledger) and eval entries."""

    def __init__(self, h: Hyperparameters, device: torch.device, log0, val_tokens: torch.Tensor, tables):
        self.h, self.device, self.log0, self.val_tokens, self.tables = h, device, log0, val_tokens, tables
        self.rank, self.world = h.rank, h.world_size
        self.phases = {"compile_train": 0.0, "train": 0.0, "serialize": 0.0, "eval": 0.0, "compile_eval": 0.0}
        self.evals: list[dict] = []


def setup_device(h: Hyperparameters) -> torch.device:
    """The process group (NCCL on GPUs, gloo on CPUs) and the device; TF32 and Dynamo settings on CUDA."""
    if h.distributed:
        if torch.cuda.is_available():
            device = torch.device("cuda", h.local_rank)
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            device = torch.device("cpu")
            dist.init_process_group("gloo")
        dist.barrier()
    else:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        from torch import _dynamo
        _dynamo.config.optimize_ddp = False
        _dynamo.config.cache_size_limit = 16
    return device


def log_header(h: Hyperparameters, log0) -> None:
    """Hyperparameters and unknown-variable warnings; in the log file also the source, versions, nvidia-smi."""
    log0("Hyperparameters:")
    for k in sorted(vars(h)):
        log0(f"  {k}: {getattr(h, k)}")
    for name, close in unknown_env_vars():
        # a warning, not an error: schedulers and images set variables we cannot foresee (docs/trainer.md)
        hint = f" (did you mean {close}?)" if close else ""
        log0(f"WARNING: unknown environment variable {name}{hint}; it is ignored")
    if not h.is_main_process:
        return
    log0("=" * 100, console=False)
    try:
        log0(Path(__file__).read_text(encoding="utf-8"), console=False)
    except OSError:
        pass
    log0("=" * 100, console=False)
    log0(f"Running Python {sys.version}", console=False)
    log0(f"Running PyTorch {torch.__version__}", console=False)
    try:
        smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
        log0(smi, console=False)
    except (OSError, subprocess.SubprocessError):
        pass
    log0("=" * 100, console=False)


def diagnostic(run: RunContext, label: str, model: GPT) -> dict:
    """A plain (non-sliding) evaluation, logged and appended to run.evals. Eager: compiling each eval graph
    costs more than it saves (docs/trainer.md)."""
    h, device = run.h, run.device
    model.eval()
    sync(device)
    t = time.perf_counter()
    sinks = ScoreSinks.maybe(h, run.val_tokens, device)
    vl, vb = eval_plain(h, model, run.val_tokens, run.tables, run.rank, run.world, device, sinks)
    sync(device)
    ms = 1000.0 * (time.perf_counter() - t)
    run.phases["eval"] += ms / 1000.0
    run.log0(f"{label} val_loss:{vl:.8f} val_bpb:{vb:.8f} eval_time:{ms:.0f}ms")
    entry = {"label": label, "val_loss": vl, "val_bpb": vb, "eval_time_ms": ms}
    if sinks is not None:
        sinks.finish(h, label, run.val_tokens, run.tables, run.rank, run.world, entry)
    run.evals.append(entry)
    return entry


def sliding_diagnostic(run: RunContext, model: GPT) -> None:
    h, device = run.h, run.device
    model.eval()
    sync(device)
    t = time.perf_counter()
    sinks = ScoreSinks.maybe(h, run.val_tokens, device)
    vl, vb = eval_sliding(h, model, run.val_tokens, run.tables, run.rank, run.world, device, run.log0, sinks)
    ms = 1000.0 * (time.perf_counter() - t)
    label = "diagnostic quantized_sliding_window"
    run.log0(f"{label} val_loss:{vl:.8f} val_bpb:{vb:.8f} eval_time:{ms:.0f}ms")
    entry = {"label": label, "val_loss": vl, "val_bpb": vb, "eval_time_ms": ms}
    if sinks is not None:
        sinks.finish(h, label, run.val_tokens, run.tables, run.rank, run.world, entry)
    run.evals.append(entry)


def calibration(run: RunContext):
    """GPTQ_CALIBRATION_BATCHES batches of this rank's calibration stream (§3.4)."""
    h, world = run.h, run.world
    files = list_shards(h.train_files, "train")
    tokens_per_rank = h.train_batch_tokens // (world * h.grad_accum_steps)
    seqs = max(tokens_per_rank // h.train_seq_len, 1)
    return itertools.islice(calibration_batches(files, h.train_seq_len, seqs, run.rank, world),
                            h.gptq_calibration_batches)


def train_phase(run: RunContext) -> tuple[dict, dict]:
    """Build, compile, train, evaluate the EMA weights and serialize; (training stats, artifact)."""
    h, device, log0 = run.h, run.device, run.log0
    model = build_model(h, device)
    log0(f"model_params:{count_params(model)}")
    model_fn, compiled = compile_model(h, model, device)
    model.train()
    t = time.perf_counter()
    stats = train(h, model, model_fn, device, run.val_tokens, run.tables, log0, run.rank, run.world, compiled)
    run.phases["compile_train"] = stats["priming_s"]
    run.phases["train"] = time.perf_counter() - t - stats["priming_s"]
    model.looping = h.num_loops > 0
    diagnostic(run, "diagnostic pre-quantization post-ema", model)
    t = time.perf_counter()
    artifact = serialize(h, model, calibration(run), log0, run.rank, run.world, device)
    run.phases["serialize"] = time.perf_counter() - t
    return stats, artifact


def eval_only_phase(run: RunContext) -> dict | None:
    """EVAL_ONLY_PATH: load final_model.pt, its diagnostic, and serialize only when no .ptz exists yet."""
    h, device, log0 = run.h, run.device, run.log0
    log0(f"eval_only:loading checkpoint from {h.eval_only_path}")
    model = build_model(h, device)
    load_state_into(model, torch.load(h.eval_only_path, map_location=device))
    model.looping = h.num_loops > 0
    if not h.ttt_only_eval:
        diagnostic(run, "diagnostic pre-quantization post-ema", model)
    log0("eval_only: skipping serialize (already have quantized model)")
    if os.path.exists(h.quantized_model_path):
        return None
    log0("eval_only: no quantized model found, running serialize anyway")
    return serialize(h, model, calibration(run), log0, run.rank, run.world, device)


def existing_artifact(h: Hyperparameters) -> dict:
    """results.json `artifact` for a .ptz this run did not write."""
    try:
        code = code_size_bytes(h)
    except NotImplementedError:
        code = None
    mb = os.path.getsize(h.quantized_model_path)
    return {"path": h.quantized_model_path, "model_bytes": mb, "code_bytes": code,
            "total_bytes": mb + code if code is not None else None, "compressor": h.compressor}


def quantized_evals(run: RunContext, qmodel: GPT) -> dict | None:
    """The quantized diagnostics and TTT; returns the score that counts (None: TTT_ONLY_EVAL without TTT)."""
    h, log0 = run.h, run.log0
    if h.ttt_only_eval:
        log0("ttt_only_eval: skipping pre-quant/quantized diagnostics and using the eval-only checkpoint directly for TTT")
        final = None
    else:
        final = diagnostic(run, "diagnostic quantized", qmodel)
    if h.sliding_window_enabled and not h.ttt_only_eval:
        sliding_diagnostic(run, qmodel)
    if h.ttt_enabled:
        try:
            t = time.perf_counter()
            entry = run_ttt_eval(h, qmodel, run.val_tokens, run.tables, run.rank, run.world, run.device, log0)
            run.phases["compile_eval"] = float(entry.get("ttt", {}).get("warmup_s") or 0.0)
            run.phases["eval"] += time.perf_counter() - t - run.phases["compile_eval"]
            run.evals.append(entry)
            final = entry
        except NotImplementedError:
            log0("ttt: not available in this trainer (TTT_ENABLED=1 ignored); final score is diagnostic quantized")
    if h.score_dump_path and h.is_main_process and final is not None:
        import shutil
        shutil.copyfile(score_dump_path(h, final["label"]), h.score_dump_path)
    return final


def results_payload(run: RunContext, mode: str, stats: dict, qmodel: GPT, final: dict | None, artifact: dict,
                    t_main: float) -> dict:
    h, device = run.h, run.device
    return {
        "schema": "golfrun.trainer-results/1",
        "run_id": h.run_id, "seed": h.seed, "mode": mode,
        "steps": stats["steps"], "train_time_ms": stats["train_time_ms"],
        "stopped_early": stats["stopped_early"], "tokens_per_s": stats["tokens_per_s"],
        "tokens_per_s_preloop": stats.get("tokens_per_s_preloop"),
        "tokens_per_s_loop": stats.get("tokens_per_s_loop"),
        "priming_s": stats.get("priming_s"),
        # start-up: main() entered -> first timed training step (data, model, compile, priming)
        "time_to_first_step_s": stats["first_step_at"] - t_main if "first_step_at" in stats else None,
        "timings_s": phase_timings(run.phases, time.perf_counter() - t_main),
        "peak_mem_mib": stats["peak_mem_mib"] if mode == "train" else peak_mem_now(device),
        "model_params": count_params(qmodel),
        "evals": run.evals, "final": final, "artifact": artifact,
        "hyperparameters": h.env_values(), "versions": versions(device),
        "world_size": run.world,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def main() -> None:
    t_main = time.perf_counter()
    h = Hyperparameters()
    device = setup_device(h)
    log0 = make_logger(h)
    log_header(h, log0)
    random.seed(h.seed)
    np.random.seed(h.seed)
    torch.manual_seed(h.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(h.seed)
    for line in select_kernels(h, device):
        log0(line)

    eval_only = bool(h.eval_only_path)
    quant_only = bool(h.eval_only_quantized_path) and not eval_only
    mode = "eval_only" if eval_only else ("eval_only_quantized" if quant_only else "train")
    if h.ttt_only_eval and not h.ttt_enabled:
        raise ValueError("TTT_ONLY_EVAL=1 needs TTT_ENABLED=1")

    sp = load_tokenizer(h)
    base, lead, boundary = build_byte_tables(sentencepiece_pieces(sp), h.vocab_size)
    val_tokens = subset_validation(h, load_validation_tokens(h.val_files, h.eval_seq_len))
    run = RunContext(h, device, log0, val_tokens, ByteTables(base, lead, boundary, device))
    if mode == "train":
        check_compressor(h.compressor)  # before training, not after ten minutes of it
        log0(f"train_shards: {len(list_shards(h.train_files, 'train'))}")
        log0(f"val_tokens: {val_tokens.numel() - 1}")

    stats = {"steps": 0, "train_time_ms": 0.0, "stopped_early": False, "tokens_per_s": None, "peak_mem_mib": None}
    artifact = None
    if mode == "train":
        stats, artifact = train_phase(run)
    elif mode == "eval_only":
        artifact = eval_only_phase(run)
    else:
        log0(f"eval_only:using quantized checkpoint from {h.quantized_model_path}")
    if run.world > 1:
        dist.barrier()
    if not os.path.exists(h.quantized_model_path):
        raise FileNotFoundError(f"quantized model {h.quantized_model_path} not found")
    artifact = artifact if artifact is not None else existing_artifact(h)

    qmodel = build_model(h, device)
    load_state_into(qmodel, deserialize(h, h.quantized_model_path, device))
    qmodel.looping = h.num_loops > 0
    final = quantized_evals(run, qmodel)
    if h.is_main_process:
        write_results(h, results_payload(run, mode, stats, qmodel, final, artifact, t_main))
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()

def phase_timings(phases: dict, total_s: float) -> dict:
    """results.json `timings_s`: seconds of main() per phase; startup = whatever the named phases leave."""
    out = {k: round(v, 3) for k, v in phases.items()}
    out["startup"] = round(max(total_s - sum(phases.values()), 0.0), 3)
    out["total"] = round(total_s, 3)
    return out


def peak_mem_now(device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated() // (1024 * 1024))
    return peak_rss_mib()


if __name__ == "__main__":
    main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Everything is written, closed and the process group destroyed. Interpreter teardown can
        # still abort a finished rank ("terminate called without an active exception" from a
        # collective library's threads), which would turn a complete run into a failed torchrun.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
