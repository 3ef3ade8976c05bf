"""Triton building blocks shared by the prefill and decode attention kernels.

``softmax_step`` folds one tile of keys into an online softmax (flash attention): with a running row max
m, row sum l and an fp32 accumulator, a tile of raw scores r = q k^T and c = scale * log2(e) > 0 update

    m' = max(m, c max_j r_j),   l' = l * 2^(m - m') + sum_j 2^(c r_j - m'),   acc' = acc * 2^(m - m') + P v

``softmax_step`` is ``scores`` (q k^T) then ``online_softmax`` (the update above); a kernel that decides
at run time whether a tile needs its mask calls the two itself. ``load_tile`` loads a [rows, D_PAD] tile,
masking only what can be out of range; ``load_rows`` loads rows of one head of a packed [T, H, D] tensor,
through pointers or, on the TMA path, a tensor descriptor over its [T, H * D] view (``row_descriptor``,
where ``kernels.tma.tma_loads`` says the device can take one).
"""

from __future__ import annotations

import torch

from kernels._triton import tl, triton


@triton.jit
def load_tile(ptrs, row_ok, d_ok, ROW_MASK: tl.constexpr, EVEN_D: tl.constexpr):
    """Rows past ``row_ok`` (if ROW_MASK) and padded dims (unless EVEN_D) read as zero."""
    if ROW_MASK:
        x = tl.load(ptrs, mask=row_ok[:, None] & d_ok, other=0.0)
    elif EVEN_D:
        x = tl.load(ptrs)
    else:
        x = tl.load(ptrs, mask=d_ok, other=0.0)
    return x


@triton.jit
def load_rows(desc, base, stride, row0, start, col, seqlen, offs, d_ok, MASKED: tl.constexpr,
              EVEN_D: tl.constexpr, TMA: tl.constexpr):
    """Rows ``start + offs`` of a sequence starting at packed row ``row0``: by descriptor at [row0 + start,
    col] (TMA; rows past the sequence read its neighbour's, or zeros past the tensor), else from pointers
    ``base`` + row * ``stride``, rows past ``seqlen`` zero if MASKED."""
    if TMA:
        x = desc.load([row0 + start, col])
    else:
        pos = start + offs
        x = load_tile(base + (row0 + pos).to(tl.int64)[:, None] * stride, pos < seqlen, d_ok, MASKED, EVEN_D)
    return x


@triton.jit
def scores(q, k, UPCAST: tl.constexpr):
    """Raw scores q k^T of a query tile [M, D] and a key tile [N, D], in fp32."""
    # UPCAST: the interpreter's bf16 tl.dot is wrong; fp32 operands give the same math there.
    return tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32))) if UPCAST else tl.dot(q, tl.trans(k))


@triton.jit
def online_softmax(acc, m_i, l_i, s, v, qk_scale, UPCAST: tl.constexpr):
    """Fold raw scores ``s`` [M, N] (masked entries -inf) and their values ``v`` [N, D] into (acc, m, l)."""
    # qk_scale > 0 (the launchers check it), so the max of the scaled row is the scaled max: each score
    # then costs one multiply-add before exp2 instead of a multiply and a subtract.
    m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
    p = tl.math.exp2(s * qk_scale - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    p = p.to(v.dtype)
    if UPCAST:
        acc += tl.dot(p.to(tl.float32), v.to(tl.float32))
    else:
        acc = tl.dot(p, v, acc)
    return acc, m_new, l_i


@triton.jit
def softmax_step(acc, m_i, l_i, q, k, v, qk_scale, valid, MASKED: tl.constexpr, UPCAST: tl.constexpr):
    """One key tile: q [M, D], k/v [N, D]; ``valid`` ([M, N] or [1, N]) is applied only if MASKED."""
    s = scores(q, k, UPCAST)
    if MASKED:
        s = tl.where(valid, s, float("-inf"))
    return online_softmax(acc, m_i, l_i, s, v, qk_scale, UPCAST)


# --- host side: the TMA path's descriptors ---------------------------------------------------------

def row_descriptor(t: torch.Tensor, block_rows: int):
    """A descriptor over ``t`` [T, H, D] viewed as [T, H * D] with [block_rows, D] blocks, or None where TMA
    cannot read it: base 16-byte aligned, row stride a multiple of 16 bytes, heads packed, unit last stride."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    T, H, D = t.shape
    if t.stride(2) != 1 or (H > 1 and t.stride(1) != D) or (t.stride(0) * t.element_size()) % 16 \
            or t.data_ptr() % 16:
        return None
    return TensorDescriptor(t.view(T, H * D), shape=[T, H * D], strides=[t.stride(0), 1], block_shape=[block_rows, D])
