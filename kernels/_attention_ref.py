"""Pure-torch attention pieces shared by the prefill and decode references (and their benchmarks).

Deliberately plain: gather the paged cache into contiguous tensors, then softmax(q k^T * scale) v with
an explicit mask, computed in float64 when the inputs are float64 (CPU tests) and float32 otherwise.
"""

from __future__ import annotations

import einops
import torch


def gather_paged(cache: torch.Tensor, block_table_row: torch.Tensor, length: int) -> torch.Tensor:
    """Tokens 0..length-1 of one sequence from a paged cache [blocks, block_size, H, D] -> [length, H, D]."""
    block_size = cache.shape[1]
    pos = torch.arange(length, device=cache.device)
    blocks = block_table_row.to(cache.device).long()[pos // block_size]
    return cache[blocks, pos % block_size]


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                    first_query_pos: int | None) -> torch.Tensor:
    """q [Sq, Hq, D], k/v [Sk, Hkv, D] -> [Sq, Hq, D] in q's dtype.

    ``first_query_pos`` None: every query sees every key. Otherwise query i sits at position
    first_query_pos + i and sees keys 0..first_query_pos + i (causal).
    """
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    group = q.shape[1] // k.shape[1]
    qf = q.to(compute).transpose(0, 1)                                   # [Hq, Sq, D]
    # Query head h reads KV head h // group: each KV head serves `group` consecutive query heads.
    kf = einops.repeat(k.to(compute), "s h d -> (h g) s d", g=group)     # [Hq, Sk, D]
    vf = einops.repeat(v.to(compute), "s h d -> (h g) s d", g=group)
    scores = qf @ kf.transpose(1, 2) * scale                             # [Hq, Sq, Sk]
    if first_query_pos is not None:
        q_pos = first_query_pos + torch.arange(q.shape[0], device=q.device)
        k_pos = torch.arange(k.shape[0], device=q.device)
        scores = scores.masked_fill(k_pos[None, None, :] > q_pos[None, :, None], float("-inf"))
    if k.shape[0] == 0:
        return torch.zeros_like(q)
    out = torch.softmax(scores, dim=-1) @ vf
    return out.transpose(0, 1).to(q.dtype)
