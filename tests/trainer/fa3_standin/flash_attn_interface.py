"""Stand-in for FlashAttention-3's `flash_attn_interface` (hopper/flash_attn_interface.py): the same two
entry points with FA3's parameter names and defaults, computed with torch kernels (SDPA with a
block-diagonal causal mask), so the trainer's FA3 branch can run where FA3 cannot be installed.

FA3 builds differ in what they return: some return `out`, others `(out, softmax_lse)`; RETURN_LSE picks
which one this stand-in imitates (the trainer must accept both). CALLS counts the calls, so a test can
prove that this module, and not another kernel, did the work."""
from __future__ import annotations

import torch
import torch.nn.functional as F

RETURN_LSE = True
CALLS = {"func": 0, "varlen": 0}


def _attention(q, k, v, mask, softmax_scale):
    """q (..., H, T, D), k/v (..., Hkv, S, D), mask (T, S) -> out (..., H, T, D), lse (..., H, T) float32."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=softmax_scale,
                                         enable_gqa=k.size(-3) != q.size(-3))
    scale = softmax_scale if softmax_scale is not None else q.size(-1) ** -0.5
    kk = k.repeat_interleave(q.size(-3) // k.size(-3), dim=-3)
    scores = (q.float() @ kk.float().transpose(-1, -2)) * scale
    lse = scores.masked_fill(~mask, float("-inf")).logsumexp(-1)
    return out, lse


def _result(out, lse):
    return (out, lse) if RETURN_LSE else out


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None,
                    v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1,
                    pack_gqa=None, deterministic=False, sm_margin=0, return_attn_probs=False):
    """q (B, T, H, D), k/v (B, S, Hkv, D) -> (B, T, H, D)."""
    CALLS["func"] += 1
    T, S = q.size(1), k.size(1)
    mask = torch.ones(T, S, dtype=torch.bool, device=q.device)
    if causal:
        mask = mask.tril(S - T)
    out, lse = _attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, softmax_scale)
    return _result(out.transpose(1, 2), lse)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q=None,
                           seqused_k=None, softmax_scale=None, causal=False, qv=None, q_descale=None,
                           k_descale=None, v_descale=None, window_size=(-1, -1), attention_chunk=0,
                           softcap=0.0, num_splits=1, pack_gqa=None, deterministic=False, sm_margin=0,
                           return_attn_probs=False):
    """Packed: q (T, H, D), k/v (T, Hkv, D); segment i is cu_seqlens[i]:cu_seqlens[i+1] (equal q/k here)."""
    CALLS["varlen"] += 1
    T = q.size(0)
    pos = torch.arange(T, device=q.device, dtype=cu_seqlens_q.dtype)
    seg = torch.searchsorted(cu_seqlens_q, pos, right=True)
    mask = seg[:, None] == seg[None, :]
    if causal:
        mask = mask & (pos[:, None] >= pos[None, :])
    out, lse = _attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), mask, softmax_scale)
    return _result(out.transpose(0, 1), lse)
