"""The normalised one-token GEMV over *pairs* of weight rows, for fused epilogues that combine two outputs.

Some outputs of a projection are only useful in pairs: SwiGLU multiplies gate j by up j (rows j and I + j
of the fused gate/up weight); RoPE rotates element j of a head with element j + D/2. If one program owns
both rows of every pair it computes, the program that finishes the pair can apply that combination
straight from registers, and the intermediate never goes to memory. The caller maps its pair indices to
the two weight rows; this module streams them (as ``kernels.rmsnorm_linear`` streams one set: x normalised
as each K slice is loaded, the tiles and split rule of ``kernels.linear_gemv``) and reduces split-K partials
with the pair as the two rows of one tile (``kernels._split_k.reduce_tile``).

Users: ``kernels.rmsnorm_swiglu`` (gate, up) and ``kernels.rmsnorm_qkv_rope`` (first half, second half).
"""

from __future__ import annotations

from kernels import pdl
from kernels._quant_gemv import put_row
from kernels._split_k import reduce_tile
from kernels._triton import tl, triton
from kernels.linear_gemv import GEMV_CONFIGS, weight_slice
from kernels.rmsnorm_linear import _normed, row_inv_rms

# The GEMV's tiles (kernels/linear_gemv.py) at half the rows: a program streams BLOCK_N first rows and as many
# second rows, so it holds two weight tiles and two accumulators where the GEMV holds one of each.
PAIR_CONFIGS = {vendor: [dict(c, BLOCK_N=max(4, c["BLOCK_N"] // 2)) for c in configs]
                for vendor, configs in GEMV_CONFIGS.items()}


@triton.jit
def normed_pair_dots(x_ptr, r_ptr, g_ptr, w_ptr, h_ptr, rows1, rows2, K, stride_wn, eps, K_CHUNK,
                     HAS_RESIDUAL: tl.constexpr, EVEN: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                     PDL: tl.constexpr, PREFETCH: tl.constexpr):
    """This program's chunk of ``a . W[rows1]`` and ``a . W[rows2]`` ([BLOCK_N] fp32 each), a = norm(x + r).

    The chunk is ``program_id(1)``; rows are int64 [BLOCK_N], already clamped to valid rows. The first tiles of
    a static weight are read before waiting for the kernel that wrote x (PREFETCH, kernels/pdl.py). The
    launch's first program stores h = x + r."""
    split = tl.program_id(1)
    offs_k = tl.arange(0, BLOCK_K)
    k_start = split * K_CHUNK
    k_end = tl.minimum(k_start + K_CHUNK, K)
    first = w_ptr + rows1[:, None] * stride_wn + offs_k[None, :]
    second = w_ptr + rows2[:, None] * stride_wn + offs_k[None, :]
    if PREFETCH:
        w1, k_ok = weight_slice(first, k_start, offs_k, k_end, EVEN)
        w2, k_ok = weight_slice(second, k_start, offs_k, k_end, EVEN)
        pdl.enter(PDL)
    else:
        pdl.enter(PDL)
        w1, k_ok = weight_slice(first, k_start, offs_k, k_end, EVEN)
        w2, k_ok = weight_slice(second, k_start, offs_k, k_end, EVEN)
    inv_rms = row_inv_rms(x_ptr, r_ptr, h_ptr, K, eps, (tl.program_id(0) == 0) & (split == 0), HAS_RESIDUAL,
                          BLOCK_H)
    a = _normed(x_ptr, r_ptr, g_ptr, k_start + offs_k, k_ok, inv_rms, HAS_RESIDUAL, EVEN)[None, :]
    acc1 = w1 * a
    acc2 = w2 * a
    for k in range(k_start + BLOCK_K, k_end, BLOCK_K):
        w1, k_ok = weight_slice(first, k, offs_k, k_end, EVEN)
        w2, k_ok = weight_slice(second, k, offs_k, k_end, EVEN)
        a = _normed(x_ptr, r_ptr, g_ptr, k + offs_k, k_ok, inv_rms, HAS_RESIDUAL, EVEN)[None, :]
        acc1 += w1 * a
        acc2 += w2 * a
    return tl.sum(acc1, axis=1), tl.sum(acc2, axis=1)


@triton.jit
def finish_pairs(s1, s2, part_ptr, count_ptr, offs_p, P, SPLITS, b_ptr, rows1, rows2, HAS_BIAS: tl.constexpr,
                 OUT: tl.constexpr):
    """(whether this program finishes the pairs ``offs_p``, their first outputs, their second outputs): the sums
    over the split-K partials [SPLITS, 2, P] when there are several splits, plus the bias of their weight rows,
    rounded to ``OUT`` as the unfused projection stores them, in fp32 for the epilogue."""
    pair = tl.arange(0, 2)
    both = put_row(tl.zeros((2, s1.shape[0]), dtype=tl.float32), pair, 0, s1)
    both = put_row(both, pair, 1, s2)
    last, both = reduce_tile(both, part_ptr, count_ptr, pair, offs_p, 2, P, tl.program_id(1), SPLITS)
    s1 = tl.sum(tl.where((pair == 0)[:, None], both, 0.0), axis=0)
    s2 = tl.sum(tl.where((pair == 1)[:, None], both, 0.0), axis=0)
    if last:  # only the finishing program reads the bias
        if HAS_BIAS:
            ok = offs_p < P
            s1 += tl.load(b_ptr + rows1, mask=ok, other=0.0).to(tl.float32)
            s2 += tl.load(b_ptr + rows2, mask=ok, other=0.0).to(tl.float32)
        s1 = s1.to(OUT).to(tl.float32)
        s2 = s2.to(OUT).to(tl.float32)
    return last, s1, s2
