"""Weight-streaming GEMV kernels for GGUF Q4_0 and Q4_K at M <= GEMV_MAX_M (``kernels.gguf_linear``).

Same scheme as ``kernels._quant_gemv`` (read there first): the blocks are read as wide words along the
row, each nibble becomes the fp32 ``1 + q / 16`` by one shift and one LOP3 (the exponent bits from the
run-time ``one_bits``, as there), and fp32 FMAs on the CUDA
cores sum ``S = sum x (1 + q / 16)``; with ``xs = sum x`` over the same k, ``sum x q = 16 (S - xs)``.
The per-block (Q4_0) or per-sub-block (Q4_K) scale is applied per word, after the word's nibbles are
summed, so the per-weight cost is the shift, the LOP3 and the FMA.

Q4_0 blocks are 18 bytes: the 16 quant bytes are 8 int16 quant words (word j holds elements 2j and
2j + 1 in its low nibbles, 2j + 16 and 2j + 17 in its high ones) after d.
    block result = d * sum x (q - 8) = d * (16 S - 24 xs) = 16 d (S - 1.5 xs)
The last form is the one computed: with ``d16 * part - d24 * xs`` ptxas (sm_90, Triton 3.9) loaded x
several times over in different layouts, 45 2-byte loads per loop trip of the 16 x 4-block tile at
M = 1 and 153 at four rows, against 13 and 25 this way.
Two consecutive blocks (a pair, 36 bytes) are 9 int32 words, 4-byte aligned when a row holds an even
number of blocks (K % 64 == 0, every model shape) and the data is: ``q4_0_pair_gemv_kernel`` reads them so,
since the H200 profile of the 2-byte reads showed a full load queue ("many 2-byte loads"; 0.59-0.77x of
cuBLAS bf16 at M = 1 while reading 3.6x fewer bytes). Halfword hw = 0..17 of a pair (the low half of word
t is hw 2t, the high half 2t + 1) is slot hw % 9 of block hw // 9: slot 0 is that block's d (the low half
of word 0, the high half of word 4), slot s > 0 its quant word s - 1. Triton tiles are powers of two, so
words 0-7 of each pair are a [BN, PAIRS, 8] tile, word t in lane t; word 8 (block 1's quant words 6 and
7) is loaded into all 8 lanes and each lane takes one of its nibbles. Block, slot and x of a half-word
follow from its index; d0 and d1 come out of the loaded words (one masked sum over the lanes), and a
half-word's nibble sums are scaled by either with a select. x is zero at the d slots (a masked load),
so their nibbles add nothing. Rows of an odd number of blocks, or data aligned to 2 bytes only, take
``q4_0_gemv_kernel``: a block as 8 int16 quant words and d, 9 loads. Rows of a multiple of 8 blocks with
16-bit x take neither: ``kernels._q4_0_group_gemv`` reads them in 16-byte vectors.
Q4_K blocks are 144 bytes (16-byte aligned in a row of them): the 128 quant bytes at byte 16 are 4 chunks
of 8 int32 words; byte l of chunk c holds element l of sub-block 2c (low nibble) and of 2c + 1 (high).
    sub-block s result = d sc_s sum x q - dmin m_s xs = 16 d sc_s S - (16 d sc_s + dmin m_s) xs
Layouts: ``kernels.gguf_formats``.
"""

from __future__ import annotations

from kernels import pdl
from kernels._quant_gemv import _bits, _f16_bits, _field, put_row
from kernels._split_k import finish_tile
from kernels._triton import tl, triton


@triton.jit
def _x_rows(x_ptr, M, stride_xm, x_offs):
    """Pointers to x at ``x_offs`` in rows 0-3; rows past M are clamped to the last (loaded, never stored)."""
    return (x_ptr + x_offs, x_ptr + tl.minimum(1, M - 1) * stride_xm + x_offs,
            x_ptr + tl.minimum(2, M - 1) * stride_xm + x_offs, x_ptr + tl.minimum(3, M - 1) * stride_xm + x_offs)


@triton.jit
def _finish_rows(acc0, acc1, acc2, acc3, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split,
                 SPLITS, HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    """Each row's [BN, ...] accumulator summed to [BN], the rows stacked, and the tile finished (split-K)."""
    y = put_row(tl.zeros((ROWS, BLOCK_N), dtype=tl.float32), offs_m, 0, tl.sum(tl.sum(acc0, axis=2), axis=1))
    if ROWS > 1:
        y = put_row(y, offs_m, 1, tl.sum(tl.sum(acc1, axis=2), axis=1))
    if ROWS > 2:
        y = put_row(y, offs_m, 2, tl.sum(tl.sum(acc2, axis=2), axis=1))
        y = put_row(y, offs_m, 3, tl.sum(tl.sum(acc3, axis=2), axis=1))
    # Late, not at the start: the next kernel's programs, resident early, would crowd this one's waves
    # (H200, run 9: triggered at the start, Q4_K at 4096 x 14336 took 49.6 us against 37.8 without PDL).
    pdl.launch_dependents(PDL)
    finish_tile(y, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS)


@triton.jit
def _q4_0_row(acc, h, x_blk, x_ok, d16, one, BIT: tl.constexpr = 0):
    """One row's products with a [BN, NB, W] tile of quant words held in bits BIT to BIT + 15 of ``h``;
    x_blk: [NB, W] pointers to x at each word's element 2j (nibble 0); d16: 16 d of each word's block."""
    part = tl.zeros(h.shape, dtype=tl.float32)
    xs = tl.zeros(x_blk.shape, dtype=tl.float32)
    for i in tl.static_range(4):  # nibble i of word j: element 2j + (i // 2) + 16 (i % 2)
        xv = tl.load(x_blk + (i // 2) + 16 * (i % 2), mask=x_ok, other=0.0).to(tl.float32)
        part += xv[None, :, :] * _field(h, 19 - BIT - 4 * i, 0x780000, one)
        xs += xv
    return acc + d16 * (part - 1.5 * xs[None, :, :])  # d (16 S - 24 xs)


@triton.jit(do_not_specialize=["M"])  # per-step value: compiled once per ROWS
def q4_0_gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, row_bytes, stride_xm, stride_ym, B_TOTAL, B_CHUNK, SPLITS, one_bits,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCKS_PER_ITER: tl.constexpr,
    PDL: tl.constexpr = 0,
):
    """Rows past N and M are clamped to the last one (loaded, computed, never stored)."""
    pdl.wait(PDL)  # x comes from an earlier kernel (kernels/pdl.py)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_m = tl.arange(0, ROWS)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    bi = tl.arange(0, BLOCKS_PER_ITER)
    j = tl.arange(0, 8)
    b_start = split * B_CHUNK
    b_end = tl.minimum(b_start + B_CHUNK, B_TOTAL)
    rows = w_ptr + tl.minimum(offs_n, N - 1).to(tl.int64)[:, None, None] * row_bytes  # [BN, 1, 1] bytes
    qs_ptrs = (rows + 18 * bi[None, :, None] + 2 + 2 * j[None, None, :]).to(tl.pointer_type(tl.int16))
    d_ptrs = (rows + 18 * bi[None, :, None]).to(tl.pointer_type(tl.float16))  # [BN, NB, 1]
    x_offs = 32 * bi[:, None] + 2 * j[None, :]  # [NB, 8]
    x0, x1, x2, x3 = _x_rows(x_ptr, M, stride_xm, x_offs)
    acc0 = tl.zeros((BLOCK_N, BLOCKS_PER_ITER, 8), dtype=tl.float32)
    acc1, acc2, acc3 = acc0, acc0, acc0
    for b0 in range(b_start, b_end, BLOCKS_PER_ITER):
        b_ok = (b0 + bi) < b_end
        h = tl.load(qs_ptrs + 9 * b0, mask=b_ok[None, :, None], other=0).to(tl.int32)  # 9 int16 per block
        d = tl.load(d_ptrs + 9 * b0, mask=b_ok[None, :, None], other=0.0).to(tl.float32)
        d16 = 16.0 * d
        x_ok = b_ok[:, None]
        acc0 = _q4_0_row(acc0, h, x0 + 32 * b0, x_ok, d16, one_bits)
        if ROWS > 1:
            acc1 = _q4_0_row(acc1, h, x1 + 32 * b0, x_ok, d16, one_bits)
        if ROWS > 2:
            acc2 = _q4_0_row(acc2, h, x2 + 32 * b0, x_ok, d16, one_bits)
            acc3 = _q4_0_row(acc3, h, x3 + 32 * b0, x_ok, d16, one_bits)
    _finish_rows(acc0, acc1, acc2, acc3, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split,
                 SPLITS, HAS_BIAS, ROWS, BLOCK_N, PDL)


@triton.jit
def _q4_0_pair_row(acc, w, w8, t, x_pairs, pair_ok, d16_0, d16_1, one):
    """One row's products with a [BN, P, 8] tile of pair words 0-7 (``w``, word t in lane t) and word 8
    (``w8``, the same in every lane of a pair); x_pairs: [P] pointers to each pair's first x; d16_0, d16_1:
    [BN, P, 1], 16 d of the pair's two blocks."""
    for half in tl.static_range(2):  # the low half of word t is halfword 2t, the high half 2t + 1
        hw = 2 * t + half
        blk, slot = hw // 9, hw % 9  # slot 0: the block's d; slot s: its quant word s - 1
        x_blk = x_pairs[:, None] + (32 * blk + 2 * (slot - 1))[None, :]  # [P, 8]
        x_ok = pair_ok[:, None] & (slot > 0)[None, :]  # x is zero at d: its nibbles add nothing
        d16 = tl.where((blk == 0)[None, None, :], d16_0, d16_1)
        acc = _q4_0_row(acc, w, x_blk, x_ok, d16, one, 16 * half)
    # Word 8 is quant words 6 and 7 of block 1 (halfwords 16, 17): its 8 nibbles, one per lane. Nibble t sits
    # at bit 4t and holds element 32 + 2 (6 + t // 4) + (t % 4) // 2 + 16 (t % 2) of the pair.
    x8 = x_pairs[:, None] + (44 + 2 * (t // 4) + (t % 4) // 2 + 16 * (t % 2))[None, :]
    xv = tl.load(x8, mask=pair_ok[:, None], other=0.0).to(tl.float32)[None, :, :]
    f = _bits((w8 >> 4 * t[None, None, :]) << 19, 0x780000, one)
    return acc + d16_1 * (xv * f - 1.5 * xv)


@triton.jit(do_not_specialize=["M"])  # per-step value: compiled once per ROWS
def q4_0_pair_gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, row_bytes, stride_xm, stride_ym, B_TOTAL, B_CHUNK, SPLITS, one_bits,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCKS_PER_ITER: tl.constexpr,
    PDL: tl.constexpr = 0,
):
    """Rows of an even number of blocks, 4-byte aligned, read as pairs of blocks (9 int32 words each).

    BLOCKS_PER_ITER is even and B_TOTAL too: every split starts on a pair (it is whole 4-block units) and
    ends on one, so a pair is all in a split or all past it. Rows past N and M are clamped as in
    ``q4_0_gemv_kernel``.
    """
    PAIRS: tl.constexpr = BLOCKS_PER_ITER // 2
    pdl.wait(PDL)  # x comes from an earlier kernel (kernels/pdl.py)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_m = tl.arange(0, ROWS)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    p = tl.arange(0, PAIRS)
    t = tl.arange(0, 8)  # word of a pair (lane); word 8 is spread over the lanes
    tw = t[None, None, :]
    b_start = split * B_CHUNK
    b_end = tl.minimum(b_start + B_CHUNK, B_TOTAL)
    words = w_ptr.to(tl.pointer_type(tl.int32)) + tl.minimum(offs_n, N - 1).to(tl.int64) * (row_bytes // 4)
    pair_words = words[:, None, None] + 9 * p[None, :, None]  # [BN, P, 1]: each pair's word 0
    x_offs = 64 * p  # [P]: each pair's first element
    x0, x1, x2, x3 = _x_rows(x_ptr, M, stride_xm, x_offs)
    acc0 = tl.zeros((BLOCK_N, PAIRS, 8), dtype=tl.float32)
    acc1, acc2, acc3 = acc0, acc0, acc0
    for b0 in range(b_start, b_end, BLOCKS_PER_ITER):
        pair_ok = (b0 + 2 * p) < b_end  # [P]
        trip = pair_words + 9 * (b0 // 2)
        w = tl.load(trip + tw, mask=pair_ok[None, :, None], other=0)  # words 0-7
        # Word 8 in every lane, so that it has w's layout: a tile of its own, [BN, P, 1], would take a
        # round trip through shared memory (and barriers) to meet d1, which comes from w.
        w8 = tl.load(trip + 8 + 0 * tw, mask=pair_ok[None, :, None], other=0)
        # d0 is the low half of word 0, d1 the high half of word 4: one masked sum gives d0 | d1 << 16.
        dd = tl.sum(tl.where(tw == 0, w & 0xFFFF, tl.where(tw == 4, w & -65536, 0)), axis=2)
        d16_0, d16_1 = 16.0 * _f16_bits(dd)[:, :, None], 16.0 * _f16_bits(dd >> 16)[:, :, None]
        acc0 = _q4_0_pair_row(acc0, w, w8, t, x0 + 32 * b0, pair_ok, d16_0, d16_1, one_bits)
        if ROWS > 1:
            acc1 = _q4_0_pair_row(acc1, w, w8, t, x1 + 32 * b0, pair_ok, d16_0, d16_1, one_bits)
        if ROWS > 2:
            acc2 = _q4_0_pair_row(acc2, w, w8, t, x2 + 32 * b0, pair_ok, d16_0, d16_1, one_bits)
            acc3 = _q4_0_pair_row(acc3, w, w8, t, x3 + 32 * b0, pair_ok, d16_0, d16_1, one_bits)
    _finish_rows(acc0, acc1, acc2, acc3, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split,
                 SPLITS, HAS_BIAS, ROWS, BLOCK_N, PDL)


@triton.jit
def _k4_scales(blk, s, ok):
    """6-bit scale and min of sub-blocks ``s`` (a tensor) of Q4_K blocks at byte pointers ``blk``."""
    a = tl.load(blk + 4 + s, mask=ok, other=0).to(tl.int32)  # scales[s]
    b = tl.load(blk + 8 + s, mask=ok, other=0).to(tl.int32)  # scales[s + 4]
    c = tl.load(blk + s, mask=ok & (s >= 4), other=0).to(tl.int32)  # scales[s - 4]
    lo = s < 4
    sc = tl.where(lo, a & 63, (b & 0xF) | ((c >> 6) << 4))
    mn = tl.where(lo, b & 63, (b >> 4) | ((a >> 6) << 4))
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def _q4_k_row(acc, w, x_blk, x_ok, a_lo, b_lo, a_hi, b_hi, one):
    """One row's products with one block's [BN, 4, 8] quant words; x_blk: [4, 8] pointers (nibble 0)."""
    for hi in tl.static_range(2):  # low nibbles: sub-block 2c; high: 2c + 1
        part = tl.zeros(w.shape, dtype=tl.float32)
        xs = tl.zeros(x_blk.shape, dtype=tl.float32)
        for byte in tl.static_range(4):
            xv = tl.load(x_blk + 32 * hi + byte, mask=x_ok, other=0.0).to(tl.float32)
            part += xv[None, :, :] * _field(w, 19 - 8 * byte - 4 * hi, 0x780000, one)
            xs += xv
        if hi == 0:
            acc += a_lo[:, :, None] * part - b_lo[:, :, None] * xs[None, :, :]
        else:
            acc += a_hi[:, :, None] * part - b_hi[:, :, None] * xs[None, :, :]
    return acc


@triton.jit(do_not_specialize=["M"])  # per-step value: compiled once per ROWS
def q4_k_gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, row_bytes, stride_xm, stride_ym, B_TOTAL, B_CHUNK, SPLITS, one_bits,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCKS_PER_ITER: tl.constexpr,
    PDL: tl.constexpr = 0,
):
    """Rows past N and M are clamped to the last one (loaded, computed, never stored)."""
    pdl.wait(PDL)  # x comes from an earlier kernel (kernels/pdl.py)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_m = tl.arange(0, ROWS)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c = tl.arange(0, 4)  # 32-byte chunk: sub-blocks 2c and 2c + 1
    t = tl.arange(0, 8)  # word within the chunk
    b_start = split * B_CHUNK
    b_end = tl.minimum(b_start + B_CHUNK, B_TOTAL)
    rows = w_ptr + tl.minimum(offs_n, N - 1).to(tl.int64) * row_bytes  # [BN] bytes
    # The quants as int32 words (36 per block, from word 4), so that the loads are 16-byte vectors.
    words = w_ptr.to(tl.pointer_type(tl.int32)) + tl.minimum(offs_n, N - 1).to(tl.int64) * (row_bytes // 4)
    q_words = 4 + 8 * c[:, None] + t[None, :]  # [4, 8] words within a block
    x_offs = 64 * c[:, None] + 4 * t[None, :]  # [4, 8]: element of nibble 0 of each word
    x0, x1, x2, x3 = _x_rows(x_ptr, M, stride_xm, x_offs)
    acc0 = tl.zeros((BLOCK_N, 4, 8), dtype=tl.float32)
    acc1, acc2, acc3 = acc0, acc0, acc0
    for b0 in range(b_start, b_end, BLOCKS_PER_ITER):
        for bb in tl.static_range(BLOCKS_PER_ITER):
            b = b0 + bb
            r_ok = (b + tl.zeros([BLOCK_N], tl.int32)) < b_end
            blk = rows + 144 * b  # [BN]
            w = tl.load(words[:, None, None] + 36 * b + q_words[None, :, :], mask=r_ok[:, None, None], other=0)
            dd = tl.load(blk.to(tl.pointer_type(tl.int32)), mask=r_ok, other=0)  # d | dmin << 16
            d, dmin = _f16_bits(dd)[:, None], _f16_bits(dd >> 16)[:, None]
            sc, mn = _k4_scales(blk[:, None], 2 * c[None, :], r_ok[:, None])  # [BN, 4]
            a_lo = 16.0 * d * sc
            b_lo = a_lo + dmin * mn
            sc, mn = _k4_scales(blk[:, None], 2 * c[None, :] + 1, r_ok[:, None])
            a_hi = 16.0 * d * sc
            b_hi = a_hi + dmin * mn
            x_ok = (b + tl.zeros([4, 8], tl.int32)) < b_end
            acc0 = _q4_k_row(acc0, w, x0 + 256 * b, x_ok, a_lo, b_lo, a_hi, b_hi, one_bits)
            if ROWS > 1:
                acc1 = _q4_k_row(acc1, w, x1 + 256 * b, x_ok, a_lo, b_lo, a_hi, b_hi, one_bits)
            if ROWS > 2:
                acc2 = _q4_k_row(acc2, w, x2 + 256 * b, x_ok, a_lo, b_lo, a_hi, b_hi, one_bits)
                acc3 = _q4_k_row(acc3, w, x3 + 256 * b, x_ok, a_lo, b_lo, a_hi, b_hi, one_bits)
    _finish_rows(acc0, acc1, acc2, acc3, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split,
                 SPLITS, HAS_BIAS, ROWS, BLOCK_N, PDL)


def _cfg(bn, blocks, warps, stages):
    return dict(BLOCK_N=bn, BLOCKS_PER_ITER=blocks, num_warps=warps, num_stages=stages)


# BLOCKS_PER_ITER divides the split unit: 4 blocks for Q4_0, 1 for Q4_K (a power of two for Q4_0's tiles).
# Q4_0: four configs spilled at ROWS = 4 (``python -m bench.aot_quant --check`` now compiles every GEMV config
# at four rows): 128 x 4 blocks on 4 warps and 256 x 4 on 8 under Triton 3.6, 64 x 4 on 4 warps and 128 x 4 on 8
# under 3.9. They left the list; the autotuner picked 16 x 4 on 2 warps at the Llama-3-8B shapes (H200, run 11).
# The 2-byte kernel (rows of an odd number of blocks). The pair kernel's tiles below hold BN * PAIRS * 8 words
# over 32 x warps lanes; at 8 words a thread (32 x 4 blocks on 2 warps, 64 x 4 on 4) it takes 254 registers at
# ROWS = 4 without spilling (sm_90, Triton 3.9), at 4 words 128 and about 0.50 SASS instructions per weight byte
# at M = 1 against 0.44 at 8; the autotuner picks. Timed at M = 1 (H100, run 13, both autotuned, one process):
# the pair kernel 16.7 / 45.9 / 46.5 us at 4096 x 4096 / 14336 x 4096 / 4096 x 14336, the 2-byte kernel
# 17.7 / 51.6 / 51.3 us, cuBLAS bf16 15.6 / 41.5 / 44.4 us.
Q4_0_HALFWORD_GEMV_CONFIGS = {
    "cuda": [_cfg(16, 4, 2, 3), _cfg(32, 4, 4, 3), _cfg(64, 4, 8, 3)],
    "hip": [_cfg(16, 4, 4, 2), _cfg(32, 4, 4, 2)],
}
Q4_0_GEMV_CONFIGS = {
    "cuda": [_cfg(16, 4, 2, 3), _cfg(32, 4, 2, 3), _cfg(32, 4, 4, 3), _cfg(64, 4, 4, 3)],
    "hip": [_cfg(16, 4, 4, 2), _cfg(32, 4, 4, 2)],
}
# Q4_K: 128 x 1 block on 4 warps (the autotuner's pick at 14336 x 4096 in run 11's profile), 64 on 4 and 128 on
# 8 spilled at ROWS = 4 (under 3.9, the first; under 3.6, all three) and left the list.
Q4_K_GEMV_CONFIGS = {
    "cuda": [_cfg(32, 1, 4, 3), _cfg(16, 1, 4, 3), _cfg(16, 1, 2, 3), _cfg(64, 1, 8, 3)],
    "hip": [_cfg(16, 1, 4, 2), _cfg(32, 1, 4, 2)],
}
