"""FlashAttention-3's `flash_attn_interface` for timing a record's own train_gpt.py where FA3 is not installed (no
wheel of it reaches the lent GPUs): its two entry points computed by torch's flash-2 varlen kernel with K/V repeated
for GQA, the attention of our trainer's ATTN_BACKEND=varlen. The record's script and our `baseline` then differ in
everything but attention, which is how the issue measured the record on an H200. record_phase.py puts this folder
first on the record's PYTHONPATH.

Not the tests' stand-in (tests/trainer/fa3_standin), which builds a dense mask: exact on a CPU, and far too slow and
too large at 98,304 tokens. This one needs CUDA, and returns the output alone, as the record's calls expect."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def repeat_kv(k: torch.Tensor, v: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k, v (..., Hkv, D) with each K/V head repeated for the `heads` // Hkv query heads of its group (query head h
    reads K/V head h // group, as FA3's native GQA does)."""
    group = heads // k.size(-2)
    if group == 1:
        return k, v
    return k.repeat_interleave(group, dim=-2), v.repeat_interleave(group, dim=-2)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q=None,
                           seqused_k=None, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                           **unused):
    """Packed q (T, H, D), k/v (T, Hkv, D) -> out (T, H, D): causal attention inside each segment of cu_seqlens."""
    if seqused_q is not None or seqused_k is not None or softcap:
        raise NotImplementedError("the record stand-in computes plain causal varlen attention only")
    from torch.nn.attention.varlen import varlen_attn

    kk, vv = repeat_kv(k, v, q.size(-2))
    kw = {} if softmax_scale is None else {"scale": softmax_scale}  # as our trainer calls it: no scale given
    return varlen_attn(q, kk, vv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                       window_size=(window_size[0], 0) if causal else tuple(window_size), **kw)


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, **unused):
    """q (B, T, H, D), k/v (B, S, Hkv, D) -> (B, T, H, D): the records' dense calls (evaluation, TTT)."""
    if softcap or tuple(window_size) != (-1, -1):
        raise NotImplementedError("the record stand-in computes plain dense attention only")
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
                                         scale=softmax_scale, enable_gqa=k.size(2) != q.size(2))
    return out.transpose(1, 2)
