"""Paged decode attention: one new query token per sequence against its whole paged KV cache.

Math, for sequence b, query head h, KV head g = h // G (G = Hq / Hkv query heads per KV head), and the
sequence's C = context_lens[b] cached tokens (its own new token included, already written):

    o_bh = sum_j softmax_j(scale * q_bh . k_bgj) v_bgj,   j = 0..C-1,  scale defaults to 1/sqrt(D)

Layouts: q and o [B, Hq, D]; the caches, block_tables [B, max_blocks] and context_lens [B] follow
kernels/kv_cache.py (token j of sequence b is in block block_tables[b, j // block_size]).

Grouped-query attention. One program handles all G query heads of a KV head: the group is the M axis
of ``tl.dot`` (padded to 16, the smallest MMA tile), so every K/V tile is loaded once per KV head, not
once per query head. Decode is memory-bound, so the idle rows of the padded tile cost nothing.

Split-KV (flash-decoding). With few sequences, B * Hkv programs cannot fill the card, so each sequence's
context is cut into splits of a FIXED SIZE (``split_size`` tokens; the last split is shorter) and the grid
is (B, Hkv, splits). Each split writes its normalised partial output and its log-sum-exp (base 2)
lse_s = m_s + log2(l_s), and the partials of each head are combined:

    o = sum_s w_s o_s / sum_s w_s,   w_s = exp2(lse_s - max_s lse_s)

Where the combine runs (``REDUCE_IN_SPLIT``, data: flip it to go back). Folded (True), it runs inside the
split launch, as split-K does (kernels/_split_k.py): each split program stores its partials, then
increments an arrival counter for its (sequence, KV head) -- an acquire-release atomic after a barrier,
so every thread's stores precede it -- and the program that sees the count reach that row's number of
splits holding tokens, cdiv(C, split_size), combines the partials of the row's G heads in split order
(not arrival order: deterministic), writes o and re-arms the counter to zero. Programs past the end of
their sequence neither compute nor arrive. The counters come from ``arrival_counters`` (shared with the
other in-launch reductions, made outside CUDA-graph capture). Unfolded (False), a second launch, the
reduce kernel, combines each (sequence, query head). Both combine through the same code
(``kernels._decode_combine.combine_group``: the folded path takes the G heads side by side, the reduce one
head per program), equal to rounding (tiles of another shape and splits per step may sum in another order).
The fold saves a launch per layer and step but puts the combine's round trips on the split launch's
critical path; ``REDUCE_IN_SPLIT`` says which won.

How each context is cut into splits -- a fixed ``split_size`` given (batch invariance), fitted to each
context by default (``FIT_SPLITS_TO_CONTEXT``), and how many splits a launch gets -- is
kernels/_decode_splits.py. With a single split the kernel writes the output directly: no partials, no
counters, no reduce.

No device sync on the hot path: the grid is sized from ``max_context_len`` (a host int, an upper bound of
context_lens: a smaller value would drop tokens, which TRITONFORGE_DEBUG_CHECKS=1 catches) or, if it is
not given, from the block table's capacity; programs past a sequence's end exit at once.

FRESH TOKENS: reading the cache before the PDL wait. Under PDL (kernels/pdl.py) a launch may start while the
kernels before it still run, and waits for them before its first read of anything they write. At one token
per sequence that wait costs a chain of dependent reads -- context length, block-table entry, K/V tile --
all of which, but the newest token's K and V, were written long before: by host copies and torch kernels
(block tables, context lengths; a torch launch ends before any later one starts) and by earlier steps (the
older tokens). Only the caller knows that, so it says so: with ``fresh_tokens=f`` it promises that no
kernel in flight writes the block tables, the context lengths or any cached token but each sequence's
newest ``f``. The split program then loads its first tile's other tokens before the wait and the fresh
ones after it (disjoint masks, so each row is read once, and the sums are the same bits as without the
promise), and the predecessor's run hides the first round trips. The engine's decode passes 1: its step
writes each decoding sequence's one new token, in the same layer, just before. Tokens of later tiles are
read after the wait, as before. A split launch whose splits span several unpipelined tiles skips the
early read (:func:`_prefetch`: measured slower there).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from kernels import _decode_cases as cases
from kernels import _decode_splits, alloc, pdl
from kernels import _paged_checks as checks
from kernels._attention_ref import dense_attention, gather_paged
from kernels._decode_combine import combine_group, combine_steps, reduce_chunks
from kernels._decode_splits import choose_split_size, split_len  # noqa: F401  (choose_split_size: re-exported)
from kernels._decode_tiles import SPLIT_TILES, TILES, fits_wide, pick_tile  # noqa: F401  (TILES, SPLIT_TILES: re-exported)
from kernels._flash import load_tile, softmax_step
from kernels._split_k import arrival_counters
from kernels._triton import tl, triton
from kernels.device import device_sms, interpreting
from kernels.registry import Op, register

LOG2E = 1.4426950408889634
# The reduce's tile for a given split_size (kernels._decode_combine.reduce_chunks): fixed, not from the batch.
INVARIANT_REDUCE_SPLITS = 256
# True: the split launch combines its own partials (one launch); False: a separate reduce launch does (two).
# Measured on an H200 (bench/results/NVIDIA_H200/run6/attention_decode_folded.csv against
# decode_sweep_call2.csv): folded, the row's last program combines its heads one after another on the
# critical path, and split launches got slower (batch 1 at 32k: 43.3 us against 37.9 for SDPA, 0.87x, where
# the two launches gave 0.96x; batch 8 at 4k: 0.87x against 0.95x). With the heads combined side by side
# (run 13), the Qwen2.5-0.5B decode graph still took 675.1 us folded against 667.5 with two launches (whose
# reduce then had the slower one-program-per-KV-head form). So the two-launch path is the default.
REDUCE_IN_SPLIT = False
# True: with the default policy (no split_size or num_splits given), each sequence spreads its own context
# over the launch's splits (kernels._decode_splits.split_len), so a short context under a large bound (a
# decode graph sized for 8192 tokens decoding at 200) uses several one-tile programs, not one walking it all.
FIT_SPLITS_TO_CONTEXT = True
# True: the reduce launch lets the next kernel be scheduled only after it has written o (kernels/pdl.py), as
# the split launch does after its loop; False: at its start, as the other short decode kernels. Read at launch.
# H200 (bench/results/NVIDIA_H200/run10/): late, back-to-back split launches at context >= 4k reach 83-105% of
# copy bandwidth at batch 8 (32q/8kv heads; 65-91% when signalled at the start), but the 0.5B model's decode
# graph, where the reduce precedes the o_proj GEMV, takes 723.0 us against 687.7. The engine decides.
REDUCE_SIGNALS_LATE = False
# True: a launch given ``fresh_tokens`` reads its first tile's settled tokens before the PDL wait (FRESH TOKENS in
# the module docstring); False: it waits first, as without the promise. Read at launch.
PREFETCH_SETTLED = True


@triton.jit
def _decode_tile(acc, m_i, l_i, q, k_head_ptr, v_head_ptr, bt_row_ptr, pos, valid, qk_scale,
                 stride_cb, stride_co, d_ok, PAGE: tl.constexpr, MASKED: tl.constexpr, EVEN_D: tl.constexpr,
                 UPCAST: tl.constexpr):
    """Load the tokens ``pos`` [N] through the block table and fold them into the online softmax.

    ``k_head_ptr``/``v_head_ptr`` already point at this KV head's first dim (plus the D offsets, [1, D]).
    """
    block = tl.load(bt_row_ptr + pos // PAGE, mask=valid, other=0 if MASKED else None)  # valid is None unmasked
    rows = (block.to(tl.int64) * stride_cb + (pos % PAGE) * stride_co)[:, None]
    k = load_tile(k_head_ptr + rows, valid, d_ok, MASKED, EVEN_D)
    v = load_tile(v_head_ptr + rows, valid, d_ok, MASKED, EVEN_D)
    return softmax_step(acc, m_i, l_i, q, k, v, qk_scale, valid[None, :] if MASKED else None, MASKED, UPCAST)


@triton.jit(do_not_specialize=["bt_ptr", "ctx_ptr", "stride_bt", "max_splits", "ctx_cap", "fresh"])  # compiled once
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, bt_ptr, ctx_ptr, o_ptr, part_o_ptr, part_lse_ptr, count_ptr,
    stride_qb, stride_qh, stride_cb, stride_co, stride_ch, stride_bt, stride_ob, stride_oh,
    qk_scale, group, num_q_heads, split_size, max_splits, ctx_cap, fresh,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, G_PAD: tl.constexpr, PAGE: tl.constexpr,
    DIRECT: tl.constexpr, FOLD: tl.constexpr, FIT: tl.constexpr, ALIGN: tl.constexpr, G_COMB: tl.constexpr,
    S_STEP: tl.constexpr, UPCAST: tl.constexpr, EVEN_D: tl.constexpr, BLOCK_N: tl.constexpr, PREFETCH: tl.constexpr,
    PDL: tl.constexpr,
):
    if not PREFETCH:
        pdl.wait(PDL)  # the context lengths, q and the cache come from earlier kernels (kernels/pdl.py)
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    # Clamped to the bound the grid was sized for (never past the block table): a context length beyond it
    # (invalid input, caught by the debug checks) cannot send the kernel outside its memory.
    ctx = tl.minimum(tl.load(ctx_ptr + seq), ctx_cap)
    size = split_len(ctx, split_size, max_splits, FIT, ALIGN)
    start = split * size
    # Nested on purpose: Triton has no `and` between a constexpr and a tensor.
    if not DIRECT:  # noqa: SIM102  (see the line above)
        # Past this sequence's end: no partial to write, none read, no arrival counted. Split 0 of an empty
        # context (never valid input) still runs, so that the folded path has an arrival to finish on.
        if start >= tl.maximum(ctx, 1):
            return
    end = tl.minimum(start + size, ctx)

    g = tl.arange(0, G_PAD)
    heads = kv_head * group + g
    head_ok = g < group
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d[None, :] < HEAD_DIM
    offs_n = tl.arange(0, BLOCK_N)
    k_head = k_cache_ptr + kv_head.to(tl.int64) * stride_ch + offs_d[None, :]
    v_head = v_cache_ptr + kv_head.to(tl.int64) * stride_ch + offs_d[None, :]
    bt_row = bt_ptr + seq.to(tl.int64) * stride_bt
    rest = start  # where the loop below starts
    if PREFETCH:  # the first tile's settled tokens before the wait, its fresh ones after (see FRESH TOKENS above)
        pos = start + offs_n
        in_split = pos < end
        new = in_split & (pos >= ctx - fresh)
        block = tl.load(bt_row + pos // PAGE, mask=in_split, other=0)
        rows = (block.to(tl.int64) * stride_cb + (pos % PAGE) * stride_co)[:, None]
        k = load_tile(k_head + rows, in_split & ~new, d_ok, True, EVEN_D)
        v = load_tile(v_head + rows, in_split & ~new, d_ok, True, EVEN_D)
        pdl.wait(PDL)
        k = tl.where(new[:, None], load_tile(k_head + rows, new, d_ok, True, EVEN_D), k)
        v = tl.where(new[:, None], load_tile(v_head + rows, new, d_ok, True, EVEN_D), v)
        rest = tl.minimum(start + BLOCK_N, end)
    q = tl.load(q_ptr + seq.to(tl.int64) * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=head_ok[:, None] & d_ok, other=0.0)

    m_i = tl.full([G_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D_PAD], tl.float32)
    if PREFETCH:  # noqa: SIM102  (a constexpr and a tensor: no `and` between them)
        if end > start:  # else an empty context (never valid input): zeros, as without the prefetch
            acc, m_i, l_i = softmax_step(acc, m_i, l_i, q, k, v, qk_scale, in_split[None, :], True, UPCAST)
    full_end = rest + ((end - rest) // BLOCK_N) * BLOCK_N
    for start_n in range(rest, full_end, BLOCK_N):
        acc, m_i, l_i = _decode_tile(acc, m_i, l_i, q, k_head, v_head, bt_row, start_n + offs_n, None,
                                     qk_scale, stride_cb, stride_co, d_ok, PAGE, False, EVEN_D, UPCAST)
    if full_end < end:
        pos = full_end + offs_n
        acc, m_i, l_i = _decode_tile(acc, m_i, l_i, q, k_head, v_head, bt_row, pos, pos < end,
                                     qk_scale, stride_cb, stride_co, d_ok, PAGE, True, EVEN_D, UPCAST)

    # The next kernel may be scheduled once every program is past its loop, not from their start: signalled
    # at the start, the next launches' early programs slowed split launches by 10-25% (H200, run 9).
    pdl.launch_dependents(PDL)
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # an empty context (never valid input) gives zeros
    out_mask = head_ok[:, None] & d_ok
    if DIRECT:
        tl.store(o_ptr + seq.to(tl.int64) * stride_ob + heads[:, None] * stride_oh + offs_d[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=out_mask)
    else:
        part = (seq.to(tl.int64) * num_q_heads + heads) * max_splits + split  # [G_PAD]
        tl.store(part_o_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], out, mask=out_mask)
        tl.store(part_lse_ptr + part, m_i + tl.math.log2(l_i), mask=head_ok)
        if FOLD:
            n_splits = tl.cdiv(ctx, size)  # the row's programs that get here: the count to wait for
            tl.debug_barrier()  # every thread's partial stores happen before the release below
            row = seq * tl.num_programs(1) + kv_head
            arrived = tl.atomic_add(count_ptr + row, 1, sem="acq_rel")
            if arrived == tl.maximum(n_splits, 1) - 1:  # the row's last arrival combines its G heads
                tl.debug_barrier()
                combine_group(part_o_ptr, part_lse_ptr, o_ptr, seq, kv_head, group, n_splits, stride_ob,
                              stride_oh, num_q_heads, max_splits, 0, HEAD_DIM, D_PAD, G_COMB, S_STEP)
                tl.store(count_ptr + row, 0)  # re-arm for the next launch


@triton.jit(do_not_specialize=["ctx_ptr", "max_splits", "ctx_cap"])  # per-step values: compiled once
def _decode_reduce_kernel(
    part_o_ptr, part_lse_ptr, ctx_ptr, o_ptr, stride_ob, stride_oh, num_q_heads, split_size, max_splits,
    ctx_cap, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, FIT: tl.constexpr, ALIGN: tl.constexpr,
    S_STEP: tl.constexpr, PDL: tl.constexpr, SIGNAL_LATE: tl.constexpr = False,
):
    """The unfolded path's second launch: one program per (sequence, query head, D_PAD dims of it), a group
    of one (``kernels._decode_combine.reduce_chunks`` sizes the dims). One per KV head, each combining its
    G heads side by side, was slower: at batch 1 with 2 KV heads that is two programs for the whole card
    (H200, Qwen2.5-0.5B decode graph: 3.9 against 2.3 us per launch)."""
    if SIGNAL_LATE:  # see REDUCE_SIGNALS_LATE
        pdl.wait(PDL)
    else:
        pdl.start(PDL)
        pdl.enter(PDL)
    seq = tl.program_id(0)
    ctx = tl.minimum(tl.load(ctx_ptr + seq), ctx_cap)
    n_splits = tl.cdiv(ctx, split_len(ctx, split_size, max_splits, FIT, ALIGN))
    combine_group(part_o_ptr, part_lse_ptr, o_ptr, seq, tl.program_id(1), 1, n_splits, stride_ob, stride_oh,
                  num_q_heads, max_splits, tl.program_id(2) * D_PAD, HEAD_DIM, D_PAD, 1, S_STEP)
    if SIGNAL_LATE:
        pdl.launch_dependents(PDL)


# --- configs (data): kernels/_decode_tiles.py (TILES, SPLIT_TILES, pick_tile) ---

# --- launcher -------------------------------------------------------------------------------------

class Split(NamedTuple):
    """A split launch's output: ``o`` when it was written directly (one split), else the partials to combine
    (``part_o`` [B, Hq, max_splits, D] and ``part_lse`` [B, Hq, max_splits], fp32) and how the splits were cut."""
    o: torch.Tensor
    part_o: torch.Tensor | None
    part_lse: torch.Tensor | None
    size: int
    max_splits: int
    max_context: int
    fit: bool


def paged_decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float | None = None,
                           max_context_len: int | None = None, num_splits: int | None = None,
                           split_size: int | None = None, fresh_tokens: int | None = None, *,
                           _tile: dict | None = None) -> torch.Tensor:
    """Attention of ``q [B, Hq, D]`` over each sequence's paged cache; returns ``o [B, Hq, D]``.

    ``max_context_len`` (host int, an upper bound of context_lens) sizes the grid; ``num_splits`` or
    ``split_size`` override :func:`choose_split_size` (``split_size`` wins if both are given). ``_tile``
    (benchmarks only) overrides the launch tile from :data:`TILES` / :data:`SPLIT_TILES`. A launch cut into
    splits combines them in the same launch (``REDUCE_IN_SPLIT``, read here at each call) or in a second one.
    ``fresh_tokens`` (a host int, or None): the caller's promise that only each sequence's newest
    ``fresh_tokens`` cached tokens may still be being written by earlier kernels of the stream; the kernel
    then reads the rest of its first tile before its PDL wait (see FRESH TOKENS in the module docstring).
    None promises nothing: every read of the cache waits.
    """
    split = decode_split(q, k_cache, v_cache, block_tables, context_lens, scale, max_context_len, num_splits,
                         split_size, fresh_tokens, fold=REDUCE_IN_SPLIT, tile=_tile)
    if split.part_o is not None:
        # A given split_size promises batch invariance: then the combine's tile must not depend on the batch.
        shape_from = INVARIANT_REDUCE_SPLITS if split_size is not None else split.max_splits
        dims, step = reduce_chunks(shape_from, triton.next_power_of_2(q.shape[2]))
        _decode_reduce_kernel[(q.shape[0], q.shape[1], triton.cdiv(q.shape[2], dims))](
            split.part_o, split.part_lse, context_lens, split.o, split.o.stride(0), split.o.stride(1), q.shape[1],
            split.size, split.max_splits, split.max_context, HEAD_DIM=q.shape[2], D_PAD=dims, FIT=split.fit,
            ALIGN=_decode_splits.SPLIT_ALIGN, S_STEP=step, num_warps=4, SIGNAL_LATE=REDUCE_SIGNALS_LATE,
            **pdl.launch_options(q.device, "paged_decode_reduce"),
        )
    return split.o


def decode_split(q, k_cache, v_cache, block_tables, context_lens, scale=None, max_context_len=None,
                 num_splits=None, split_size=None, fresh_tokens=None, fold: bool = False,
                 tile: dict | None = None) -> Split:
    """Check the inputs and run the split launch. With one split (or ``fold``: the launch combines its own
    partials) ``o`` is the attention; otherwise the partials are left for the caller to combine (the reduce
    launch above, or the o_proj GEMV of kernels/paged_decode_linear.py)."""
    name = "paged_decode_attention"
    max_context = checks.decode_inputs(name, q, k_cache, v_cache, block_tables, context_lens,
                                       max_context_len, fresh_tokens)
    if checks.debug_checks():
        checks.block_table_values(name, block_tables, context_lens, k_cache.shape[0], k_cache.shape[1],
                                  "context_lens")
        if max_context_len is not None and context_lens.numel() and int(context_lens.max()) > max_context_len:
            raise ValueError(f"{name}: a context length exceeds max_context_len={max_context_len}")
    batch, q_heads, D = q.shape
    kv_heads = k_cache.shape[2]
    o = alloc.empty(batch, q_heads, D, dtype=q.dtype, device=q.device)
    d_pad = triton.next_power_of_2(D)
    can_go_wide = fits_wide(d_pad, q.element_size())
    sms = device_sms(q.device)
    size = _decode_splits.split_size_for(batch, kv_heads, max_context, num_splits, split_size, sms, can_go_wide)
    max_splits = max(1, triton.cdiv(max_context, size))
    direct = max_splits == 1
    fold = fold and not direct
    fit = FIT_SPLITS_TO_CONTEXT and num_splits is None and split_size is None  # read at launch
    if batch == 0:
        return Split(o, None, None, size, max_splits, max_context, fit)
    if direct:
        part_o = part_lse = o  # unused
    else:
        part_o = alloc.empty(batch, q_heads, max_splits, D, dtype=torch.float32, device=q.device)
        part_lse = alloc.empty(batch, q_heads, max_splits, dtype=torch.float32, device=q.device)
    # One arrival counter per (sequence, KV head); made before any CUDA-graph capture (see arrival_counters).
    counters = arrival_counters(q.device, batch * kv_heads) if fold else part_lse  # unused unless folded
    scale = checks.softmax_scale(name, scale, D)
    group = q_heads // kv_heads
    # A given split_size promises batch invariance, so its tile must not depend on the batch: the split tile.
    wide = can_go_wide and split_size is None and _decode_splits.wide_launch(batch * kv_heads * max_splits, sms)
    tile = tile or pick_tile(d_pad, q.element_size(), split=not (direct or wide))
    combine = dict(G_COMB=triton.next_power_of_2(group), S_STEP=combine_steps(group, d_pad))
    _decode_split_kernel[(batch, kv_heads, max_splits)](
        q, k_cache, v_cache, block_tables, context_lens, o, part_o, part_lse, counters,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        block_tables.stride(0), o.stride(0), o.stride(1),
        scale * LOG2E, group, q_heads, size, max_splits, max_context, fresh_tokens or 0,
        HEAD_DIM=D, D_PAD=d_pad, EVEN_D=d_pad == D, G_PAD=max(16, triton.next_power_of_2(group)),
        PAGE=k_cache.shape[1],
        DIRECT=direct, FOLD=fold, FIT=fit, ALIGN=_decode_splits.SPLIT_ALIGN, UPCAST=interpreting(),
        PREFETCH=_prefetch(fresh_tokens, tile, size, direct), **combine, **tile,
        **pdl.launch_options(q.device, "paged_decode_split"),
    )
    if direct or fold:
        return Split(o, None, None, size, max_splits, max_context, fit)
    return Split(o, part_o, part_lse, size, max_splits, max_context, fit)


def _prefetch(fresh_tokens, tile, size, direct) -> bool:
    """Read the first tile's settled tokens before the PDL wait (FRESH TOKENS in the module docstring)? Given
    the promise, yes, except where a split spans several tiles of an unpipelined tile: the peeled first tile
    then cost 15-20% in back-to-back launches (H200, run 18: batch 8, 4k, 32/8 heads, 49.5 against 41.5 us),
    and the engine's batch-1 graph, whose splits are one tile at its context bound, keeps it. The cause, in
    ``python -m bench.compile_attention decode`` (Triton 3.9): with the early read the 128-token tile spills on
    sm_90 (255 registers and a 64-byte stack, against 230 and none without it)."""
    if fresh_tokens is None or not PREFETCH_SETTLED:
        return False
    return direct or tile.get("num_stages") != 1 or size <= tile["BLOCK_N"]  # the interpreter's tiles: no stages


def paged_decode_attention_reference(q, k_cache, v_cache, block_tables, context_lens, scale=None,
                                     max_context_len=None, num_splits=None, split_size=None, fresh_tokens=None):
    """Pure torch, same signature: gather each sequence's context, then dense softmax attention (the launch
    arguments, ``fresh_tokens`` included, change nothing here)."""
    scale = 1.0 / math.sqrt(q.shape[2]) if scale is None else float(scale)
    out = torch.empty_like(q)
    for b, n in enumerate(context_lens.tolist()):
        keys = gather_paged(k_cache, block_tables[b], n)
        values = gather_paged(v_cache, block_tables[b], n)
        out[b] = dense_attention(q[b:b + 1], keys.to(q.dtype), values.to(q.dtype), scale, None)[0]
    return out


register(Op(
    name="paged_decode_attention",
    triton=paged_decode_attention,
    torch=paged_decode_attention_reference,
    cases=cases.cases,
    make_inputs=cases.make_inputs,
    bench_cases=cases.bench_cases,
    smoke_cases=cases.smoke_cases,
    reduction_len=cases.reduction_len,
    flops=cases.flops,
    bytes=cases.bytes_moved,
    baseline=cases.decode_sdpa_baseline,
    baseline_name="SDPA",
    tf32=True,
))
