"""Weight-streaming GEMV kernels for GGUF Q4_0 and Q4_K at M <= GEMV_MAX_M (``kernels.gguf_linear``).

Same scheme as ``kernels._quant_gemv`` (read there first): the blocks are read as wide words along the
row, each nibble becomes the fp32 ``1 + q / 16`` by one shift and one LOP3, and fp32 FMAs on the CUDA
cores sum ``S = sum x (1 + q / 16)``; with ``xs = sum x`` over the same k, ``sum x q = 16 (S - xs)``.
The per-block (Q4_0) or per-sub-block (Q4_K) scale is applied per word, after the word's nibbles are
summed, so the per-weight cost is the shift, the LOP3 and the FMA.

Q4_0 blocks are 18 bytes, so only 2-byte alignment holds: the 16 quant bytes of a block are read as 8
int16 words (word j holds elements 2j and 2j + 1 in its low nibbles, 2j + 16 and 2j + 17 in its high
ones) and d as one more; a warp's loads still cover consecutive bytes of a row.
    block result = d * sum x (q - 8) = d * (16 S - 24 xs)
Q4_K blocks are 144 bytes (16-byte aligned in a row of them): the 128 quant bytes at byte 16 are 4 chunks
of 8 int32 words; byte l of chunk c holds element l of sub-block 2c (low nibble) and of 2c + 1 (high).
    sub-block s result = d sc_s sum x q - dmin m_s xs = 16 d sc_s S - (16 d sc_s + dmin m_s) xs
Both can load PREFETCH tiles ahead of the arithmetic in registers, and Q4_K can pipeline its quant words
through shared memory (STAGES), as in ``kernels._quant_gemv``: the quant words and the per-block scale
fields are carried raw to the trip that uses them, where they are converted; loads past the chunk are
masked off. Q4_0's 2-byte loads are too narrow for the asynchronous copies, so it has no STAGES.

Q4_0 stays on 2-byte words: a pair of blocks is 36 bytes (4-byte aligned when the row's block count is
even), but the first block's quants then start 2 bytes into a word, so every one of its words would be
made of two loaded words by a funnel shift (and the pair's 9 words are no power-of-two tile).
Layouts: ``kernels.gguf_formats``.
"""

from __future__ import annotations

from kernels._quant_gemv import _field, put_row
from kernels._split_k import finish_tile
from kernels._triton import tl, triton


@triton.jit
def _f16_bits(h):
    """int32 holding an IEEE half in its low 16 bits -> fp32."""
    return h.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _q4_0_row(acc, h, x_blk, x_ok, d16, d24):
    """One row's products with [BN, NB, 8] int16 quant words; x_blk: x at the blocks, [NB, 8] pointers."""
    part = tl.zeros(h.shape, dtype=tl.float32)
    xs = tl.zeros(x_blk.shape, dtype=tl.float32)
    for i in tl.static_range(4):  # nibble i of word j: element 2j + (i // 2) + 16 (i % 2)
        xv = tl.load(x_blk + (i // 2) + 16 * (i % 2), mask=x_ok, other=0.0).to(tl.float32)
        part += xv[None, :, :] * _field(h, 19 - 4 * i, 0x780000)
        xs += xv
    return acc + d16 * part - d24 * xs[None, :, :]


@triton.jit
def _q4_0_tile(qs_ptrs, d_ptrs, b0, b_end, bi):
    """The raw int16 quant words [BN, NB, 8] and fp16 scales [BN, NB, 1] of blocks b0 + bi (zero past b_end)."""
    b_ok = ((b0 + bi) < b_end)[None, :, None]
    return tl.load(qs_ptrs + 9 * b0, mask=b_ok, other=0), tl.load(d_ptrs + 9 * b0, mask=b_ok, other=0.0)


@triton.jit(do_not_specialize=["M"])  # per-step value: compiled once per ROWS
def q4_0_gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, row_bytes, stride_xm, stride_ym, B_TOTAL, B_CHUNK, SPLITS,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCKS_PER_ITER: tl.constexpr,
    PREFETCH: tl.constexpr = 0,
):
    """Rows past N and M are clamped to the last one (loaded, computed, never stored)."""
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
    x0 = x_ptr + x_offs
    x1 = x_ptr + tl.minimum(1, M - 1) * stride_xm + x_offs
    x2 = x_ptr + tl.minimum(2, M - 1) * stride_xm + x_offs
    x3 = x_ptr + tl.minimum(3, M - 1) * stride_xm + x_offs
    acc0 = tl.zeros((BLOCK_N, BLOCKS_PER_ITER, 8), dtype=tl.float32)
    acc1, acc2, acc3 = acc0, acc0, acc0
    if PREFETCH > 0:
        h_a, d_a = _q4_0_tile(qs_ptrs, d_ptrs, b_start, b_end, bi)
    if PREFETCH > 1:
        h_b, d_b = _q4_0_tile(qs_ptrs, d_ptrs, b_start + BLOCKS_PER_ITER, b_end, bi)
    for b0 in range(b_start, b_end, BLOCKS_PER_ITER):
        if PREFETCH == 0:
            h, d = _q4_0_tile(qs_ptrs, d_ptrs, b0, b_end, bi)
        elif PREFETCH == 1:
            h, d = h_a, d_a
            h_a, d_a = _q4_0_tile(qs_ptrs, d_ptrs, b0 + BLOCKS_PER_ITER, b_end, bi)
        else:
            h, d = h_a, d_a
            h_a, d_a = h_b, d_b
            h_b, d_b = _q4_0_tile(qs_ptrs, d_ptrs, b0 + 2 * BLOCKS_PER_ITER, b_end, bi)
        h = h.to(tl.int32)  # 9 int16 per block: d, then the 8 quant words
        d = d.to(tl.float32)
        d16, d24 = 16.0 * d, 24.0 * d
        x_ok = ((b0 + bi) < b_end)[:, None]
        acc0 = _q4_0_row(acc0, h, x0 + 32 * b0, x_ok, d16, d24)
        if ROWS > 1:
            acc1 = _q4_0_row(acc1, h, x1 + 32 * b0, x_ok, d16, d24)
        if ROWS > 2:
            acc2 = _q4_0_row(acc2, h, x2 + 32 * b0, x_ok, d16, d24)
            acc3 = _q4_0_row(acc3, h, x3 + 32 * b0, x_ok, d16, d24)
    y = put_row(tl.zeros((ROWS, BLOCK_N), dtype=tl.float32), offs_m, 0, tl.sum(tl.sum(acc0, axis=2), axis=1))
    if ROWS > 1:
        y = put_row(y, offs_m, 1, tl.sum(tl.sum(acc1, axis=2), axis=1))
    if ROWS > 2:
        y = put_row(y, offs_m, 2, tl.sum(tl.sum(acc2, axis=2), axis=1))
        y = put_row(y, offs_m, 3, tl.sum(tl.sum(acc3, axis=2), axis=1))
    finish_tile(y, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS)


@triton.jit
def _q4_k_block(words, rows, q_words, c, b, b_end, BLOCK_N: tl.constexpr):
    """Block b's raw fields, zero past b_end: quant words [BN, 4, 8], d | dmin << 16 [BN], and the scale
    bytes of sub-blocks 2c (low byte) and 2c + 1 (high byte) as int16 pairs [BN, 4]: scales[s], scales[s + 4]
    and scales[s - 4] (the last for c >= 2 only)."""
    r_ok = (b + tl.zeros([BLOCK_N], tl.int32)) < b_end
    w = tl.load(words[:, None, None] + 36 * b + q_words[None, :, :], mask=r_ok[:, None, None], other=0)
    blk = rows + 144 * b  # [BN] bytes
    dd = tl.load(blk.to(tl.pointer_type(tl.int32)), mask=r_ok, other=0)
    pair = (blk[:, None] + 2 * c[None, :]).to(tl.pointer_type(tl.int16))  # [BN, 4]: bytes 2c, 2c + 1
    ok = r_ok[:, None]
    sa = tl.load(pair + 2, mask=ok, other=0)  # block bytes 4 + 2c: scales[2c], scales[2c + 1]
    sb = tl.load(pair + 4, mask=ok, other=0)  # scales[2c + 4], scales[2c + 5]
    sc = tl.load(pair, mask=ok & (c >= 2)[None, :], other=0)  # scales[2c - 4], scales[2c - 3]
    return w, dd, sa, sb, sc


@triton.jit
def _k4_scales(sa, sb, sc, c, HI: tl.constexpr):
    """6-bit scale and min of sub-blocks 2c + HI, from the int16 pairs of ``_q4_k_block``."""
    a = (sa.to(tl.int32) >> (8 * HI)) & 0xFF  # scales[s]
    b = (sb.to(tl.int32) >> (8 * HI)) & 0xFF  # scales[s + 4]
    e = (sc.to(tl.int32) >> (8 * HI)) & 0xFF  # scales[s - 4]
    lo = (c < 2)[None, :]  # s < 4
    scale = tl.where(lo, a & 63, (b & 0xF) | ((e >> 6) << 4))
    mn = tl.where(lo, b & 63, (b >> 4) | ((a >> 6) << 4))
    return scale.to(tl.float32), mn.to(tl.float32)


@triton.jit
def _q4_k_row(acc, w, x_blk, x_ok, a_lo, b_lo, a_hi, b_hi):
    """One row's products with one block's [BN, 4, 8] quant words; x_blk: [4, 8] pointers (nibble 0)."""
    for hi in tl.static_range(2):  # low nibbles: sub-block 2c; high: 2c + 1
        part = tl.zeros(w.shape, dtype=tl.float32)
        xs = tl.zeros(x_blk.shape, dtype=tl.float32)
        for byte in tl.static_range(4):
            xv = tl.load(x_blk + 32 * hi + byte, mask=x_ok, other=0.0).to(tl.float32)
            part += xv[None, :, :] * _field(w, 19 - 8 * byte - 4 * hi, 0x780000)
            xs += xv
        if hi == 0:
            acc += a_lo[:, :, None] * part - b_lo[:, :, None] * xs[None, :, :]
        else:
            acc += a_hi[:, :, None] * part - b_hi[:, :, None] * xs[None, :, :]
    return acc


@triton.jit(do_not_specialize=["M"])  # per-step value: compiled once per ROWS
def q4_k_gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, row_bytes, stride_xm, stride_ym, B_TOTAL, B_CHUNK, SPLITS,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCKS_PER_ITER: tl.constexpr,
    PREFETCH: tl.constexpr = 0, STAGES: tl.constexpr = 1,
):
    """Rows past N and M are clamped to the last one (loaded, computed, never stored). PREFETCH: blocks
    loaded ahead, whatever BLOCKS_PER_ITER."""
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
    x0 = x_ptr + x_offs
    x1 = x_ptr + tl.minimum(1, M - 1) * stride_xm + x_offs
    x2 = x_ptr + tl.minimum(2, M - 1) * stride_xm + x_offs
    x3 = x_ptr + tl.minimum(3, M - 1) * stride_xm + x_offs
    acc0 = tl.zeros((BLOCK_N, 4, 8), dtype=tl.float32)
    acc1, acc2, acc3 = acc0, acc0, acc0
    if PREFETCH > 0:
        w_a, dd_a, sa_a, sb_a, sc_a = _q4_k_block(words, rows, q_words, c, b_start, b_end, BLOCK_N)
    if PREFETCH > 1:
        w_b, dd_b, sa_b, sb_b, sc_b = _q4_k_block(words, rows, q_words, c, b_start + 1, b_end, BLOCK_N)
    for b0 in tl.range(b_start, b_end, BLOCKS_PER_ITER, num_stages=STAGES):
        for bb in tl.static_range(BLOCKS_PER_ITER):
            b = b0 + bb
            if PREFETCH == 0:
                w, dd, sa, sb, sc = _q4_k_block(words, rows, q_words, c, b, b_end, BLOCK_N)
            elif PREFETCH == 1:
                w, dd, sa, sb, sc = w_a, dd_a, sa_a, sb_a, sc_a
                w_a, dd_a, sa_a, sb_a, sc_a = _q4_k_block(words, rows, q_words, c, b + 1, b_end, BLOCK_N)
            else:
                w, dd, sa, sb, sc = w_a, dd_a, sa_a, sb_a, sc_a
                w_a, dd_a, sa_a, sb_a, sc_a = w_b, dd_b, sa_b, sb_b, sc_b
                w_b, dd_b, sa_b, sb_b, sc_b = _q4_k_block(words, rows, q_words, c, b + 2, b_end, BLOCK_N)
            d, dmin = _f16_bits(dd)[:, None], _f16_bits(dd >> 16)[:, None]
            scale, mn = _k4_scales(sa, sb, sc, c, 0)  # [BN, 4]: sub-blocks 2c
            a_lo = 16.0 * d * scale
            b_lo = a_lo + dmin * mn
            scale, mn = _k4_scales(sa, sb, sc, c, 1)  # sub-blocks 2c + 1
            a_hi = 16.0 * d * scale
            b_hi = a_hi + dmin * mn
            x_ok = (b + tl.zeros([4, 8], tl.int32)) < b_end
            acc0 = _q4_k_row(acc0, w, x0 + 256 * b, x_ok, a_lo, b_lo, a_hi, b_hi)
            if ROWS > 1:
                acc1 = _q4_k_row(acc1, w, x1 + 256 * b, x_ok, a_lo, b_lo, a_hi, b_hi)
            if ROWS > 2:
                acc2 = _q4_k_row(acc2, w, x2 + 256 * b, x_ok, a_lo, b_lo, a_hi, b_hi)
                acc3 = _q4_k_row(acc3, w, x3 + 256 * b, x_ok, a_lo, b_lo, a_hi, b_hi)
    y = put_row(tl.zeros((ROWS, BLOCK_N), dtype=tl.float32), offs_m, 0, tl.sum(tl.sum(acc0, axis=2), axis=1))
    if ROWS > 1:
        y = put_row(y, offs_m, 1, tl.sum(tl.sum(acc1, axis=2), axis=1))
    if ROWS > 2:
        y = put_row(y, offs_m, 2, tl.sum(tl.sum(acc2, axis=2), axis=1))
        y = put_row(y, offs_m, 3, tl.sum(tl.sum(acc3, axis=2), axis=1))
    finish_tile(y, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS)


def _cfg(bn, blocks, warps, stages, prefetch=0, loop_stages=1):
    return dict(BLOCK_N=bn, BLOCKS_PER_ITER=blocks, PREFETCH=prefetch, STAGES=loop_stages, num_warps=warps,
                num_stages=stages)


# BLOCKS_PER_ITER divides the split unit: 4 blocks for Q4_0, 1 for Q4_K (a power of two for Q4_0's tiles).
# Then configs that PREFETCH in registers and (Q4_K) that pipeline through shared memory (STAGES), sized
# so that ROWS = 4 spills little or nothing (Q4_0 at ROWS = 4 is register-bound whatever the config).
Q4_0_GEMV_CONFIGS = {
    "cuda": [_cfg(64, 4, 4, 3), _cfg(32, 4, 4, 3), _cfg(128, 4, 4, 3), _cfg(16, 4, 2, 3), _cfg(64, 4, 8, 3),
             _cfg(256, 4, 8, 2),
             _cfg(32, 4, 4, 3, prefetch=1), _cfg(64, 4, 8, 3, prefetch=1), _cfg(32, 4, 4, 3, prefetch=2),
             _cfg(64, 4, 8, 3, prefetch=2)],
    "hip": [_cfg(16, 4, 4, 2), _cfg(32, 4, 4, 2)],
}
Q4_K_GEMV_CONFIGS = {
    "cuda": [_cfg(32, 1, 4, 3), _cfg(64, 1, 4, 3), _cfg(16, 1, 4, 3), _cfg(16, 1, 2, 3), _cfg(64, 1, 8, 3),
             _cfg(128, 1, 8, 2),
             _cfg(32, 1, 4, 3, prefetch=1), _cfg(64, 1, 8, 3, prefetch=2),
             _cfg(32, 1, 4, 3, loop_stages=3), _cfg(64, 1, 8, 3, loop_stages=3)],
    "hip": [_cfg(16, 1, 4, 2), _cfg(32, 1, 4, 2)],
}
