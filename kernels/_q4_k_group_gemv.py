"""GGUF Q4_K GEMV with one 144-byte super-block of one weight row per thread (``kernels.gguf_linear``).

Q4_K is what most GGUF models ship (Q4_K_M). A super-block (layout in ``kernels.gguf_formats``) is 256
weights in 144 bytes, nine 16-byte vectors, and every super-block of a row is 16-byte aligned. As the Q4_0
group kernel does with eight Q4_0 blocks (``kernels._q4_0_group_gemv``, read there first), one thread owns
one super-block of one weight row: nine 16-byte loads, and each byte's role is a constant of the unrolled
code. The earlier Q4_K GEMV (``kernels._gguf_gemv``) spread a super-block's quant words over the lanes and
loaded x and the scales per lane; it ran at 0.78-0.89x of cuBLAS bf16 at M = 1 (H200, run 15), this one
at 1.16-1.55x (run 16; bench/gguf_gemv_ab.py).

As 36 int32 words: word 0 is d | dmin << 16, words 1-3 the 12 scale bytes, words 4 + 8c .. 11 + 8c chunk c
(c = 0-3) of the quants. Byte l of chunk c holds element 64c + l (low nibble, sub-block 2c) and 64c + 32 + l
(high nibble, sub-block 2c + 1). The 6-bit scales and mins unpack four at a time, one sub-block a byte:
    sc0-3 = w1 & 0x3F3F3F3F              m0-3 = w2 & 0x3F3F3F3F
    sc4-7 = (w3 & 0x0F..) | (w1 >> 2 & 0x30..)   m4-7 = (w3 >> 4 & 0x0F..) | (w2 >> 2 & 0x30..)
Per quant byte one shift places both nibbles (as in the Q4_0 group kernel): the high one gives 1 + u / 16,
the low one 16 + u / 16. With S_lo, X_lo the sums over a chunk's low nibbles of x (16 + u / 16) and of x,
and S_hi, X_hi over its high ones,
    sub-block 2c:     d sc sum x u - dmin m X_lo = 16 d sc S_lo - (256 d sc + dmin m) X_lo
    sub-block 2c + 1: d sc sum x u - dmin m X_hi = 16 d sc S_hi - (16 d sc + dmin m) X_hi
so a weight costs half a shift, a LOP3 and an FMA, and the scales four FMAs a chunk.
"""

from __future__ import annotations

from kernels import pdl
from kernels._gguf_gemv import _finish_rows
from kernels._group_gemv import GroupTiles, _split4
from kernels._quant_gemv import _bits, _f16_bits, _halves
from kernels._triton import tl, triton

# The split-K aim for this kernel's launches, as ``kernels._q4_0_group_gemv.PROGRAMS_PER_SM``; read at launch.
PROGRAMS_PER_SM = 8


@triton.jit
def _q4_k_word(s_lo, s_hi, x_lo, x_hi, q, lo01, lo23, hi01, hi23, one, sixteen, X_BF16: tl.constexpr):
    """The sums with quant word ``q`` (byte i holds element i of both runs) added; lo01 .. hi23: int32 words
    of x at elements 0-1 and 2-3 of the low-nibble run, and of the high-nibble run."""
    l0, l1 = _halves(lo01, X_BF16)
    l2, l3 = _halves(lo23, X_BF16)
    h0, h1 = _halves(hi01, X_BF16)
    h2, h3 = _halves(hi23, X_BF16)
    t = q << 15
    s_hi = tl.fma(h0, _bits(t, 0x780000, one), s_hi)
    s_lo = tl.fma(l0, _bits(t, 0x78000, sixteen), s_lo)
    t = q << 7
    s_hi = tl.fma(h1, _bits(t, 0x780000, one), s_hi)
    s_lo = tl.fma(l1, _bits(t, 0x78000, sixteen), s_lo)
    t = q >> 1
    s_hi = tl.fma(h2, _bits(t, 0x780000, one), s_hi)
    s_lo = tl.fma(l2, _bits(t, 0x78000, sixteen), s_lo)
    t = q >> 9
    s_hi = tl.fma(h3, _bits(t, 0x780000, one), s_hi)
    s_lo = tl.fma(l3, _bits(t, 0x78000, sixteen), s_lo)
    return s_lo, s_hi, x_lo + ((l0 + l1) + (l2 + l3)), x_hi + ((h0 + h1) + (h2 + h3))


@triton.jit
def _q4_k_chunk(acc, q0, q1, q2, q3, q4, q5, q6, q7, xc, x_ok, a_lo, b_lo, a_hi, b_hi, one, sixteen,
                X_BF16: tl.constexpr):
    """acc + one 64-element chunk: q0-q7 its quant words, xc [1, G, 4] int32 pointers to its first x word,
    a_lo .. b_hi the chunk's scale terms (16 d sc and the X coefficients of its two sub-blocks)."""
    a0, a1, a2, a3 = _split4(tl.load(xc, mask=x_ok, other=0))  # low run: elements 0-7, two to a word
    b0, b1, b2, b3 = _split4(tl.load(xc + 4, mask=x_ok, other=0))  # 8-15
    c0, c1, c2, c3 = _split4(tl.load(xc + 8, mask=x_ok, other=0))  # 16-23
    e0, e1, e2, e3 = _split4(tl.load(xc + 12, mask=x_ok, other=0))  # 24-31
    f0, f1, f2, f3 = _split4(tl.load(xc + 16, mask=x_ok, other=0))  # high run: elements 32-39
    g0, g1, g2, g3 = _split4(tl.load(xc + 20, mask=x_ok, other=0))  # 40-47
    h0, h1, h2, h3 = _split4(tl.load(xc + 24, mask=x_ok, other=0))  # 48-55
    i0, i1, i2, i3 = _split4(tl.load(xc + 28, mask=x_ok, other=0))  # 56-63
    s_lo = tl.zeros(q0.shape, dtype=tl.float32)
    s_hi = s_lo
    x_lo = tl.zeros(a0.shape, dtype=tl.float32)
    x_hi = x_lo
    s_lo, s_hi, x_lo, x_hi = _q4_k_word(s_lo, s_hi, x_lo, x_hi, q0, a0, a1, f0, f1, one, sixteen, X_BF16)
    s_lo, s_hi, x_lo, x_hi = _q4_k_word(s_lo, s_hi, x_lo, x_hi, q1, a2, a3, f2, f3, one, sixteen, X_BF16)
    s_lo, s_hi, x_lo, x_hi = _q4_k_word(s_lo, s_hi, x_lo, x_hi, q2, b0, b1, g0, g1, one, sixteen, X_BF16)
    s_lo, s_hi, x_lo, x_hi = _q4_k_word(s_lo, s_hi, x_lo, x_hi, q3, b2, b3, g2, g3, one, sixteen, X_BF16)
    s_lo, s_hi, x_lo, x_hi = _q4_k_word(s_lo, s_hi, x_lo, x_hi, q4, c0, c1, h0, h1, one, sixteen, X_BF16)
    s_lo, s_hi, x_lo, x_hi = _q4_k_word(s_lo, s_hi, x_lo, x_hi, q5, c2, c3, h2, h3, one, sixteen, X_BF16)
    s_lo, s_hi, x_lo, x_hi = _q4_k_word(s_lo, s_hi, x_lo, x_hi, q6, e0, e1, i0, i1, one, sixteen, X_BF16)
    s_lo, s_hi, x_lo, x_hi = _q4_k_word(s_lo, s_hi, x_lo, x_hi, q7, e2, e3, i2, i3, one, sixteen, X_BF16)
    # Every multiply-add is an explicit FMA: left to the compiler, which products it fuses can differ
    # between ROWS (one bf16 ulp in a row's output seen on an H200), and a row must not depend on the batch.
    return acc + tl.fma(a_hi, s_hi, a_lo * s_lo) - tl.fma(b_hi, x_hi, b_lo * x_lo)


@triton.jit
def _byte(v, i: tl.constexpr):
    """Byte i of the int32 ``v`` as fp32."""
    return ((v >> (8 * i)) & 0xFF).to(tl.float32)


@triton.jit
def _terms(d, dmin, sc, mn, i: tl.constexpr):
    """(16 d sc, 256 d sc + dmin m, 16 d sc, 16 d sc + dmin m) of the two sub-blocks in bytes i, i + 1 of the
    packed scales ``sc`` and mins ``mn``: a chunk's low-nibble sub-block, then its high-nibble one."""
    a_lo = 16.0 * d * _byte(sc, i)
    a_hi = 16.0 * d * _byte(sc, i + 1)
    return a_lo, tl.fma(dmin, _byte(mn, i), 16.0 * a_lo), a_hi, tl.fma(dmin, _byte(mn, i + 1), a_hi)


@triton.jit(do_not_specialize=["M"])  # per-step value: compiled once per ROWS
def q4_k_group_gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, row_bytes, stride_xm, stride_ym, B_TOTAL, B_CHUNK, SPLITS, one_bits,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS_PER_ITER: tl.constexpr,
    X_BF16: tl.constexpr, PDL: tl.constexpr = 0,
):
    """x 16-bit, 4-byte aligned rows; B_TOTAL, B_CHUNK in super-blocks. Rows past N and M are clamped to the
    last one (loaded, computed, never stored)."""
    G: tl.constexpr = GROUPS_PER_ITER
    sixteen = one_bits + (4 << 23)  # 16.0: 16 + u / 16 from a low nibble under the mantissa's top four bits
    pdl.wait(PDL)  # x comes from an earlier kernel (kernels/pdl.py)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_m = tl.arange(0, ROWS)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    g = tl.arange(0, G)
    k = tl.arange(0, 4)
    g_start = split * B_CHUNK
    g_end = tl.minimum(g_start + B_CHUNK, B_TOTAL)
    words = w_ptr.to(tl.pointer_type(tl.int32)) + tl.minimum(offs_n, N - 1).to(tl.int64) * (row_bytes // 4)
    vec = words[:, None, None] + 36 * g[None, :, None] + k[None, None, :]  # [BN, G, 4]: each block's vector 0
    x_words = 128 * g[None, :, None] + k[None, None, :]  # [1, G, 4]: each block's first x word
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
        d, dmin = _f16_bits(w0), _f16_bits(w0 >> 16)
        sc_lo, mn_lo = w1 & 0x3F3F3F3F, w2 & 0x3F3F3F3F  # sub-blocks 0-3, a byte each
        sc_hi = (w3 & 0x0F0F0F0F) | ((w1 >> 2) & 0x30303030)  # sub-blocks 4-7
        mn_hi = ((w3 >> 4) & 0x0F0F0F0F) | ((w2 >> 2) & 0x30303030)
        a0, b0, a1, b1 = _terms(d, dmin, sc_lo, mn_lo, 0)  # chunk 0: sub-blocks 0 and 1
        a2, b2, a3, b3 = _terms(d, dmin, sc_lo, mn_lo, 2)
        a4, b4, a5, b5 = _terms(d, dmin, sc_hi, mn_hi, 0)
        a6, b6, a7, b7 = _terms(d, dmin, sc_hi, mn_hi, 2)
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
            a = _q4_k_chunk(a, w4, w5, w6, w7, w8, w9, w10, w11, xr, ok, a0, b0, a1, b1, one_bits, sixteen, X_BF16)
            a = _q4_k_chunk(a, w12, w13, w14, w15, w16, w17, w18, w19, xr + 32, ok, a2, b2, a3, b3, one_bits,
                            sixteen, X_BF16)
            a = _q4_k_chunk(a, w20, w21, w22, w23, w24, w25, w26, w27, xr + 64, ok, a4, b4, a5, b5, one_bits,
                            sixteen, X_BF16)
            a = _q4_k_chunk(a, w28, w29, w30, w31, w32, w33, w34, w35, xr + 96, ok, a6, b6, a7, b7, one_bits,
                            sixteen, X_BF16)
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


# (BLOCK_N, num_warps, the most ROWS it compiles for without spilling), as in kernels._q4_0_group_gemv: a
# thread holds BLOCK_N / (32 num_warps) weight rows, one super-block each per loop trip, and every tile sums
# a row in the same order, so a row's output does not depend on the config or on the rows decoded with it.
_TILES = {
    "cuda": [(32, 1, 4), (64, 2, 4), (128, 4, 4), (64, 1, 2), (128, 2, 2), (256, 4, 2)],
    "hip": [(64, 1, 4), (128, 2, 4), (128, 1, 1)],
}
# fp16 x takes more registers to unpack: one weight row a thread spilled 112 bytes at two x rows (sm_90).
TILES = GroupTiles(_TILES, {"cuda": 3, "hip": 2}, fp16_most_rows=1)
Q4_K_GROUP_GEMV_CONFIGS = TILES.configs
