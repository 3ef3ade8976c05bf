"""Weight-streaming GEMV kernels for W8A16 and W4A16 at M <= GEMV_MAX_M (``kernels.quant_linear``).

At M = 1 a decode linear is a matrix-vector product: each weight byte is used once, so the kernel is
done when it has read the weight, and the only questions are whether enough bytes are in flight and
whether the dequantize arithmetic keeps up with them. The tensor-core path pads M to 16 and moves every
weight tile through shared memory into the dot-operand layout; these kernels skip both. A program owns
BLOCK_N weight rows and one chunk of K (split-K, reduced in the launch: ``kernels._split_k``), loads the
packed weight as int32 words (16-byte vectors along K, coalesced along the row) and multiplies on the
CUDA cores in fp32.

Dequantizing costs at most three instructions per weight: a shift, one LOP3 (``(t & mask) | bits``) and the FMA.
The shift puts a field of ``b`` bits at the top of an fp32 mantissa and the OR supplies the exponent of
1.0, so the word *is* the float ``1 + u / 2^b`` (u the unsigned field), with no int-to-float conversion
(a quarter- or eighth-rate instruction on NVIDIA GPUs). Summing ``x * (1 + u / 2^b)`` gives
``S = xs + (sum x u) / 2^b`` with ``xs`` the sum of x over the same k, so ``sum x u = 2^b (S - xs)``;
the constant is folded into the per-row or per-group correction applied after the sum. The terms of S
are about |x|, so the cancellation costs a few bits of fp32, not the 8 to 20 a larger constant would.

The exponent bits come in as a kernel argument (``one_bits``, always ONE_BITS), not as a literal: a LOP3
takes one immediate, so with two literals (the mask and 1.0) ptxas rematerialised one of them with a MOV
before every LOP3 (sm_90: 43 of the W8 loop's 321 instructions); an argument is loaded once and kept in a
register.

W8A16: word t of row n holds k = 4t + i in byte i (little-endian), signed. Flipping a byte's top bit makes
it unsigned, u = q + 128, and the flip rides in the same LOP3 as the exponent: (t & mask) ^ (1.0's bits |
the field's top bit), with that second constant the run-time ``flip_bits`` (W8_FLIP_BITS). Then
sum x q = 256 S - 384 xs  and  y = scale[n] * (256 S - 384 xs)  over the whole row. bf16 x is read in
8-byte loads of four values (``X_QUADS``), one per weight word.
W4A16: word t holds k = 8t + i in nibble i (byte j low nibble k = 2j, high k = 2j + 1). One shift
serves a pair of nibbles: the odd one lands at the top of the mantissa (1 + u / 16), the even one four
bits lower (1 + u / 256) and is multiplied by 16 x, so both terms carry x u / 16. With S_g the sum of
those products over group g and X_hi, X_lo the sums of x at odd and even k, sum x u = 16 (S - X_hi -
16 X_lo) and the group adds scale (sum x u - zero (X_hi + X_lo)) = 16 scale S - (16 scale + scale zero)
X_hi - (256 scale + scale zero) X_lo (the kernel sums 16 x at even k, so it applies that last coefficient
divided by 16). Per word: four shifts, eight LOP3s and eight FMAs; the group's three-term correction is
applied once per thread's 16-byte vector of four words, after an in-register sum. bf16 x is read in 8-byte
loads of four values (``X_QUADS``), two per weight word, not eight loads of one.

``X_QUADS`` (``kernels.quant_linear.x_quads``: bf16 rows that start 8-byte aligned) changes which loads
bring x in, not the arithmetic, with one exception: an x of exactly zero at an even k enters the sums as
2^-123, not 0 (``_x16_pair`` adds 4 to its exponent field). In a row with any normal-sized x that vanishes
in fp32, and the two paths give the same bits; a row of all zeros comes out about 1e-37 times its weights'
sum, not 0. fp16, fp32 and misaligned x take one 2-byte load per value.
"""

from __future__ import annotations

from kernels import pdl
from kernels._split_k import finish_tile
from kernels._triton import tl, triton

GEMV_MAX_M = 4  # rows handled by the GEMV kernels; above, the tensor-core kernels
ONE_BITS = 0x3F800000  # the fp32 1.0, passed to the kernels as their run-time ``one_bits`` (see above)
W8_FLIP_BITS = ONE_BITS | 0x400000  # and the top bit of a byte placed at bits 15-22: the W8 kernel's ``flip_bits``

# Rows 1 to 4 share one compiled ROWS (1, 2 or 4) per M and one tuned config per shape (the autotuning key
# leaves ROWS out), and each row runs the same code in all three: a row's output does not depend on the
# batch of the 1-4 bucket it was decoded in, as ``kernels._split_k`` promises for the split.


@triton.jit
def _shifted(w, SHIFT: tl.constexpr):
    """``w`` moved by SHIFT bits (left if positive); the masks of ``_bits`` keep only bits that came from w
    (a right shift is arithmetic)."""
    if SHIFT >= 0:  # noqa: SIM108  (a compile-time branch on a constexpr, kept as a statement)
        t = w << SHIFT
    else:
        t = w >> (-SHIFT)
    return t


@triton.jit
def _bits(t, MASK: tl.constexpr, one):
    """The field of ``t`` under MASK with the exponent of 1.0 (``one``) OR-ed in, as fp32 (one LOP3)."""
    return ((t & MASK) | one).to(tl.float32, bitcast=True)


@triton.jit
def _field(w, SHIFT: tl.constexpr, MASK: tl.constexpr, one):
    """The bit field of ``w`` moved by SHIFT (left if positive) into MASK, as the fp32 1 + u / 2^bits
    (``one``: ONE_BITS, the exponent of 1.0)."""
    return _bits(_shifted(w, SHIFT), MASK, one)


@triton.jit
def put_row(y, offs_m, r: tl.constexpr, row):
    """y [ROWS, BN] with row r replaced by ``row`` [BN]."""
    return tl.where((offs_m == r)[:, None], row[None, :], y)


@triton.jit
def _load(ptr, ok, EVEN: tl.constexpr):
    """The values at ``ptr``: all of them if EVEN, else where ``ok`` (0 elsewhere)."""
    if EVEN:  # noqa: SIM108  (a compile-time branch: no mask at all)
        v = tl.load(ptr)
    else:
        v = tl.load(ptr, mask=ok, other=0)
    return v


@triton.jit
def _x(ptr, ok, EVEN: tl.constexpr):
    return _load(ptr, ok, EVEN).to(tl.float32)


@triton.jit
def _f16_bits(h):
    """int32 holding an IEEE half in its low 16 bits -> fp32."""
    return h.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _halves(xw, X_BF16: tl.constexpr):
    """An int32 word of two 16-bit x values -> (the first, the second) as fp32."""
    if X_BF16:
        first = (xw << 16).to(tl.float32, bitcast=True)
        second = (xw & -65536).to(tl.float32, bitcast=True)
    else:
        first = _f16_bits(xw)
        second = _f16_bits(xw >> 16)
    return first, second


@triton.jit
def _x16_pair(xw):
    """An int32 word of two bf16 -> (16 x the first, the second) as fp32. The 16 rides in the shift-and-add
    (one LEA on sm_90) that moves the first value up: 4 added to its exponent, so a zero becomes 2^-123 (and
    a bf16 subnormal, below 1.2e-38, is misread as another number of that size): see the module docstring."""
    first = (xw * 65536 + (4 << 23)).to(tl.float32, bitcast=True)
    second = (xw & -65536).to(tl.float32, bitcast=True)
    return first, second


@triton.jit
def _w8_words(acc, xs, w, x_row, x_offs, xw_t, x_ok, flip, EVEN: tl.constexpr, X_QUADS: tl.constexpr):
    """One row's products with a [BN, BW] tile of words of signed bytes; ``flip``: W8_FLIP_BITS; xw_t [BW]: the
    words' indices in the row. X_QUADS: word t's four bf16 x (k = 4t .. 4t + 3) in one 8-byte load, split
    in registers."""
    if X_QUADS:
        xq = _load(x_row.to(tl.pointer_type(tl.int64)) + xw_t, x_ok, EVEN)
        lo, hi = xq.to(tl.int32), (xq >> 32).to(tl.int32)
    for i in tl.static_range(4):  # byte i of word t: k = 4 t + i
        if X_QUADS:
            first, second = _halves(lo if i < 2 else hi, True)
            xv = first if i % 2 == 0 else second
        else:
            xv = _x(x_row + x_offs + i, x_ok, EVEN)
        # One LOP3, (t & mask) ^ flip: the byte's top bit flipped (q -> u = q + 128) and 1.0's exponent set.
        u = ((_shifted(w, 15 - 8 * i) & 0x7F8000) ^ flip).to(tl.float32, bitcast=True)
        acc += xv[None, :] * u
        xs += xv
    return acc, xs


@triton.jit(do_not_specialize=["M"])  # per-step value: compiled once per ROWS
def w8a16_gemv_kernel(
    x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, stride_xm, stride_ym, stride_wn, W_TOTAL, W_CHUNK, SPLITS, flip_bits,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, EVEN: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_W: tl.constexpr, X_QUADS: tl.constexpr, PDL: tl.constexpr = 0,
):
    """w_ptr: int32 words [N, K / 4]; a program: BLOCK_N rows, words [split * W_CHUNK, +W_CHUNK).

    Rows past N and M are clamped to the last one (loaded, computed, never stored): no load masks. EVEN:
    every chunk is whole BLOCK_W tiles, so neither are there masks along K.
    """
    pdl.wait(PDL)  # x comes from an earlier kernel (kernels/pdl.py)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_m = tl.arange(0, ROWS)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = tl.arange(0, BLOCK_W)
    rows = tl.minimum(offs_n, N - 1).to(tl.int64)
    w_start = split * W_CHUNK
    w_end = tl.minimum(w_start + W_CHUNK, W_TOTAL)
    w_rows = w_ptr + rows[:, None] * stride_wn + offs_w[None, :]  # [BN, BW]
    x0 = x_ptr
    x1 = x_ptr + tl.minimum(1, M - 1) * stride_xm
    x2 = x_ptr + tl.minimum(2, M - 1) * stride_xm
    x3 = x_ptr + tl.minimum(3, M - 1) * stride_xm
    acc0 = tl.zeros((BLOCK_N, BLOCK_W), dtype=tl.float32)
    xs0 = tl.zeros((BLOCK_W,), dtype=tl.float32)
    acc1, acc2, acc3, xs1, xs2, xs3 = acc0, acc0, acc0, xs0, xs0, xs0
    for w0 in range(w_start, w_end, BLOCK_W):
        if EVEN:
            w = tl.load(w_rows + w0)
            x_ok = offs_w < 0  # unused
        else:
            x_ok = (w0 + offs_w) < w_end
            w = tl.load(w_rows + w0, mask=x_ok[None, :], other=0)
        x_offs = 4 * (w0 + offs_w)
        acc0, xs0 = _w8_words(acc0, xs0, w, x0, x_offs, w0 + offs_w, x_ok, flip_bits, EVEN, X_QUADS)
        if ROWS > 1:
            acc1, xs1 = _w8_words(acc1, xs1, w, x1, x_offs, w0 + offs_w, x_ok, flip_bits, EVEN, X_QUADS)
        if ROWS > 2:
            acc2, xs2 = _w8_words(acc2, xs2, w, x2, x_offs, w0 + offs_w, x_ok, flip_bits, EVEN, X_QUADS)
            acc3, xs3 = _w8_words(acc3, xs3, w, x3, x_offs, w0 + offs_w, x_ok, flip_bits, EVEN, X_QUADS)
    scale = tl.load(s_ptr + rows).to(tl.float32)
    y = tl.zeros((ROWS, BLOCK_N), dtype=tl.float32)
    y = put_row(y, offs_m, 0, scale * (256.0 * tl.sum(acc0, axis=1) - 384.0 * tl.sum(xs0, axis=0)))
    if ROWS > 1:
        y = put_row(y, offs_m, 1, scale * (256.0 * tl.sum(acc1, axis=1) - 384.0 * tl.sum(xs1, axis=0)))
    if ROWS > 2:
        y = put_row(y, offs_m, 2, scale * (256.0 * tl.sum(acc2, axis=1) - 384.0 * tl.sum(xs2, axis=0)))
        y = put_row(y, offs_m, 3, scale * (256.0 * tl.sum(acc3, axis=1) - 384.0 * tl.sum(xs3, axis=0)))
    # Late, not at the start: the next kernel's programs, resident early, would crowd this one's waves
    # (H200, run 9: triggered at the start, Q4_K at 4096 x 14336 took 49.6 us against 37.8 without PDL).
    pdl.launch_dependents(PDL)
    finish_tile(y, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS)


@triton.jit
def _w4_words(acc, w, x_row, x_offs, xw_t, x_ok, a, c_hi, c_lo, one, L: tl.constexpr, V: tl.constexpr,
              EVEN: tl.constexpr, X_QUADS: tl.constexpr):
    """One row's products with a [BN, GPI, WPG] tile of words; acc [BN, GPI, L] (a group's WPG words as L
    runs of V, V words being one thread's 16-byte vector); a = 16 scale, c_hi = 16 scale + scale zero,
    c_lo = 16 scale + scale zero / 16, all [BN, GPI]; xw_t [GPI, WPG]: each word's index in the row.

    One shift serves two nibbles: after ``w << (15 - 8 j)`` nibble 2j+1 sits at bit 19 (the float
    1 + u / 16) and nibble 2j at bit 15 (1 + u / 256, weighted by 16 x so that both carry x u / 16).
    With S the sum of those products, X_hi the sum of x at odd k and X_lo16 that of 16 x at even k, the
    group adds scale (sum x u - zero sum x) = a S - c_hi X_hi - c_lo X_lo16. The sums over a thread's V
    words are taken in its registers before the group's scale touches them: per row, three instructions
    per V words instead of three per word.

    X_QUADS (bf16 x, 8-byte aligned rows): the eight x values of word t are two 8-byte loads, x words
    4t + j (two bf16 each, x[8t + 2j] low) split in registers, instead of eight 2-byte loads; the word's
    low half becomes 16 x in the shift that unpacks it (``_x16_pair``). The loads keep the weight tile's
    layout: a 16-byte load of all four x words, split after, took a shared-memory layout conversion every
    trip and spilled at four rows (``bench/results/NVIDIA_H200/run20_notes.md``).
    """
    BN: tl.constexpr = w.shape[0]
    GPI: tl.constexpr = w.shape[1]
    part = tl.zeros(w.shape, dtype=tl.float32)
    x_hi_sum = tl.zeros(x_offs.shape, dtype=tl.float32)  # [GPI, WPG]
    x_lo_sum = tl.zeros(x_offs.shape, dtype=tl.float32)  # of 16 x_lo
    for j in tl.static_range(4):  # nibbles 2j and 2j+1 of word t: k = 8 t + 2 j (+ 1)
        t = _shifted(w, 15 - 8 * j)
        if X_QUADS:
            if j % 2 == 0:  # x[8t + 2j .. 8t + 2j + 3], two words of two bf16, in one 8-byte load
                xq = _load(x_row.to(tl.pointer_type(tl.int64)) + 2 * xw_t + j // 2, x_ok, EVEN)
                xw = xq.to(tl.int32)
            else:
                xw = (xq >> 32).to(tl.int32)
            x_lo16, x_hi = _x16_pair(xw)
        else:
            x_hi = _x(x_row + x_offs + (2 * j + 1), x_ok, EVEN)
            x_lo16 = 16.0 * _x(x_row + x_offs + 2 * j, x_ok, EVEN)
        part += x_hi[None, :, :] * _bits(t, 0x780000, one)
        part += x_lo16[None, :, :] * _bits(t, 0x78000, one)
        x_hi_sum += x_hi
        x_lo_sum += x_lo16
    s = tl.sum(tl.reshape(part, (BN, GPI, L, V)), axis=3)  # [BN, GPI, L]: each thread's own vector
    x_hi_v = tl.sum(tl.reshape(x_hi_sum, (GPI, L, V)), axis=2)[None, :, :]  # [1, GPI, L]
    x_lo_v = tl.sum(tl.reshape(x_lo_sum, (GPI, L, V)), axis=2)[None, :, :]
    return acc + a[:, :, None] * s - c_hi[:, :, None] * x_hi_v - c_lo[:, :, None] * x_lo_v


@triton.jit
def _w4_trip(w_rows, s_ptr, z_ptr, sz_offs, g0, g_end, gi, N, WPG: tl.constexpr, EVEN: tl.constexpr):
    """A trip's [BN, GPI, WPG] words and [BN, GPI] fp32 scales and zeros from group g0. EVEN: a trip past the
    chunk's end (the last prefetch) re-reads the chunk's last trip instead; else its groups read as zero."""
    if EVEN:
        g0 = tl.minimum(g0, g_end - gi.shape[0])
        w = tl.load(w_rows + g0 * WPG)
        s = tl.load(s_ptr + g0 * N + sz_offs).to(tl.float32)
        z = tl.load(z_ptr + g0 * N + sz_offs).to(tl.float32)
    else:
        g_ok = (g0 + gi) < g_end  # [GPI]: false past this split's groups
        w = tl.load(w_rows + g0 * WPG, mask=g_ok[None, :, None], other=0)
        s = tl.load(s_ptr + g0 * N + sz_offs, mask=g_ok[None, :], other=0.0).to(tl.float32)
        z = tl.load(z_ptr + g0 * N + sz_offs, mask=g_ok[None, :], other=0.0).to(tl.float32)
    return w, s, z


@triton.jit(do_not_specialize=["M"])  # per-step value: compiled once per ROWS
def w4a16_gemv_kernel(
    x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, stride_xm, stride_ym, stride_wn, G_TOTAL, G_CHUNK, SPLITS, one_bits,
    GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, EVEN: tl.constexpr,
    BLOCK_N: tl.constexpr, GROUPS_PER_ITER: tl.constexpr, X_QUADS: tl.constexpr, PDL: tl.constexpr = 0,
):
    """w_ptr: int32 words [N, K / 8]; a program: BLOCK_N rows, groups [split * G_CHUNK, +G_CHUNK).

    A trip loads GROUPS_PER_ITER adjacent groups of every row as one [BN, GPI, WPG] tile (contiguous
    along a row), so all its bytes are in flight before the first use. Rows clamped as in the W8 kernel;
    EVEN: every chunk is whole GROUPS_PER_ITER steps.
    """
    WPG: tl.constexpr = GROUP // 8  # words per group
    V: tl.constexpr = 4 if WPG >= 4 else WPG  # words per 16-byte vector
    L: tl.constexpr = WPG // V
    GPI: tl.constexpr = GROUPS_PER_ITER
    pdl.wait(PDL)  # x comes from an earlier kernel (kernels/pdl.py)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_m = tl.arange(0, ROWS)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    gi = tl.arange(0, GPI)
    wi = tl.arange(0, WPG)
    rows = tl.minimum(offs_n, N - 1)
    g_start = split * G_CHUNK
    g_end = tl.minimum(g_start + G_CHUNK, G_TOTAL)
    cols = gi[:, None] * WPG + wi[None, :]  # [GPI, WPG]: word offsets within a trip
    w_rows = w_ptr + rows.to(tl.int64)[:, None, None] * stride_wn + cols[None, :, :]  # [BN, GPI, WPG]
    sz_offs = gi[None, :] * N + rows[:, None]  # [BN, GPI]
    x0 = x_ptr
    x1 = x_ptr + tl.minimum(1, M - 1) * stride_xm
    x2 = x_ptr + tl.minimum(2, M - 1) * stride_xm
    x3 = x_ptr + tl.minimum(3, M - 1) * stride_xm
    acc0 = tl.zeros((BLOCK_N, GPI, L), dtype=tl.float32)
    acc1, acc2, acc3 = acc0, acc0, acc0
    # A register double buffer: the next trip's weights, scales and zeros are requested before this trip's
    # arithmetic, which would otherwise wait on its own loads every trip. Triton pipelines the loads of a
    # loop without tl.dot only when asked (tl.range(..., num_stages=...)): through shared memory, that
    # ran 6-33% slower here than this prefetch (H200, run 20); the weight by TMA descriptor 3-6 stages deep,
    # 13-34% slower (run 23). More bytes in flight is not what this loop lacks: profiled at 14336 x 4096
    # (run 23) it is bound by instruction issue with about three warps a scheduler (58% of issue slots
    # used, DRAM at 30% of peak), and its time follows the SM clock. Fewer instructions per weight byte is.
    w, s, z = _w4_trip(w_rows, s_ptr, z_ptr, sz_offs, g_start, g_end, gi, N, WPG, EVEN)
    for g0 in range(g_start, g_end, GPI):
        w_next, s_next, z_next = _w4_trip(w_rows, s_ptr, z_ptr, sz_offs, g0 + GPI, g_end, gi, N, WPG, EVEN)
        if EVEN:  # noqa: SIM108  (a compile-time branch on a constexpr, kept as a statement)
            x_ok = cols < 0  # unused
        else:
            x_ok = ((g0 + gi) < g_end)[:, None] & (cols >= 0)
        sz = s * z
        a, c_hi, c_lo = 16.0 * s, 16.0 * s + sz, 16.0 * s + 0.0625 * sz
        x_offs = g0 * GROUP + 8 * cols
        xw_t = g0 * WPG + cols  # [GPI, WPG]: each word's index in the row (its x words are 4 xw_t + j)
        acc0 = _w4_words(acc0, w, x0, x_offs, xw_t, x_ok, a, c_hi, c_lo, one_bits, L, V, EVEN, X_QUADS)
        if ROWS > 1:
            acc1 = _w4_words(acc1, w, x1, x_offs, xw_t, x_ok, a, c_hi, c_lo, one_bits, L, V, EVEN, X_QUADS)
        if ROWS > 2:
            acc2 = _w4_words(acc2, w, x2, x_offs, xw_t, x_ok, a, c_hi, c_lo, one_bits, L, V, EVEN, X_QUADS)
            acc3 = _w4_words(acc3, w, x3, x_offs, xw_t, x_ok, a, c_hi, c_lo, one_bits, L, V, EVEN, X_QUADS)
        w, s, z = w_next, s_next, z_next
    y = put_row(tl.zeros((ROWS, BLOCK_N), dtype=tl.float32), offs_m, 0, _row_sum(acc0))
    if ROWS > 1:
        y = put_row(y, offs_m, 1, _row_sum(acc1))
    if ROWS > 2:
        y = put_row(y, offs_m, 2, _row_sum(acc2))
        y = put_row(y, offs_m, 3, _row_sum(acc3))
    # Late, not at the start: the next kernel's programs, resident early, would crowd this one's waves
    # (H200, run 9: triggered at the start, Q4_K at 4096 x 14336 took 49.6 us against 37.8 without PDL).
    pdl.launch_dependents(PDL)
    finish_tile(y, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS)


@triton.jit
def _row_sum(acc):
    return tl.sum(tl.sum(acc, axis=2), axis=1)


def _w8(bn, bw, warps, stages):
    return dict(BLOCK_N=bn, BLOCK_W=bw, num_warps=warps, num_stages=stages)


def _w4(bn, gpi, warps, stages):
    return dict(BLOCK_N=bn, GROUPS_PER_ITER=gpi, num_warps=warps, num_stages=stages)


# BLOCK_W divides 128 words (the 512-k split unit); GROUPS_PER_ITER divides 4 (the W4 split unit).
W8_GEMV_CONFIGS = {
    "cuda": [_w8(32, 64, 4, 3), _w8(64, 64, 8, 3), _w8(64, 32, 4, 3), _w8(64, 32, 4, 4), _w8(32, 128, 8, 3),
             _w8(128, 32, 8, 3), _w8(16, 64, 2, 3)],
    "hip": [_w8(16, 64, 4, 2), _w8(32, 64, 4, 2), _w8(32, 32, 4, 2)],
}
# None spills at ROWS = 4 when compiled for sm_90 by Triton 3.9 (``python -m bench.aot_quant --check``; with the
# 8-byte x loads, run 20), nor did before them by Triton 3.6.
# Under 3.6 the run-10 kernels spilled with W4 tiles 64 / 2 groups and 256 / 1 group on 4 warps and W8 64 x 64
# and 128 x 64 words on 4 warps, which moved to 8 warps or left the lists. W4 (this kernel): a thread holds
# BLOCK_N / (8 x warps / GROUPS_PER_ITER) rows of its words, and the x side of the loop (loads, conversions,
# sums) is paid once for them all, so the tiles with 4 rows per thread (64 / 1 / 2 warps, 128 / 1 / 4,
# 32 / 1 / 1, 32 / 2 / 2) issue about 0.25 SASS instructions per weight byte where 2 rows take 0.32 (sm_90,
# both Triton versions; 0.23-0.24 and 0.29-0.30 with the 8-byte x loads under 3.9); 8 rows spill at ROWS = 4.
W4_GEMV_CONFIGS = {
    "cuda": [_w4(16, 2, 2, 3), _w4(16, 1, 1, 3), _w4(64, 1, 4, 3), _w4(64, 1, 2, 3), _w4(128, 1, 4, 3),
             _w4(32, 1, 1, 3), _w4(32, 2, 2, 3), _w4(128, 1, 8, 3)],
    "hip": [_w4(16, 1, 4, 2), _w4(32, 1, 4, 2), _w4(16, 2, 4, 2)],
}
