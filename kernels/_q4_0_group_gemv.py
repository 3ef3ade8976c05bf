"""GGUF Q4_0 GEMV over 8-block groups in 16-byte loads (``kernels.gguf_linear``, M <= GEMV_MAX_M).

The pair kernel of ``kernels._gguf_gemv`` reads a pair of blocks (36 bytes) as nine 4-byte words, spread
over eight lanes; run 13's sm_90 build of it took 0.44-0.50 SASS instructions per weight byte against 0.25
for W4A16 (about 7 per weight at M = 1), and it reached 0.90-0.96x of cuBLAS bf16 where W4A16 reaches 2.3x.
Eight blocks are 144 bytes, nine 16-byte vectors, and a row of a multiple of eight blocks (K % 256 == 0,
every model shape) keeps them 16-byte aligned. Here one thread owns one such group of one weight row: nine
16-byte loads, and every byte's place in the group -- its block, whether it is a scale or which quants it
holds -- is a constant of the unrolled code, so nothing moves between lanes.

A group is four pairs of blocks, 9 words each (word t of pair c is group word 9c + t). In a pair, block 0's d
is the low half of word 0 and its 16 quant bytes start at byte 2 (word j of them is the high half of word j
and the low half of word j + 1: one funnel shift), block 1's d is the high half of word 4 and its quants are
words 5-8. Quant byte q holds element q (low nibble) and q + 16 (high nibble) of its block.

Per quant byte, as W4A16 does for a pair of nibbles (``kernels._quant_gemv``): one shift puts the high nibble
at the top of an fp32 mantissa and the low one four bits under it, and two LOP3s make 1 + u_hi / 16 and
1 + u_lo / 256; with x_hi at element q + 16 and 16 x_lo at element q,
    S = sum x_hi (1 + u_hi / 16) + 16 x_lo (1 + u_lo / 256) = X_hi + 16 X_lo + (sum x u) / 16
    block result = d sum x (u - 8) = d (16 S - 24 X_hi - 264 X_lo)
so a weight costs half a shift, a LOP3 and an FMA. x is read as int32 words of two 16-bit values, four to
a 16-byte load, shared by the rows a thread holds; its unpacking, the 16 x_lo and the sums X_hi, X_lo are
per thread, not per weight row.
"""

from __future__ import annotations

from kernels import pdl
from kernels._gguf_gemv import _finish_rows
from kernels._group_gemv import GroupTiles, _split4
from kernels._quant_gemv import _bits, _f16_bits, _halves
from kernels._triton import tl, triton

GROUP_BLOCKS = 8  # blocks of a group: 144 bytes, nine 16-byte vectors
# The split-K aim for this kernel's launches: programs per SM counting 128-row tiles, as
# kernels._split_k.PROGRAMS_PER_SM (None: that one). Read at launch. A thread holds one group a trip, so
# more splits keep more loads in flight: at M = 1 (H200, run 15, autotuned) aims 2 / 4 / 8 / 16 took 9.7 / 9.3
# / 9.4 / 9.4 us at 4096 x 4096, 20.1 / 20.1 / 17.9 / 22.9 us at 14336 x 4096 and 25.0 / 21.6 / 20.4 / 25.5 us
# at 4096 x 14336.
PROGRAMS_PER_SM = 8


@triton.jit
def _q4_0_word(s, xs, q, lo01, lo23, hi01, hi23, one, sixteen, X_BF16: tl.constexpr):
    """s + the products of quant word ``q`` (byte i = 0-3 holds elements i and i + 16 of its run), and xs +
    the x part of the correction; lo01 .. hi23: int32 words of x at elements 0-1, 2-3, 16-17 and 18-19."""
    l0, l1 = _halves(lo01, X_BF16)
    l2, l3 = _halves(lo23, X_BF16)
    h0, h1 = _halves(hi01, X_BF16)
    h2, h3 = _halves(hi23, X_BF16)
    t = q << 15
    s += h0 * _bits(t, 0x780000, one)
    s += l0 * _bits(t, 0x78000, sixteen)
    t = q << 7
    s += h1 * _bits(t, 0x780000, one)
    s += l1 * _bits(t, 0x78000, sixteen)
    t = q >> 1
    s += h2 * _bits(t, 0x780000, one)
    s += l2 * _bits(t, 0x78000, sixteen)
    t = q >> 9
    s += h3 * _bits(t, 0x780000, one)
    s += l3 * _bits(t, 0x78000, sixteen)
    return s, xs + 24.0 * (h0 + h1 + h2 + h3) + 264.0 * (l0 + l1 + l2 + l3)


@triton.jit
def _q4_0_block(acc, d, q0, q1, q2, q3, xb, x_ok, one, sixteen, X_BF16: tl.constexpr):
    """acc + d (16 S - 24 X_hi - 264 X_lo) of one block: q0-q3 its quant words, xb [1, G, 4] int32 pointers
    to its x (a 16-byte vector: words 0-3, elements 0-7)."""
    a0, a1, a2, a3 = _split4(tl.load(xb, mask=x_ok, other=0))  # elements 0-7, two to a word
    b0, b1, b2, b3 = _split4(tl.load(xb + 4, mask=x_ok, other=0))  # 8-15
    c0, c1, c2, c3 = _split4(tl.load(xb + 8, mask=x_ok, other=0))  # 16-23
    e0, e1, e2, e3 = _split4(tl.load(xb + 12, mask=x_ok, other=0))  # 24-31
    s = tl.zeros(q0.shape, dtype=tl.float32)
    xs = tl.zeros(a0.shape, dtype=tl.float32)
    s, xs = _q4_0_word(s, xs, q0, a0, a1, c0, c1, one, sixteen, X_BF16)
    s, xs = _q4_0_word(s, xs, q1, a2, a3, c2, c3, one, sixteen, X_BF16)
    s, xs = _q4_0_word(s, xs, q2, b0, b1, e0, e1, one, sixteen, X_BF16)
    s, xs = _q4_0_word(s, xs, q3, b2, b3, e2, e3, one, sixteen, X_BF16)
    return acc + d * (16.0 * s - xs)


@triton.jit
def _funnel(lo_word, hi_word):
    """The high half of ``lo_word`` then the low half of ``hi_word``: bytes 2-5 of the two."""
    return ((lo_word >> 16) & 0xFFFF) | (hi_word << 16)


@triton.jit
def _q4_0_pair(acc, w0, w1, w2, w3, w4, w5, w6, w7, w8, xp, x_ok, one, sixteen, X_BF16: tl.constexpr):
    """acc + one pair of blocks: w0-w8 its [BN, G] words, xp [1, G, 4] int32 pointers to its first x."""
    d0 = _f16_bits(w0)  # low half of word 0
    d1 = _f16_bits(w4 >> 16)  # high half of word 4
    acc = _q4_0_block(acc, d0, _funnel(w0, w1), _funnel(w1, w2), _funnel(w2, w3), _funnel(w3, w4), xp, x_ok,
                      one, sixteen, X_BF16)
    return _q4_0_block(acc, d1, w5, w6, w7, w8, xp + 16, x_ok, one, sixteen, X_BF16)


@triton.jit(do_not_specialize=["M"])  # per-step value: compiled once per ROWS
def q4_0_group_gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, row_bytes, stride_xm, stride_ym, B_TOTAL, B_CHUNK, SPLITS, one_bits,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS_PER_ITER: tl.constexpr,
    X_BF16: tl.constexpr, PDL: tl.constexpr = 0,
):
    """Rows of a multiple of 8 blocks, 16-byte aligned; x 16-bit, 4-byte aligned rows. B_CHUNK is whole
    groups. Rows past N and M are clamped to the last one (loaded, computed, never stored)."""
    G: tl.constexpr = GROUPS_PER_ITER
    sixteen = one_bits + (4 << 23)  # 16.0: 16 + u / 16 from a low nibble under the mantissa's top four bits
    pdl.wait(PDL)  # x comes from an earlier kernel (kernels/pdl.py)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_m = tl.arange(0, ROWS)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    g = tl.arange(0, G)
    k = tl.arange(0, 4)
    g_start = split * (B_CHUNK // 8)
    g_end = tl.minimum(g_start + B_CHUNK // 8, B_TOTAL // 8)
    words = w_ptr.to(tl.pointer_type(tl.int32)) + tl.minimum(offs_n, N - 1).to(tl.int64) * (row_bytes // 4)
    vec = words[:, None, None] + 36 * g[None, :, None] + k[None, None, :]  # [BN, G, 4]: each group's vector 0
    x_words = 128 * g[None, :, None] + k[None, None, :]  # [1, G, 4]: each group's first x word
    xw = x_ptr.to(tl.pointer_type(tl.int32))
    x0 = xw + x_words
    x1 = xw + tl.minimum(1, M - 1) * (stride_xm // 2) + x_words
    x2 = xw + tl.minimum(2, M - 1) * (stride_xm // 2) + x_words
    x3 = xw + tl.minimum(3, M - 1) * (stride_xm // 2) + x_words
    acc0 = tl.zeros((BLOCK_N, G), dtype=tl.float32)
    acc1, acc2, acc3 = acc0, acc0, acc0
    for g0 in range(g_start, g_end, G):
        ok = ((g0 + g) < g_end)[None, :, None]
        base = vec + 36 * g0
        w0, w1, w2, w3 = _split4(tl.load(base, mask=ok, other=0))
        w4, w5, w6, w7 = _split4(tl.load(base + 4, mask=ok, other=0))
        w8, w9, w10, w11 = _split4(tl.load(base + 8, mask=ok, other=0))
        w12, w13, w14, w15 = _split4(tl.load(base + 12, mask=ok, other=0))
        w16, w17, w18, w19 = _split4(tl.load(base + 16, mask=ok, other=0))
        w20, w21, w22, w23 = _split4(tl.load(base + 20, mask=ok, other=0))
        w24, w25, w26, w27 = _split4(tl.load(base + 24, mask=ok, other=0))
        w28, w29, w30, w31 = _split4(tl.load(base + 28, mask=ok, other=0))
        w32, w33, w34, w35 = _split4(tl.load(base + 32, mask=ok, other=0))
        xo = 128 * g0
        for r in tl.static_range(ROWS):
            if r == 0:
                xr = x0 + xo
            elif r == 1:
                xr = x1 + xo
            elif r == 2:
                xr = x2 + xo
            else:
                xr = x3 + xo
            a = tl.zeros((BLOCK_N, G), dtype=tl.float32)
            a = _q4_0_pair(a, w0, w1, w2, w3, w4, w5, w6, w7, w8, xr, ok, one_bits, sixteen, X_BF16)
            a = _q4_0_pair(a, w9, w10, w11, w12, w13, w14, w15, w16, w17, xr + 32, ok, one_bits, sixteen, X_BF16)
            a = _q4_0_pair(a, w18, w19, w20, w21, w22, w23, w24, w25, w26, xr + 64, ok, one_bits, sixteen, X_BF16)
            a = _q4_0_pair(a, w27, w28, w29, w30, w31, w32, w33, w34, w35, xr + 96, ok, one_bits, sixteen, X_BF16)
            if r == 0:
                acc0 += a
            elif r == 1:
                acc1 += a
            elif r == 2:
                acc2 += a
            else:
                acc3 += a
    _finish_rows(acc0[:, :, None], acc1[:, :, None], acc2[:, :, None], acc3[:, :, None], y_ptr, b_ptr, part_ptr,
                 count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS, ROWS, BLOCK_N, PDL)


# (BLOCK_N, num_warps, the most ROWS it compiles for without spilling): a thread holds BLOCK_N / (32 num_warps)
# weight rows, one group each per loop trip. Compiled for sm_90 (Triton 3.9) at M = 1, the SASS of the loop
# is 0.28 warp instructions per weight byte at one weight row a thread, 0.22 at two and 0.18 at four (the
# pair kernel: 0.44-0.50, W4A16: 0.25-0.35); at two x rows (M = 2) two weight rows a thread spill 304 bytes,
# at four one weight row a thread takes 226-254 registers. So ROWS is in the autotuner's key and each row
# count tunes over the tiles that fit it. One group a trip (GROUPS_PER_ITER = 1) in every tile: a row's sums
# are then the same operations in the same order in every tile, and its output does not depend on the
# config or on the rows decoded with it. Four weight rows a thread (BLOCK_N 128 on one warp, 256 on two), for
# all their fewer instructions, ran 20-75% slower than the best tile on an H200 at M = 1 (runs 15 and 16), and
# every listed tile is one more compile (tens of seconds) when a shape is first tuned: they are not listed.
_TILES = {
    "cuda": [(32, 1, 4), (64, 2, 4), (128, 4, 4), (64, 1, 2), (128, 2, 2), (256, 4, 2)],
    "hip": [(64, 1, 4), (128, 2, 4), (128, 1, 1)],
}
# fp16 x takes more registers to unpack: one weight row a thread spilled 16 bytes at four x rows (sm_90).
TILES = GroupTiles(_TILES, {"cuda": 3, "hip": 2}, fp16_most_rows=2)
Q4_0_GROUP_GEMV_CONFIGS = TILES.configs
