"""Prefill attention over packed variable-length sequences, optionally after a cached prefix.

Math, for one sequence and one query head h (KV head g = h // (Hq / Hkv), grouped-query attention):

    s_ij = scale * q_i . k_j        (scale defaults to 1/sqrt(D))
    o_i  = sum_j softmax_j(s_ij) v_j over the keys query i may see

With a cached prefix of P tokens (chunked prefill, prefix reuse) query i sits at position P + i and
sees the P prefix tokens, read from the paged cache through the sequence's block table, then the
chunk's own keys 0..i (causal) or all of them (non-causal). Without a prefix P = 0.

Layouts (packed varlen, no padding between sequences):

    q            [T, Hq, D]     k, v [T, Hkv, D]     o [T, Hq, D]      (unit stride on D)
    cu_seqlens   [B + 1] int32  sequence b owns rows cu_seqlens[b] .. cu_seqlens[b+1]-1
    max_seqlen   host int       >= the longest chunk; sizes the grid without a device sync (a smaller value
                                leaves rows unwritten: TRITONFORGE_DEBUG_CHECKS=1 catches that)
    k_cache, v_cache, block_tables, prefix_lens: the paged layout of kernels/kv_cache.py; prefix_lens [B]

Kernel (flash attention): one program per (tile of BLOCK_M queries, sequence, query head). It walks
the keys in tiles of BLOCK_N with an online softmax: a running row max m, row sum l and an fp32
accumulator, rescaled by exp2(m_old - m_new) when the max grows, so the score matrix never leaves
registers. Tiles that need no mask (inside the prefix, or wholly below the causal diagonal) run a
mask-free step; only the prefix tail and the diagonal tiles pay for masking. Where the tile says
ONE_LOOP, the chunk's keys run in one loop with the mask behind a run-time branch, so the software
pipeline prefetches the diagonal tiles too instead of starting them cold in a second loop. Where the tile
says TMA (sm_90+, 16-bit dtypes, power-of-two head dims, TMA-aligned strides; else the launcher falls back),
the chunk's Q, K and V tiles come through tensor descriptors over q, k, v viewed [T, H * D]: on sm_90 the
copy engine computes the addresses, saving instructions and registers per tile. A descriptor tile that
reached past a sequence's end would read its packed neighbour's rows: queries are computed and never stored,
keys are masked, but values weighed by 0 would still turn an Inf into NaN. So the descriptor loops stop at
the last whole key tile, and a ragged last tile reads its V through pointers, which read zeros there. Causal
programs are launched heaviest (last query tile) first to shorten the tail of the grid. head_dim 80 and 96
are padded to the next power of two with masked loads.
"""

from __future__ import annotations

import math

import torch

from kernels import _flash as flash
from kernels import _paged_checks as checks
from kernels import _prefill_cases as cases
from kernels import alloc, tma
from kernels._attention_ref import dense_attention, gather_paged
from kernels._flash import load_rows, load_tile, online_softmax, scores, softmax_step
from kernels._triton import tl, triton
from kernels.device import interpreting, vendor
from kernels.registry import Op, register

LOG2E = 1.4426950408889634


@triton.jit(do_not_specialize=["cu_ptr", "bt_ptr", "prefix_ptr", "stride_bt"])  # per-step values: compiled once
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, cu_ptr,
    k_cache_ptr, v_cache_ptr, bt_ptr, prefix_ptr, q_desc, k_desc, v_desc,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    stride_cb, stride_co, stride_ch, stride_bt,
    qk_scale, group,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, CAUSAL: tl.constexpr, HAS_PREFIX: tl.constexpr,
    PAGE: tl.constexpr, UPCAST: tl.constexpr, EVEN_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ONE_LOOP: tl.constexpr = False, TMA: tl.constexpr = False,
):
    tl.static_assert(EVEN_D or not TMA, "the TMA path loads whole [rows, HEAD_DIM] blocks: no padded head dims")
    start_m = tl.num_programs(0) - 1 - tl.program_id(0)  # heaviest causal tiles first
    seq = tl.program_id(1)
    head = tl.program_id(2)
    kv_head = head // group
    row0 = tl.load(cu_ptr + seq)
    seqlen = tl.load(cu_ptr + seq + 1) - row0
    if start_m * BLOCK_M >= seqlen:
        return
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d[None, :] < HEAD_DIM
    # TMA: rows past the sequence's end hold its neighbour's queries; they are computed, never stored.
    q = load_rows(q_desc, q_ptr + head * stride_qh + offs_d[None, :], stride_qt, row0, start_m * BLOCK_M,
                  head * HEAD_DIM, seqlen, tl.arange(0, BLOCK_M), d_ok, True, EVEN_D, TMA)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)

    if HAS_PREFIX:
        prefix_len = tl.load(prefix_ptr + seq)
        cache_head = kv_head.to(tl.int64) * stride_ch + offs_d[None, :]
        bt_row = bt_ptr + seq.to(tl.int64) * stride_bt
        full_end = (prefix_len // BLOCK_N) * BLOCK_N
        for start_n in range(0, full_end, BLOCK_N):
            pos = start_n + offs_n
            block = tl.load(bt_row + pos // PAGE)
            slot = (block.to(tl.int64) * stride_cb + (pos % PAGE) * stride_co)[:, None] + cache_head
            k = load_tile(k_cache_ptr + slot, pos, d_ok, False, EVEN_D)
            v = load_tile(v_cache_ptr + slot, pos, d_ok, False, EVEN_D)
            acc, m_i, l_i = softmax_step(acc, m_i, l_i, q, k, v, qk_scale, None, False, UPCAST)
        if full_end < prefix_len:
            pos = full_end + offs_n
            in_prefix = pos < prefix_len
            block = tl.load(bt_row + pos // PAGE, mask=in_prefix, other=0)
            slot = (block.to(tl.int64) * stride_cb + (pos % PAGE) * stride_co)[:, None] + cache_head
            k = load_tile(k_cache_ptr + slot, in_prefix, d_ok, True, EVEN_D)
            v = load_tile(v_cache_ptr + slot, in_prefix, d_ok, True, EVEN_D)
            acc, m_i, l_i = softmax_step(acc, m_i, l_i, q, k, v, qk_scale, in_prefix[None, :], True, UPCAST)

    # The chunk's own keys: tiles before `free_end` need no mask, the rest are masked.
    if CAUSAL:
        free_end = start_m * BLOCK_M  # BLOCK_M % BLOCK_N == 0: these tiles lie wholly below the diagonal
        end = tl.minimum((start_m + 1) * BLOCK_M, seqlen)
    else:
        free_end = (seqlen // BLOCK_N) * BLOCK_N
        end = seqlen
    # With TMA, key rows past the sequence's end would hold its neighbour's keys and values: the key mask
    # weighs them by exactly 0, but 0 x Inf is NaN in the P V product, so one request's overflowed values
    # could poison another's output. The descriptor loops therefore stop at the sequence's last whole tile;
    # a ragged last tile reads its K by descriptor (masked) and its V through pointers, zeros past the end.
    # (H200, run 21: within 1-2% of the unguarded loops on the prefill targets, 3.5% on 200-token prompts;
    # all by descriptor with V zeroed in registers, or all through pointers, did worse on one or the other.)
    k_base = k_ptr + kv_head.to(tl.int64) * stride_kh + offs_d[None, :]
    v_base = v_ptr + kv_head.to(tl.int64) * stride_vh + offs_d[None, :]
    kv_col = kv_head * HEAD_DIM
    loop_end = tl.minimum(end, (seqlen // BLOCK_N) * BLOCK_N) if TMA else end
    if ONE_LOOP:
        # One software-pipelined loop: the diagonal tiles' loads are prefetched while the tiles before
        # them compute, instead of starting cold in a loop of their own; the mask is a run-time branch.
        for start_n in range(0, loop_end, BLOCK_N):
            k = load_rows(k_desc, k_base, stride_kt, row0, start_n, kv_col, seqlen, offs_n, d_ok, True, EVEN_D, TMA)
            v = load_rows(v_desc, v_base, stride_vt, row0, start_n, kv_col, seqlen, offs_n, d_ok, True, EVEN_D, TMA)
            s = scores(q, k, UPCAST)
            if start_n >= free_end:
                cols = start_n + offs_n
                valid = cols[None, :] < seqlen
                if CAUSAL:
                    valid = valid & (cols[None, :] <= offs_m[:, None])
                s = tl.where(valid, s, float("-inf"))
            acc, m_i, l_i = online_softmax(acc, m_i, l_i, s, v, qk_scale, UPCAST)
    else:
        for start_n in range(0, free_end, BLOCK_N):
            k = load_rows(k_desc, k_base, stride_kt, row0, start_n, kv_col, seqlen, offs_n, d_ok, False, EVEN_D, TMA)
            v = load_rows(v_desc, v_base, stride_vt, row0, start_n, kv_col, seqlen, offs_n, d_ok, False, EVEN_D, TMA)
            acc, m_i, l_i = softmax_step(acc, m_i, l_i, q, k, v, qk_scale, None, False, UPCAST)
        for start_n in range(free_end, loop_end, BLOCK_N):
            acc, m_i, l_i = _masked_tile(acc, m_i, l_i, q, k_desc, v_desc, k_base, v_base, stride_kt, stride_vt,
                                         row0, start_n, kv_col, seqlen, offs_m, offs_n, d_ok, qk_scale,
                                         CAUSAL, UPCAST, EVEN_D, TMA, TMA)
    if TMA:  # noqa: SIM102  (a compile-time branch on a constexpr around a run-time one)
        if loop_end < end:  # the ragged last tile (at most one): its V by pointers, rows past the end as zeros
            acc, m_i, l_i = _masked_tile(acc, m_i, l_i, q, k_desc, v_desc, k_base, v_base, stride_kt, stride_vt,
                                         row0, loop_end, kv_col, seqlen, offs_m, offs_n, d_ok, qk_scale,
                                         CAUSAL, UPCAST, EVEN_D, True, False)

    out = acc / l_i[:, None]
    rows = (row0 + offs_m).to(tl.int64)
    tl.store(o_ptr + rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=(offs_m[:, None] < seqlen) & d_ok)


@triton.jit
def _masked_tile(acc, m_i, l_i, q, k_desc, v_desc, k_base, v_base, stride_kt, stride_vt, row0, start_n, kv_col,
                 seqlen, offs_m, offs_n, d_ok, qk_scale, CAUSAL: tl.constexpr, UPCAST: tl.constexpr,
                 EVEN_D: tl.constexpr, K_TMA: tl.constexpr, V_TMA: tl.constexpr):
    """One key tile of the chunk that needs the key mask: past the sequence's end, or above the diagonal. K and
    V each by descriptor or by pointers: a descriptor past the end reads the neighbour's rows, which the mask
    keeps out of the scores but not out of 0 x V."""
    k = load_rows(k_desc, k_base, stride_kt, row0, start_n, kv_col, seqlen, offs_n, d_ok, True, EVEN_D, K_TMA)
    v = load_rows(v_desc, v_base, stride_vt, row0, start_n, kv_col, seqlen, offs_n, d_ok, True, EVEN_D, V_TMA)
    cols = start_n + offs_n
    valid = cols[None, :] < seqlen
    if CAUSAL:
        valid = valid & (cols[None, :] <= offs_m[:, None])
    return softmax_step(acc, m_i, l_i, q, k, v, qk_scale, valid, True, UPCAST)


# --- configs (data) -------------------------------------------------------------------------------
# One tile per vendor and padded head dim, measured by bench/tune_attention.py (bf16). A fixed table
# rather than triton.autotune: every (head dim, dtype, causal, prefix) variant would otherwise compile
# and time five tiles at its first launch, seconds of stall per variant in the engine and in the GPU
# tests. BLOCK_M must be a multiple of BLOCK_N (the causal loop split relies on it). The interpreter
# runs 16x16 tiles: the same code path, far less CPU time per program at the test shapes.

TILES = {  # vendor -> element size in bytes -> padded head dim -> tile
    "cuda": {
        2: {
            # H200, causal bf16 (bench/results/NVIDIA_H200/run7/attention_prefill_explore.csv), against
            # SDPA: D=128 at 128x128 0.76-0.85x from 2k to 16k tokens where 128x64 gave 0.75-0.80x (both
            # 0.69x at 1k); D=64 at 8 warps 0.84-0.89x where 4 gave 0.80-0.85x. ONE_LOOP (run9/
            # attention_prefill_explore.csv) at D=128: 0.70 -> 0.75x at 1k, 0.76 -> 0.80x at 2k, 0.85 ->
            # 0.86x at 16k, non-causal 0.79 -> 0.80x; at D=64 it gained at 1k and lost at 4k with pointer loads.
            # TMA at D=128 (run11/call2.log, against SDPA in the same process): causal 32/32 heads 0.84x at 1k,
            # 0.90x at 2k, 0.93-0.96x at 4k-16k; 32/8 heads 0.83x at 1k and 0.87x at 2k (pointer loads: 0.75,
            # 0.79-0.86, 0.68 and 0.73x); non-causal 4k 0.91x. Where TMA cannot run the launcher falls back.
            # D=64 with TMA and ONE_LOOP (run11/attention_prefill_d64_call4.csv, same process): causal 16/16
            # heads 0.83 -> 0.91x at 1k, 0.89 -> 0.94x at 4k; 14/2 heads 0.84 -> 0.90x at 1k; non-causal 4k
            # 0.90 -> 0.95x; a 512-token chunk over a 4k prefix 1.51 -> 1.53x.
            64: dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3, ONE_LOOP=True, TMA=True),
            128: dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3, ONE_LOOP=True, TMA=True),
            256: dict(BLOCK_M=64, BLOCK_N=32, num_warps=8, num_stages=2),
        },
        # float32 tiles take twice the shared memory: 128x64 with 3 stages would need 256 KiB at D=128.
        4: {
            128: dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2),
            256: dict(BLOCK_M=64, BLOCK_N=16, num_warps=8, num_stages=2),
        },
    },
    "hip": {  # not measured yet: the tutorial's MI300 shapes
        2: {
            128: dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=1, waves_per_eu=2),
            256: dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=1),
        },
        4: {256: dict(BLOCK_M=64, BLOCK_N=16, num_warps=4, num_stages=1)},
    },
    "interpreter": {2: {256: dict(BLOCK_M=16, BLOCK_N=16)}, 4: {256: dict(BLOCK_M=16, BLOCK_N=16)}},
}


def pick_tile(d_pad: int, itemsize: int) -> dict:
    """The launch tile for a padded head dim and element size here (looked up at launch, never at import)."""
    table = TILES["interpreter" if interpreting() else vendor()][min(itemsize, 4)]
    return dict(table[min((d for d in table if d >= d_pad), default=max(table))])


# --- launcher -------------------------------------------------------------------------------------

def _check(q, k, v, cu_seqlens, max_seqlen, k_cache, v_cache, block_tables, prefix_lens):
    op = "prefill_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        checks.float_tensor(op, name, t, 3)
    checks.index_tensor(op, "cu_seqlens", cu_seqlens, 1)
    checks.same_device(op, "q", q, k=k, v=v, cu_seqlens=cu_seqlens)
    if k.shape != v.shape:
        raise ValueError(f"{op}: k {tuple(k.shape)} and v {tuple(v.shape)} must have one shape")
    if k.shape[0] != q.shape[0] or k.shape[2] != q.shape[2]:
        raise ValueError(f"{op}: q {tuple(q.shape)} and k {tuple(k.shape)} must agree on tokens and head_dim")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{op}: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    checks.head_dim(op, q.shape[2])
    checks.head_counts(op, q.shape[1], k.shape[1])
    if cu_seqlens.shape[0] < 1:
        raise ValueError(f"{op}: cu_seqlens must hold batch + 1 offsets, got an empty tensor")
    if not isinstance(max_seqlen, int) or max_seqlen < 0:
        raise TypeError(f"{op}: max_seqlen must be a non-negative host int (no device sync), got {max_seqlen!r}")
    paged = (k_cache, v_cache, block_tables, prefix_lens)
    if any(t is not None for t in paged) and any(t is None for t in paged):
        raise ValueError(f"{op}: pass all of k_cache, v_cache, block_tables, prefix_lens for a cached prefix, or none")
    if k_cache is None:
        return
    _, _, kv_heads, d = checks.paged_cache(op, k_cache, v_cache)
    checks.index_tensor(op, "block_tables", block_tables, 2)
    checks.index_tensor(op, "prefix_lens", prefix_lens, 1)
    checks.same_device(op, "q", q, k_cache=k_cache, block_tables=block_tables, prefix_lens=prefix_lens)
    batch = cu_seqlens.shape[0] - 1
    if block_tables.shape[0] != batch or prefix_lens.shape[0] != batch:
        raise ValueError(
            f"{op}: block_tables {tuple(block_tables.shape)} and prefix_lens {tuple(prefix_lens.shape)} need one "
            f"row per sequence ({batch}, from cu_seqlens)"
        )
    if (kv_heads, d) != (k.shape[1], k.shape[2]) or k_cache.dtype != q.dtype:
        raise ValueError(
            f"{op}: the cache holds {kv_heads} KV heads of dim {d} in {k_cache.dtype}; k is "
            f"{tuple(k.shape[1:])} in {k.dtype}: they must match"
        )


def _debug_check_values(q, cu_seqlens, max_seqlen, k_cache, block_tables, prefix_lens):
    cu = cu_seqlens.to("cpu", torch.int64)
    lens = cu[1:] - cu[:-1]
    if int(cu[0]) != 0 or int(cu[-1]) != q.shape[0] or (lens.numel() and int(lens.min()) < 0):
        raise ValueError(f"prefill_attention: cu_seqlens must rise from 0 to {q.shape[0]} tokens, got {cu.tolist()}")
    if lens.numel() and int(lens.max()) > max_seqlen:
        raise ValueError(
            f"prefill_attention: a sequence has {int(lens.max())} tokens, more than max_seqlen={max_seqlen}"
        )
    if k_cache is not None:
        checks.block_table_values("prefill_attention", block_tables, prefix_lens, k_cache.shape[0],
                                  k_cache.shape[1], "prefix_lens")


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor,
                      max_seqlen: int, scale: float | None = None, causal: bool = True,
                      k_cache: torch.Tensor | None = None, v_cache: torch.Tensor | None = None,
                      block_tables: torch.Tensor | None = None,
                      prefix_lens: torch.Tensor | None = None, *, _tile: dict | None = None) -> torch.Tensor:
    """Flash attention over packed sequences ``q [T, Hq, D]``, ``k/v [T, Hkv, D]``; returns ``o [T, Hq, D]``.

    ``_tile`` (benchmarks only) overrides the launch tile from :data:`TILES`.
    """
    _check(q, k, v, cu_seqlens, max_seqlen, k_cache, v_cache, block_tables, prefix_lens)
    if checks.debug_checks():
        _debug_check_values(q, cu_seqlens, max_seqlen, k_cache, block_tables, prefix_lens)
    T, Hq, D = q.shape
    batch = cu_seqlens.shape[0] - 1
    o = alloc.empty(T, Hq, D, dtype=q.dtype, device=q.device)
    if T == 0 or batch == 0 or max_seqlen == 0:
        return o
    scale = checks.softmax_scale("prefill_attention", scale, D)
    has_prefix = k_cache is not None
    if not has_prefix:  # unused pointers when HAS_PREFIX is False
        k_cache, v_cache, block_tables, prefix_lens = k, v, cu_seqlens[None], cu_seqlens
    d_pad = triton.next_power_of_2(D)
    tile = dict(_tile or pick_tile(d_pad, q.element_size()))
    if tile["BLOCK_M"] % tile["BLOCK_N"]:
        raise ValueError(f"prefill_attention: tile {tile} needs BLOCK_M to be a multiple of BLOCK_N")
    descs = _tma_descriptors(q, k, v, tile) if tile.pop("TMA", False) else None
    _prefill_kernel[(triton.cdiv(max_seqlen, tile["BLOCK_M"]), batch, Hq)](
        q, k, v, o, cu_seqlens, k_cache, v_cache, block_tables, prefix_lens, *(descs or (None, None, None)),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), o.stride(0), o.stride(1),
        k_cache.stride(0), k_cache.stride(1) if has_prefix else 0, k_cache.stride(2) if has_prefix else 0,
        block_tables.stride(0),
        scale * LOG2E, Hq // k.shape[1],
        HEAD_DIM=D, D_PAD=d_pad, EVEN_D=d_pad == D, CAUSAL=bool(causal), HAS_PREFIX=has_prefix,
        PAGE=k_cache.shape[1] if has_prefix else 16, UPCAST=interpreting(), TMA=descs is not None, **tile,
    )
    return o


def _tma_descriptors(q, k, v, tile):
    """q, k, v descriptors for a tile that asks for TMA, or None (the pointer path) where it cannot run:
    a padded head dim, a dtype other than 16-bit, a device without TMA, a stride or address TMA rejects."""
    D = q.shape[2]
    if D & (D - 1) or q.element_size() != 2 or not tma.tma_loads(q.device):
        return None
    descs = tuple(flash.row_descriptor(t, rows) for t, rows in ((q, tile["BLOCK_M"]), (k, tile["BLOCK_N"]),
                                                                 (v, tile["BLOCK_N"])))
    return None if any(d is None for d in descs) else descs


def prefill_attention_reference(q, k, v, cu_seqlens, max_seqlen, scale=None, causal=True,
                                k_cache=None, v_cache=None, block_tables=None, prefix_lens=None):
    """Pure torch, same signature: per sequence, gather its prefix, concatenate the chunk, dense softmax."""
    scale = 1.0 / math.sqrt(q.shape[2]) if scale is None else float(scale)
    out = torch.empty_like(q)
    cu = cu_seqlens.tolist()
    for b in range(len(cu) - 1):
        lo, hi = cu[b], cu[b + 1]
        keys, values, prefix = k[lo:hi], v[lo:hi], 0
        if k_cache is not None:
            prefix = int(prefix_lens[b])
            keys = torch.cat([gather_paged(k_cache, block_tables[b], prefix).to(k.dtype), keys])
            values = torch.cat([gather_paged(v_cache, block_tables[b], prefix).to(v.dtype), values])
        out[lo:hi] = dense_attention(q[lo:hi], keys, values, scale, prefix if causal else None)
    return out


def prefill_sdpa_baseline(q, k, v, cu_seqlens, max_seqlen, scale=None, causal=True,
                          k_cache=None, v_cache=None, block_tables=None, prefix_lens=None):
    """torch SDPA on the same batch viewed as dense [B, H, S, D]; equal-length sequences only.

    SDPA cannot read a paged cache, so with a prefix the cached tokens are first gathered into a
    contiguous tensor (part of the timed cost, as for an engine built on SDPA) and the causal mask is
    aligned bottom-right. The prefix length is read without a sync off the block table's width, which
    the benchmark cases fill exactly.
    """
    T, Hq, D = q.shape
    batch = T // max_seqlen
    if batch * max_seqlen != T:
        raise ValueError("prefill_sdpa_baseline needs equal-length sequences (T == batch * max_seqlen)")
    dense = lambda t: t.view(batch, -1, t.shape[1], D).transpose(1, 2)
    keys, values, mask = dense(k), dense(v), None
    if k_cache is not None:
        prefix = block_tables.shape[1] * k_cache.shape[1]
        gather = lambda c: c[block_tables.long()].reshape(batch, prefix, c.shape[2], D).transpose(1, 2)
        keys, values = torch.cat([gather(k_cache), keys], 2), torch.cat([gather(v_cache), values], 2)
        if causal:
            from torch.nn.attention.bias import causal_lower_right

            mask, causal = causal_lower_right(max_seqlen, prefix + max_seqlen), False
    o = torch.nn.functional.scaled_dot_product_attention(
        dense(q), keys, values, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=k.shape[1] != Hq)
    return o.transpose(1, 2).reshape(T, Hq, D)


register(Op(
    name="prefill_attention",
    triton=prefill_attention,
    torch=prefill_attention_reference,
    cases=cases.cases,
    make_inputs=cases.make_inputs,
    bench_cases=cases.bench_cases,
    smoke_cases=cases.smoke_cases,
    reduction_len=cases.reduction_len,
    flops=cases.flops,
    bytes=cases.bytes_moved,
    baseline=prefill_sdpa_baseline,
    baseline_name="SDPA",
    tf32=True,
))
