"""Combining split-KV partials, the second half of flash-decoding (``kernels.paged_decode``).

Each split s of a (sequence, query head) leaves its normalised partial output o_s [D] and its log-sum-exp
lse_s (base 2). The head's output is

    o = sum_s w_s o_s / sum_s w_s,   w_s = exp2(lse_s - max_s lse_s)

:func:`combine_group` computes it for all G query heads of one KV head at once: each step loads a
[S_STEP, G, D] tile of partials (S_STEP splits of every head of the group) and folds it into a running
max, so any split count works, always in split order -- the result does not depend on which program runs
it. The heads of a group are combined side by side rather than one after another because the folded path
(the split launch's last program combines, ``REDUCE_IN_SPLIT``) waits on every step: a head-by-head loop
put G dependent round trips to L2 on the critical path: on an H200, in the Qwen2.5-0.5B decode graph
(7 query heads per KV head), 809 us per step against 664 us for the two-launch path; side by side, 675 us
(bench/results/NVIDIA_H200/run13_notes.md).

:func:`combine_steps` sizes S_STEP so that one tile holds about :data:`TILE_VALUES` fp32 values (64 per
thread at 4 warps), at least one split and at most :data:`MAX_STEP`. The folded path runs it one program
per KV head. The decode launch's reduce kernel runs the same code for a group of one, and cuts each head's
dims over programs (:func:`reduce_chunks`) so that one step takes every split: each step is a dependent
round trip to memory, and with 2 KV heads at batch 1 the reduce has only 14 heads to spread over the card.
On an H200, 64 splits in two 32-split steps took 4.3 us per reduce, 128 splits in four 7.2 us
(bench/results/NVIDIA_H200/run18/decode_kernel_times_call2.csv).
"""

from __future__ import annotations

from kernels._triton import tl, triton

TILE_VALUES = 8192  # fp32 values per [S_STEP, G, D] tile
MAX_STEP = 32  # splits per step at most in the folded combine (the reduce's step before it took groups: 32)
MIN_REDUCE_DIMS = 32  # the reduce launch's programs take at least this many dims of a head (reduce_chunks)


def combine_steps(group: int, d_pad: int, max_step: int = MAX_STEP) -> int:
    """S_STEP for ``group`` query heads per KV head and ``d_pad`` dims per program: a power of two."""
    per_split = triton.next_power_of_2(group) * d_pad
    return max(1, min(max_step, triton.next_power_of_2(TILE_VALUES // per_split + 1) // 2))


def reduce_chunks(max_splits: int, d_pad: int) -> tuple[int, int]:
    """(dims per program, S_STEP) of the reduce launch: the fewest dims per program (at least
    :data:`MIN_REDUCE_DIMS`) that still combine all ``max_splits`` splits in one step of a
    :data:`TILE_VALUES` tile. Each step waits on a round trip to memory, so one step is the aim."""
    splits = triton.next_power_of_2(max(1, max_splits))
    dims = max(min(d_pad, MIN_REDUCE_DIMS), min(d_pad, triton.next_power_of_2(TILE_VALUES // splits)))
    return dims, combine_steps(1, dims, max_step=splits)


@triton.jit
def combine_group(part_o_ptr, part_lse_ptr, o_ptr, seq, kv_head, group, n_splits, stride_ob, stride_oh,
                  num_q_heads, max_splits, d_start, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
                  G_COMB: tl.constexpr, S_STEP: tl.constexpr):
    """Combine the first ``n_splits`` partials of the ``group`` heads of (``seq``, ``kv_head``) into o, for
    the ``D_PAD`` dims from ``d_start`` (the whole head: 0 and the padded head dim).

    Partials are laid out [sequence, query head, max_splits] (lse) and [..., HEAD_DIM] (o), fp32. The loads
    bypass L1 (``.cg``): in the folded path the partials were just written by other programs of the launch.
    G_COMB (a power of two >= group) pads the heads; padded heads read lse 0 and are never stored."""
    g = tl.arange(0, G_COMB)
    g_ok = g < group
    offs_d = d_start + tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    heads = kv_head * group + g
    base = (seq.to(tl.int64) * num_q_heads + heads) * max_splits  # [G]
    top = tl.full([G_COMB], float("-inf"), tl.float32)
    den = tl.zeros([G_COMB], tl.float32)
    acc = tl.zeros([G_COMB, D_PAD], tl.float32)
    for s0 in range(0, n_splits, S_STEP):
        s = s0 + tl.arange(0, S_STEP)
        s_ok = s < n_splits
        idx = base[None, :] + s[:, None]  # [S, G]
        lse = tl.load(part_lse_ptr + idx, mask=s_ok[:, None] & g_ok[None, :], other=float("-inf"),
                      cache_modifier=".cg")
        lse = tl.where(g_ok[None, :], lse, 0.0)  # padded heads: finite, so no inf - inf below
        new_top = tl.maximum(top, tl.max(lse, 0))  # finite: split s0 exists
        w = tl.where(s_ok[:, None], tl.math.exp2(lse - new_top[None, :]), 0.0)
        o = tl.load(part_o_ptr + idx[:, :, None] * HEAD_DIM + offs_d[None, None, :],
                    mask=(s_ok[:, None] & g_ok[None, :])[:, :, None] & d_ok[None, None, :], other=0.0,
                    cache_modifier=".cg")
        rescale = tl.math.exp2(top - new_top)
        acc = acc * rescale[:, None] + tl.sum(w[:, :, None] * o, 0)
        den = den * rescale + tl.sum(w, 0)
        top = new_top
    out = acc / tl.maximum(den, 1e-30)[:, None]  # no splits (an empty context) gives zeros
    tl.store(o_ptr + seq.to(tl.int64) * stride_ob + heads[:, None] * stride_oh + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=g_ok[:, None] & d_ok[None, :])
