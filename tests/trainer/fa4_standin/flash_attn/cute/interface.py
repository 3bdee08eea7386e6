"""Stand-in for flash-attn-4's `flash_attn/cute/interface.py` (PyPI flash-attn-4 4.0.0b40): the entry points
train_gpt.py's golf::fa4_varlen calls, with FA4's parameter names, order and defaults, computed with torch
on any device, so the trainer's fa4 branch runs where the CuTe DSL cannot (no CUDA, no Python 3.12 wheels).

- flash_attn_varlen_func: the public forward. Like FA4 it takes packed q (T, H, D) and k/v (T, Hkv, D) with
  H a multiple of Hkv (native GQA: query head h reads K/V head h // (H // Hkv)), and returns (out, lse) with
  lse (H, T) float32, None unless return_lse or an input requires grad.
- _flash_attn_bwd: the backward FA4's own autograd Function calls (FA4 has no public one). Here it is the
  textbook attention backward from the saved lse, written out (not autograd through the forward), so a wrong
  lse layout or a GQA head mapping that differs from the forward's shows up as wrong gradients.

Only what the trainer uses is implemented (causal or not, softmax_scale, cu_seqlens with equal q/k
segments); other options raise. CALLS counts the calls, so a test can prove this module did the work, and
CU_ENTRIES holds the length of the cu_seqlens each entry point last received."""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

CALLS = {"fwd": 0, "bwd": 0}
CU_ENTRIES: dict = {"fwd": None, "bwd": None}


def _unsupported(**options) -> None:
    used = [name for name, value in options.items() if value]
    if used:
        raise NotImplementedError(f"fa4 stand-in: {', '.join(used)} not implemented")


def _check_like_fa4(q, k, v, cu_seqlens, *more) -> None:
    """FA4's input checks (interface.py), except its fp16/bf16-only rule: these tests also run in fp32."""
    if any(t.dtype != q.dtype for t in (k, v, *more)):
        raise ValueError("fa4 stand-in: q, k, v (, out, dout) must share one dtype")
    if cu_seqlens is not None and cu_seqlens.dtype != torch.int32:
        raise ValueError("fa4 stand-in: cu_seqlens_q, cu_seqlens_k must be int32")


def _mask(cu_seqlens: Optional[torch.Tensor], total: int, causal: bool, device) -> torch.Tensor:
    """(T, T) bool: key j visible to query i (same segment; j <= i when causal)."""
    pos = torch.arange(total, device=device)
    seg = torch.zeros_like(pos) if cu_seqlens is None else torch.searchsorted(cu_seqlens.long(), pos, right=True)
    mask = seg[:, None] == seg[None, :]
    return mask & (pos[:, None] >= pos[None, :]) if causal else mask


def _probs(q, k, mask, scale):
    """Scores (H, T, T) float32 with K/V heads repeated per query group, masked to -inf."""
    group = q.size(1) // k.size(1)
    qh = q.float().transpose(0, 1)
    kh = k.float().transpose(0, 1).repeat_interleave(group, dim=0)
    return (qh @ kh.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qv: Optional[torch.Tensor] = None,
    cu_seqlens_q: Optional[torch.Tensor] = None,
    cu_seqlens_k: Optional[torch.Tensor] = None,
    max_seqlen_q: Optional[int] = None,
    max_seqlen_k: Optional[int] = None,
    min_seqlen_k: Optional[int] = None,
    seqused_q: Optional[torch.Tensor] = None,
    seqused_k: Optional[torch.Tensor] = None,
    gather_kv_indices: Optional[torch.Tensor] = None,
    page_table: Optional[torch.Tensor] = None,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    window_size: Tuple[Optional[int], Optional[int]] = (None, None),
    learnable_sink: Optional[torch.Tensor] = None,
    softcap: float = 0.0,
    num_splits: int = 1,
    pack_gqa: Optional[bool] = None,
    deterministic: bool = False,
    score_mod: Optional[Callable] = None,
    score_mod_bwd: Optional[Callable] = None,
    mask_mod: Optional[Callable] = None,
    block_sparse_tensors=None,
    aux_tensors: Optional[list] = None,
    aux_scalars: Optional[tuple] = None,
    return_lse: bool = False,
    scheduler_metadata=None,
    seqlen_k_per_split: Optional[int] = None,
    disable_scheduler_metadata: bool = False,
    gather_bwd_recompute_p: bool = False,
    gather_bwd_token_chunk: Optional[int] = None,
    config=None,
    scales=None,
):
    """Packed q (T, H, D), k/v (T, Hkv, D), segment i = cu_seqlens[i]:cu_seqlens[i+1] -> (out, lse)."""
    _unsupported(qv=qv is not None, seqused=seqused_q is not None or seqused_k is not None,
                 page_table=page_table is not None, window=window_size != (None, None),
                 softcap=softcap, mods=score_mod or mask_mod, sink=learnable_sink is not None)
    if cu_seqlens_q is not None and not torch.equal(cu_seqlens_q, cu_seqlens_k):
        raise NotImplementedError("fa4 stand-in: cu_seqlens_q != cu_seqlens_k")
    if q.dim() != 3 or q.size(1) % k.size(1):
        raise ValueError(f"fa4 stand-in: q {tuple(q.shape)} and k {tuple(k.shape)} are not packed GQA shapes")
    _check_like_fa4(q, k, v, cu_seqlens_q)
    CALLS["fwd"] += 1
    CU_ENTRIES["fwd"] = None if cu_seqlens_q is None else cu_seqlens_q.size(0)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    mask = _mask(cu_seqlens_q, q.size(0), causal, q.device)
    scores = _probs(q, k, mask, scale)
    lse = scores.logsumexp(-1)
    vh = v.float().transpose(0, 1).repeat_interleave(q.size(1) // k.size(1), dim=0)
    out = ((scores - lse[..., None]).exp() @ vh).transpose(0, 1).to(q.dtype).contiguous()  # FA4 allocates (T, H, D)
    keep_lse = return_lse or any(t.requires_grad for t in (q, k, v))
    return out, (lse if keep_lse else None)


def flash_attn_func(q, k, v, *args, **kwargs):
    raise NotImplementedError("fa4 stand-in: the dense entry point is not used by train_gpt.py")


def _flash_attn_bwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    dout: torch.Tensor,
    lse: torch.Tensor,
    softmax_scale: Optional[float] = None,
    causal: bool = False,
    softcap: float = 0.0,
    window_size_left: Optional[int] = None,
    window_size_right: Optional[int] = None,
    m_block_size: int = 64,
    n_block_size: int = 128,
    num_threads: int = 256,
    pack_gqa: bool = False,
    num_stages_Q: int = 2,
    num_stages_dO: int = 2,
    SdP_swapAB: bool = False,
    dKV_swapAB: bool = False,
    dQ_swapAB: bool = False,
    AtomLayoutMSdP: int = 2,
    AtomLayoutNdKV: int = 2,
    AtomLayoutMdQ: int = 2,
    V_in_regs: bool = False,
    cu_seqlens_q: Optional[torch.Tensor] = None,
    cu_seqlens_k: Optional[torch.Tensor] = None,
    seqused_q: Optional[torch.Tensor] = None,
    seqused_k: Optional[torch.Tensor] = None,
    max_seqlen_q: Optional[int] = None,
    max_seqlen_k: Optional[int] = None,
    deterministic: bool = False,
    dq: Optional[torch.Tensor] = None,
    dk: Optional[torch.Tensor] = None,
    dv: Optional[torch.Tensor] = None,
    score_mod: Optional[Callable] = None,
    score_mod_bwd: Optional[Callable] = None,
    mask_mod: Optional[Callable] = None,
    aux_tensors: Optional[list] = None,
    aux_scalars: Optional[tuple] = None,
    block_sparse_tensors=None,
    dlse: Optional[torch.Tensor] = None,
    learnable_sink: Optional[torch.Tensor] = None,
    *,
    config=None,
) -> Tuple[torch.Tensor, ...]:
    """dq, dk, dv from the saved out and lse: P = exp(S - lse), dV = Pᵀ dO, dS = P (dO Vᵀ - rowsum(dO O)),
    dQ = scale dS K, dK = scale dSᵀ Q; dK/dV summed over each query group (native GQA)."""
    _unsupported(softcap=softcap, window=window_size_left is not None or window_size_right is not None,
                 seqused=seqused_q is not None or seqused_k is not None, mods=score_mod or mask_mod,
                 dlse=dlse is not None, sink=learnable_sink is not None, out_buffers=dq is not None)
    _check_like_fa4(q, k, v, cu_seqlens_q, out, dout)
    if lse.shape != (q.size(1), q.size(0)) or lse.dtype != torch.float32:  # FA4's own assertion, varlen case
        raise ValueError(f"fa4 stand-in: lse must be float32 (num_head, total_q), got {lse.dtype} {tuple(lse.shape)}")
    CALLS["bwd"] += 1
    CU_ENTRIES["bwd"] = None if cu_seqlens_q is None else cu_seqlens_q.size(0)
    H, Hkv, T = q.size(1), k.size(1), q.size(0)
    group = H // Hkv
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.size(-1))
    p = (_probs(q, k, _mask(cu_seqlens_q, T, causal, q.device), scale) - lse[..., None]).exp()
    do, o = dout.float().transpose(0, 1), out.float().transpose(0, 1)
    vh = v.float().transpose(0, 1).repeat_interleave(group, dim=0)
    kh = k.float().transpose(0, 1).repeat_interleave(group, dim=0)
    ds = p * (do @ vh.transpose(-1, -2) - (do * o).sum(-1, keepdim=True))
    dq_ = (ds @ kh) * scale
    dk_ = (ds.transpose(-1, -2) @ q.float().transpose(0, 1)) * scale
    dv_ = p.transpose(-1, -2) @ do
    per_kv = lambda t: t.view(Hkv, group, T, -1).sum(1).transpose(0, 1).to(k.dtype).contiguous()
    return dq_.transpose(0, 1).to(q.dtype).contiguous(), per_kv(dk_), per_kv(dv_)
