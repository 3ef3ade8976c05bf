"""Per-format block decoders for the fused GGUF dequantize-matmul (``kernels.gguf_linear``).

Each ``*_block`` function adds one block's contribution to the [BLOCK_M, BLOCK_N] fp32 accumulator:
for every block of BLOCK_N weight rows (byte pointers ``blk``), it splits the block into groups that
share one scale (the whole block for Q4/Q5/Q8_0, 32-element sub-blocks for Q4_K/Q5_K, 16-element ones
for Q6_K), dots the *integer* quants of a group with the matching columns of x on the tensor cores, and
applies the group's scale and offset to the [M, N] partial sum afterwards:

    sum_k x_k * (d * (q_k - z) + m)  =  d * (sum_k x_k q_k  -  z * sum_k x_k)  +  m * sum_k x_k

so each weight element costs only its unpacking. The dot is a sum, so the order of k within a group is
free: a group's low nibbles and high nibbles are separate dots against the matching columns of x, and no
nibble is ever moved. Small non-negative quants become floats by the exponent trick (OR-ed into the
mantissa of MAGIC_VALUE, see ``kernels.quant_linear``); MAGIC_VALUE is then folded into the offset.
Layouts: see ``kernels.gguf_formats``.
"""

from __future__ import annotations

from kernels._triton import tl, triton


@triton.jit
def _f16(ptr, mask):
    return tl.load(ptr.to(tl.pointer_type(tl.float16)), mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _bytes(blk, offsets, mask):
    """[len(offsets), BLOCK_N] bytes at ``blk + offsets`` as int16 (zero-extended)."""
    return tl.load(blk[None, :] + offsets[:, None], mask=mask[None, :], other=0).to(tl.int16)


@triton.jit
def _dot(x_rows, m_ok, k, K, q, UPCAST: tl.constexpr, MAGIC_BITS: tl.constexpr):
    """(x[:, k] @ (MAGIC_VALUE + q), x[:, k].sum(1)); with MAGIC_BITS == 0, (x[:, k] @ q, ...)."""
    x = tl.load(x_rows + k[None, :], mask=m_ok[:, None] & (k < K)[None, :], other=0.0)
    # Statements rather than ternaries: each branch is chosen at compile time on a constexpr.
    if MAGIC_BITS != 0:
        w = (q.to(tl.int16) | MAGIC_BITS).to(x.dtype, bitcast=True)
    elif UPCAST:  # the interpreter also converts integers to bf16 wrongly
        w = q.to(tl.float32)
    else:
        w = q.to(x.dtype)
    if UPCAST:  # noqa: SIM108  (the interpreter's bf16 dot is wrong; fp32 is exact there)
        part = tl.dot(x.to(tl.float32), w.to(tl.float32))
    else:
        part = tl.dot(x, w)
    return part, tl.sum(x.to(tl.float32), axis=1)


@triton.jit
def q8_0_block(acc, x_rows, m_ok, k0, K, blk, r_ok, UPCAST: tl.constexpr):
    j = tl.arange(0, 32)
    q = tl.load(blk[None, :] + 2 + j[:, None], mask=r_ok[None, :], other=0).to(tl.int8, bitcast=True)
    part, _ = _dot(x_rows, m_ok, k0 + j, K, q, UPCAST, 0)  # signed quants: plain conversion
    return acc + part * _f16(blk, r_ok)[None, :]


@triton.jit
def q4_q5_block(acc, x_rows, m_ok, k0, K, blk, r_ok,
                QS: tl.constexpr, QH: tl.constexpr, ZERO: tl.constexpr, HAS_MIN: tl.constexpr,
                UPCAST: tl.constexpr, MAGIC_BITS: tl.constexpr, MAGIC_VALUE: tl.constexpr):
    """Q4_0 (QS=2, ZERO=8), Q4_1 (QS=4, min), Q5_0 (QS=6, QH=2, ZERO=16), Q5_1 (QS=8, QH=4, min)."""
    j = tl.arange(0, 16)
    qs = _bytes(blk, QS + j, r_ok)
    lo, hi = qs & 0xF, qs >> 4
    if QH > 0:  # bit i of the little-endian u32 at QH is bit 4 of element i
        qh = (_bytes(blk, QH + tl.arange(0, 4), r_ok).to(tl.int32)
              << (8 * tl.arange(0, 4))[:, None])
        qh = tl.sum(qh, axis=0)  # disjoint bits: the sum is the OR
        lo = lo | (((qh[None, :] >> j[:, None]) & 1) << 4).to(tl.int16)
        hi = hi | (((qh[None, :] >> (j + 16)[:, None]) & 1) << 4).to(tl.int16)
    p_lo, s_lo = _dot(x_rows, m_ok, k0 + j, K, lo, UPCAST, MAGIC_BITS)
    p_hi, s_hi = _dot(x_rows, m_ok, k0 + 16 + j, K, hi, UPCAST, MAGIC_BITS)
    x_sum = (s_lo + s_hi)[:, None]
    acc += (p_lo + p_hi - x_sum * (ZERO + MAGIC_VALUE)) * _f16(blk, r_ok)[None, :]
    if HAS_MIN:
        acc += x_sum * _f16(blk + 2, r_ok)[None, :]
    return acc


@triton.jit
def _k4_scale_min(blk, s: tl.constexpr, r_ok):
    """The 6-bit scale and min of sub-block s of a Q4_K / Q5_K block (scales at byte 4), as fp32 [BN]."""
    a = tl.load(blk + 4 + s, mask=r_ok, other=0).to(tl.int32)
    b = tl.load(blk + 8 + s, mask=r_ok, other=0).to(tl.int32)
    if s < 4:
        sc, mn = a & 63, b & 63
    else:
        c = tl.load(blk + s, mask=r_ok, other=0).to(tl.int32)  # scales[s - 4]
        sc, mn = (b & 0xF) | ((c >> 6) << 4), (b >> 4) | ((a >> 6) << 4)
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def q45_k_block(acc, x_rows, m_ok, k0, K, blk, r_ok, HAS_QH: tl.constexpr,
                UPCAST: tl.constexpr, MAGIC_BITS: tl.constexpr, MAGIC_VALUE: tl.constexpr):
    """Q4_K (qs at 16) and Q5_K (qh at 16, qs at 48): 8 sub-blocks of 32, w = d*sc*q - dmin*m."""
    l = tl.arange(0, 32)
    d, dmin = _f16(blk, r_ok), _f16(blk + 2, r_ok)
    if HAS_QH:
        qh = _bytes(blk, 16 + l, r_ok)
    for c in tl.static_range(4):
        qs = _bytes(blk, (48 if HAS_QH else 16) + 32 * c + l, r_ok)
        for par in tl.static_range(2):
            s = 2 * c + par  # a constexpr: the sub-block index
            if par == 0:  # noqa: SIM108  (a compile-time branch, kept as a statement)
                q = qs & 0xF
            else:
                q = qs >> 4
            if HAS_QH:
                q = q | (((qh >> s) & 1) << 4)
            sc, mn = _k4_scale_min(blk, s, r_ok)
            part, x_sum = _dot(x_rows, m_ok, k0 + 32 * s + l, K, q, UPCAST, MAGIC_BITS)
            x_sum = x_sum[:, None]
            acc += (part - x_sum * MAGIC_VALUE) * (d * sc)[None, :] - x_sum * (dmin * mn)[None, :]
    return acc


@triton.jit
def q6_k_block(acc, x_rows, m_ok, k0, K, blk, r_ok,
               UPCAST: tl.constexpr, MAGIC_BITS: tl.constexpr, MAGIC_VALUE: tl.constexpr):
    """Q6_K: 16 sub-blocks of 16 with int8 scales; w = d * sc * (q - 32), q 6-bit from ql and qh."""
    i = tl.arange(0, 16)
    d = _f16(blk + 208, r_ok)
    for h in tl.static_range(2):
        for u in tl.static_range(2):
            ql_even = _bytes(blk, 64 * h + 16 * u + i, r_ok)  # quarters t = 0 (low), 2 (high)
            ql_odd = _bytes(blk, 64 * h + 32 + 16 * u + i, r_ok)  # quarters t = 1 (low), 3 (high)
            qh = _bytes(blk, 128 + 32 * h + 16 * u + i, r_ok)
            for t in tl.static_range(4):
                if t == 0:
                    low = ql_even & 0xF
                elif t == 1:
                    low = ql_odd & 0xF
                elif t == 2:
                    low = ql_even >> 4
                else:
                    low = ql_odd >> 4
                q = low | (((qh >> (2 * t)) & 3) << 4)
                sc = tl.load(blk + 192 + 8 * h + u + 2 * t, mask=r_ok, other=0).to(tl.int8, bitcast=True)
                part, x_sum = _dot(x_rows, m_ok, k0 + 128 * h + 32 * t + 16 * u + i, K, q, UPCAST, MAGIC_BITS)
                acc += (part - x_sum[:, None] * (32 + MAGIC_VALUE)) * (d * sc.to(tl.float32))[None, :]
    return acc

