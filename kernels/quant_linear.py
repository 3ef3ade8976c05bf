"""Weight-only quantized linear layers: W8A16 (int8, per output channel) and W4A16 (int4, per group).

Both compute ``y = x @ dequant(W).T + bias`` for activations x [M, K] (fp16 or bf16) and a weight of N
output channels by K inputs, without ever writing the dense weight to memory: each program loads a
quantized tile, turns it into x's dtype in registers and feeds it to ``tl.dot``, accumulating in fp32.
At decode (M <= 16) the layer is bound by reading the weight, so fewer weight bytes is the whole point:
int8 halves and int4 quarters the bytes of a bf16 weight. There K is also split across programs so that
every SM streams weight bytes, and the partial sums are reduced inside the same launch
(``kernels._split_k``). Large M (prefill) runs the same fused kernel with larger M tiles and no split;
the weight tile is then reused across the rows of x. At small M the launchers take the weight-streaming
GEMV kernels of ``kernels._quant_gemv`` instead (CUDA-core fp32 FMAs on int32 words of the same layouts,
no M padding and no shared-memory round trip), when the weight's rows can be read as 4-byte words: W8A16
at M <= W8_GEMV_MAX_M (2); W4A16 at M <= 4 except the rows that ``use_mma_gemv`` gives to the tensor-core
GEMV of ``kernels.w4a16_mma_gemv`` (M = 3-16 with scales and zeros in x's dtype, so the FMA GEMV keeps M = 1-2).

W8A16, symmetric per output channel:
    qweight int8 [N, K], scales [N] (fp16, bf16 or fp32);   W[n, k] = qweight[n, k] * scales[n]
    The scale is constant along the reduction, so it is applied once to the fp32 accumulator.

W4A16, asymmetric per group of G = 32, 64 or 128 consecutive k (K must be a multiple of G):
    qweight uint8 [N, K // 2]: byte j of row n holds k = 2j in its low nibble and k = 2j + 1 in its
    high nibble (values 0..15);
    scales, zeros [K // G, N] (group-major, as GPTQ stores them, so a step along K reads them
    contiguously), in fp16, bf16 or fp32; zeros are the zero points in quantized units (integers from
    ``quantize_w4``, but any float is honoured):
        W[n, k] = (q[n, k] - zeros[k // G, n]) * scales[k // G, n]
    Per group g the kernel computes, with xs_g = sum of x over the group,
        y[m, n] += scales[g, n] * (sum_k x[m, k] q[n, k]  -  zeros[g, n] * xs_g[m])
    so the per-element work is only unpacking a nibble into a float. The even and odd k of a group are
    two separate dots (against the strided even and odd columns of x), so nibbles need no interleaving.
    Unpacking uses the exponent trick: a nibble OR-ed into the mantissa of 128.0 (bf16 bits 0x4300) or
    1024.0 (fp16 bits 0x6400) *is* that float plus the nibble, exactly, with no int-to-float conversion
    (a slow instruction on NVIDIA GPUs); the added constant is folded into the zero point.
"""

from __future__ import annotations

import torch

from kernels import alloc
from kernels._quant_cases import (
    DTYPES,
    act_bytes,
    bench_cases,
    shape_cases,
    w4_inputs,
    w4a16_cublas,
    w8_inputs,
    w8a16_cublas,
)
from kernels._quant_checks import check_w4_linear, check_w8_linear
from kernels._quant_gemv import (
    ONE_BITS,
    W4_GEMV_CONFIGS,
    W8_FLIP_BITS,
    W8_GEMV_CONFIGS,
    w4a16_gemv_kernel,
    w8a16_gemv_kernel,
)
from kernels._quant_launch import gemv_launch_options, gemv_rows, launcher, m_bucket, prune_by_m, use_gemv
from kernels._split_k import decode_split, finish_tile
from kernels._triton import tl, triton
from kernels.device import interpreting, is_hip
from kernels.quant_pack import dequantize_w4
from kernels.registry import Op, register
from kernels.tuning import Tuned


@triton.jit(do_not_specialize=["M", "M_BUCKET"])  # per-step values: compiled once
def _w8a16_kernel(
    x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, K, M_BUCKET, stride_xm, stride_ym, K_CHUNK, SPLITS,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_n, split, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok, n_ok = offs_m < M, offs_n < N
    k_start = split * K_CHUNK
    k_end = tl.minimum(k_start + K_CHUNK, K)
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    w_cols = w_ptr + offs_n.to(tl.int64)[None, :] * K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < k_end
        x = tl.load(x_rows + kk[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_cols + kk[:, None], mask=k_ok[:, None] & n_ok[None, :], other=0)  # [BK, BN] int8
        if UPCAST:  # the interpreter's bf16 dot is wrong; fp32 is exact there
            acc += tl.dot(x.to(tl.float32), w.to(tl.float32))
        else:
            acc += tl.dot(x, w.to(x.dtype))
    acc *= tl.load(s_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    finish_tile(acc, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS)


@triton.jit(do_not_specialize=["M", "M_BUCKET"])  # per-step values: compiled once
def _w4a16_kernel(
    x_ptr, q_ptr, s_ptr, z_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, K, M_BUCKET, stride_xm, stride_ym, stride_qn, G_CHUNK, SPLITS,
    GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
    MAGIC_BITS: tl.constexpr, MAGIC_VALUE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUPS_PER_ITER: tl.constexpr,
):
    HALF: tl.constexpr = GROUP // 2
    pid_n, split, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_j = tl.arange(0, HALF)
    m_ok, n_ok = offs_m < M, offs_n < N
    g_start = split * G_CHUNK
    g_end = tl.minimum(g_start + G_CHUNK, K // GROUP)
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    q_cols = q_ptr + offs_n.to(tl.int64)[None, :] * stride_qn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for g0 in range(g_start, g_end, GROUPS_PER_ITER):
        for gi in tl.static_range(GROUPS_PER_ITER):
            g = g0 + gi
            byte = g * HALF + offs_j  # byte column within the row
            j_ok = byte < g_end * HALF  # false past this split's last group
            qb = tl.load(q_cols + byte[:, None], mask=j_ok[:, None] & n_ok[None, :], other=0)  # [HALF, BN]
            x_mask = m_ok[:, None] & j_ok[None, :]
            x_even = tl.load(x_rows + 2 * byte[None, :], mask=x_mask, other=0.0)
            x_odd = tl.load(x_rows + 2 * byte[None, :] + 1, mask=x_mask, other=0.0)
            w_lo = ((qb & 0xF).to(tl.int16) | MAGIC_BITS).to(x_even.dtype, bitcast=True)  # MAGIC_VALUE + q
            w_hi = ((qb >> 4).to(tl.int16) | MAGIC_BITS).to(x_even.dtype, bitcast=True)
            if UPCAST:  # the interpreter's bf16 dot is wrong; fp32 is exact there
                part = tl.dot(x_even.to(tl.float32), w_lo.to(tl.float32))
                part += tl.dot(x_odd.to(tl.float32), w_hi.to(tl.float32))
            else:
                part = tl.dot(x_even, w_lo)
                part += tl.dot(x_odd, w_hi)
            x_sum = tl.sum(x_even.to(tl.float32) + x_odd.to(tl.float32), axis=1)
            gn = g * N + offs_n
            gn_ok = n_ok & (gn < g_end * N)
            s = tl.load(s_ptr + gn, mask=gn_ok, other=0.0).to(tl.float32)
            z = tl.load(z_ptr + gn, mask=gn_ok, other=0.0).to(tl.float32) + MAGIC_VALUE
            acc += (part - x_sum[:, None] * z[None, :]) * s[None, :]
    finish_tile(acc, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS)


# --- configs as data ------------------------------------------------------------------------------
# Decode (BLOCK_M = 16, the smallest tl.dot tile) wants many narrow programs, so that every SM streams
# weight bytes; prefill wants square tiles that reuse each weight tile across many rows of x.

def _decode(bn, bk, warps, stages, **extra):
    return dict(BLOCK_M=16, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages, **extra)


def _prefill(bm, bn, bk, warps, stages):
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)


W8_CONFIGS = {
    "cuda": [
        _decode(16, 256, 4, 4), _decode(32, 256, 4, 4), _decode(32, 128, 4, 4), _decode(64, 128, 4, 3),
        _decode(16, 512, 4, 3), _decode(32, 512, 4, 3), _decode(64, 256, 4, 3), _decode(128, 128, 4, 3),
        _prefill(64, 64, 64, 4, 4), _prefill(64, 128, 64, 4, 4), _prefill(128, 128, 64, 8, 3),
        _prefill(128, 64, 64, 4, 4),
    ],
    "hip": [
        _decode(16, 256, 4, 2), _decode(32, 256, 4, 2), _decode(64, 128, 4, 2), _decode(32, 512, 4, 2),
        _prefill(64, 64, 64, 4, 2), _prefill(128, 128, 64, 8, 2),
    ],
}


def _w4(bm, bn, gpi, warps, stages):
    return dict(BLOCK_M=bm, BLOCK_N=bn, GROUPS_PER_ITER=gpi, num_warps=warps, num_stages=stages)


W4_CONFIGS = {
    "cuda": [
        _w4(16, 16, 2, 4, 4), _w4(16, 32, 2, 4, 3), _w4(16, 64, 1, 4, 4), _w4(16, 64, 2, 4, 3),
        _w4(16, 128, 1, 4, 3), _w4(16, 128, 1, 8, 3), _w4(16, 256, 1, 8, 3),
        # Prefill: sizes whose registers fit without spilling (checked in the compiler's report).
        _w4(64, 64, 1, 4, 4), _w4(64, 64, 1, 8, 4), _w4(64, 128, 1, 8, 3), _w4(128, 64, 1, 8, 3),
    ],
    "hip": [
        _w4(16, 32, 1, 4, 2), _w4(16, 64, 1, 4, 2), _w4(16, 128, 1, 4, 2),
        _w4(64, 64, 1, 4, 2), _w4(128, 64, 1, 8, 2),
    ],
}


_w8a16 = Tuned(_w8a16_kernel, W8_CONFIGS, key=["M_BUCKET", "N", "K"],
               prune_configs_by={"early_config_prune": prune_by_m})
_w4a16 = Tuned(_w4a16_kernel, W4_CONFIGS, key=["M_BUCKET", "N", "K", "GROUP"],
               prune_configs_by={"early_config_prune": prune_by_m})
# The GEMV keys leave ROWS out: one config per shape whatever M (see kernels._quant_gemv).
_w8a16_gemv = Tuned(w8a16_gemv_kernel, W8_GEMV_CONFIGS, key=["N", "W_TOTAL"], cold_weight="w_ptr")
_w4a16_gemv = Tuned(w4a16_gemv_kernel, W4_GEMV_CONFIGS, key=["N", "G_TOTAL", "GROUP"], cold_weight="w_ptr")


# --- launchers ------------------------------------------------------------------------------------

# The W4 GEMV's split-K aims at 4 programs per SM, not the default 2: at M = 1 on an H200 (best config of
# each, bench/results/NVIDIA_H200/run8/quant_explore.csv) that took 14336 x 4096 from 21.8 to 21.0 us and
# 4096 x 14336 from 22.9 to 21.9 us, 4096 x 4096 unchanged. W8 gained at one shape and lost at another, Q4_K
# lost 13% at 4096 x 4096: they keep the default. Read at each launch: a researcher may change it.
W4_GEMV_PROGRAMS_PER_SM = 4
# The W4 launches split K in chunks of whole units of this many groups (GROUPS_PER_ITER must divide it); read
# at each launch. More splits did not pay at M = 1 on an H200 (bench/results/NVIDIA_H200/run20, call 5): with
# units of 2 or 1 groups, or aims of 8 or 16, every config was as fast or slower (4096 x 4096 7.2 us at best
# either way; 4096 x 14336 15.9 us against 17.2-20.0 us at aim 8-16).
W4_SPLIT_GROUPS = 4

# The W4A16 rows that go to the tensor-core GEMV (kernels/w4a16_mma_gemv.py) instead of the FMA GEMV (M <= 4)
# or the tensor-core tiles. On an H200 (bench/results/NVIDIA_H200/run24_notes.md) it was 1.40-2.41x faster than
# both at M = 3-16 on five weight shapes; at M = 2 the FMA GEMV was faster at 5 shapes of 7, at M = 1 at all.
# Read at each launch.
W4_MMA_ROWS = range(3, 17)


# The most rows the W8A16 FMA GEMV takes; above, the tensor-core tiles (read at each launch). On an H200
# (bench/results/NVIDIA_H200/run25, call 1) the tiles took M = 3-4 in 0.49-0.90x the GEMV's time at all five
# shapes timed (14336 x 4096: 20.0 against 40.8 us); at M = 2 the GEMV was faster at three of five (4096 x 4096:
# 8.4 against 9.2 us) and slower at the two largest (14336 x 4096: 23.3 against 19.8 us).
W8_GEMV_MAX_M = 2
# The W8A16 rows that go to its tensor-core GEMV (kernels/w8a16_mma_gemv.py), K a multiple of its 128-k trip:
# none. On an H200 it beat the FMA GEMV at M = 3-4 at three shapes of four (run 24, call 7), but the
# tensor-core tiles beat it at every M timed: 0.6-0.7x its time at M = 8-16 (run 24), 0.57-0.87x at M = 2-4
# (run 25, call 1). Read at each launch.
W8_MMA_ROWS = range(0)


def use_w8_mma_gemv(M: int, K: int, qweight: torch.Tensor, config: dict | None) -> bool:
    """Whether ``w8a16_linear`` gives its M rows to the tensor-core GEMV: M in ``W8_MMA_ROWS``, K % 128 == 0,
    a weight that starts 4-byte aligned, no pinned config, and not on ROCm (not timed there)."""
    return (config is None and M in W8_MMA_ROWS and K % 128 == 0 and qweight.data_ptr() % 4 == 0
            and not is_hip())


def use_mma_gemv(M: int, x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                 config: dict | None) -> bool:
    """Whether ``w4a16_linear`` gives its M rows (of checked, 16-bit x) to the tensor-core GEMV: M in
    ``W4_MMA_ROWS``, scales and zeros in x's dtype (the case timed and GPU-tested), a weight that starts 4-byte
    aligned, no pinned config, and not on ROCm (not timed there)."""
    return (config is None and M in W4_MMA_ROWS and scales.dtype == zeros.dtype == x.dtype
            and qweight.data_ptr() % 4 == 0 and not is_hip())


# Bits that make a nibble into MAGIC_VALUE + nibble when OR-ed into a float of x's dtype.
_MAGIC = {torch.bfloat16: (0x4300, 128.0), torch.float16: (0x6400, 1024.0)}


def _upcast(x: torch.Tensor) -> bool:
    # The interpreter multiplies bf16 dot operands as raw bits; its fp16 and fp32 dots are right.
    return interpreting() and x.dtype == torch.bfloat16


def x_quads(x: torch.Tensor) -> bool:
    """Whether the GEMVs read x in 8-byte loads of four values: bf16 rows that start 8-byte aligned."""
    return x.dtype == torch.bfloat16 and x.data_ptr() % 8 == 0 and x.stride(0) % 4 == 0


def _prepare_x(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def w8a16_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                 bias: torch.Tensor | None = None, *, config: dict | None = None) -> torch.Tensor:
    """``x @ (qweight * scales[:, None]).T + bias`` with int8 ``qweight`` [N, K] and ``scales`` [N].

    M in ``W8_MMA_ROWS`` goes to the tensor-core GEMV of ``kernels.w8a16_mma_gemv`` (``use_w8_mma_gemv``).
    ``config`` pins one entry of ``W8_CONFIGS`` (the tensor-core kernel) or of ``W8_GEMV_CONFIGS`` (the
    GEMV kernel, M <= GEMV_MAX_M) instead of autotuning (for tuning scripts).
    """
    N, K = check_w8_linear("w8a16_linear", x, qweight, scales, bias)
    x, qweight = _prepare_x(x), qweight.contiguous()
    M = x.shape[0]
    if use_w8_mma_gemv(M, K, qweight, config):
        from kernels.w8a16_mma_gemv import launch_mma_gemv  # here: that module imports this one's checks

        return launch_mma_gemv(x, qweight, scales, bias)
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    # K is split in whole 512-element chunks (every BLOCK_K divides 512).
    splits, units, partials, counters = decode_split(M, N, triton.cdiv(K, 512), N * K, x.device)
    if use_gemv(M, qweight, 4, config, W8_GEMV_MAX_M):
        grid = lambda META: (triton.cdiv(N, META["BLOCK_N"]), splits)
        launcher(_w8a16_gemv, config)[grid](
            x, qweight.view(torch.int32), scales.contiguous(), bias if bias is not None else scales, y, partials,
            counters, M, N, x.stride(0), y.stride(0), K // 4, K // 4, units * 128, splits, W8_FLIP_BITS,
            HAS_BIAS=bias is not None, ROWS=gemv_rows(M), EVEN=(K // 4) % 128 == 0, X_QUADS=x_quads(x),
            **gemv_launch_options("w8a16", x.device),
        )
        return y
    grid = lambda META: (triton.cdiv(N, META["BLOCK_N"]), splits, triton.cdiv(M, META["BLOCK_M"]))
    launcher(_w8a16, config)[grid](
        x, qweight, scales.contiguous(), bias if bias is not None else scales, y, partials, counters,
        M, N, K, m_bucket(M), x.stride(0), y.stride(0), units * 512, splits,
        HAS_BIAS=bias is not None, UPCAST=_upcast(x),
    )
    return y


def w4a16_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                 group_size: int, bias: torch.Tensor | None = None, *, config: dict | None = None) -> torch.Tensor:
    """``x @ W.T + bias``, W dequantized per group from packed int4 (see the module docstring).

    M in ``W4_MMA_ROWS`` goes to the tensor-core GEMV of ``kernels.w4a16_mma_gemv`` (``use_mma_gemv``).
    ``config`` pins one entry of ``W4_CONFIGS`` (the tensor-core kernel) or of ``W4_GEMV_CONFIGS`` (the
    GEMV kernel, M <= GEMV_MAX_M) instead of autotuning (for tuning scripts).
    """
    N, K = check_w4_linear("w4a16_linear", x, qweight, scales, zeros, group_size, bias)
    x, qweight = _prepare_x(x), qweight.contiguous()
    M = x.shape[0]
    if use_mma_gemv(M, x, qweight, scales, zeros, config):
        from kernels.w4a16_mma_gemv import launch_mma_gemv  # here: that module imports this one

        return launch_mma_gemv(x, qweight, scales, zeros, group_size, bias)
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    magic_bits, magic_value = _MAGIC[x.dtype]
    gemv = use_gemv(M, qweight, 4, config)
    unit = W4_SPLIT_GROUPS if gemv else 4  # K is split in whole chunks of this many groups (GROUPS_PER_ITER
    # divides it)
    splits, units, partials, counters = decode_split(M, N, triton.cdiv(K // group_size, unit), N * K // 2,
                                                     x.device, W4_GEMV_PROGRAMS_PER_SM if gemv else None)
    if gemv:
        grid = lambda META: (triton.cdiv(N, META["BLOCK_N"]), splits)
        launcher(_w4a16_gemv, config)[grid](
            x, qweight.view(torch.int32), scales.contiguous(), zeros.contiguous(),
            bias if bias is not None else scales, y, partials, counters,
            M, N, x.stride(0), y.stride(0), K // 8, K // group_size, units * unit, splits, ONE_BITS,
            GROUP=group_size, HAS_BIAS=bias is not None, ROWS=gemv_rows(M), EVEN=(K // group_size) % unit == 0,
            X_QUADS=x_quads(x), **gemv_launch_options("w4a16", x.device),
        )
        return y
    grid = lambda META: (triton.cdiv(N, META["BLOCK_N"]), splits, triton.cdiv(M, META["BLOCK_M"]))
    launcher(_w4a16, config)[grid](
        x, qweight, scales.contiguous(), zeros.contiguous(), bias if bias is not None else scales, y,
        partials, counters, M, N, K, m_bucket(M), x.stride(0), y.stride(0), qweight.stride(0), units * unit, splits,
        GROUP=group_size, HAS_BIAS=bias is not None, UPCAST=_upcast(x),
        MAGIC_BITS=magic_bits, MAGIC_VALUE=magic_value,
    )
    return y


# --- references -----------------------------------------------------------------------------------


def _linear_reference(x, w, bias):
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = x.to(compute) @ w.to(compute).T
    if bias is not None:
        y = y + bias.to(compute)
    return y.to(x.dtype)


def w8a16_linear_reference(x, qweight, scales, bias=None):
    """Pure torch, same signature: dequantize, then a dense matmul in float32 (float64 if x is)."""
    return _linear_reference(x, qweight.to(torch.float64) * scales.to(torch.float64)[:, None], bias)


def w4a16_linear_reference(x, qweight, scales, zeros, group_size, bias=None):
    """Pure torch, same signature."""
    return _linear_reference(x, dequantize_w4(qweight, scales.double(), zeros.double(), group_size), bias)


# --- registration -------------------------------------------------------------------------------

W8A16_OP = register(Op(
    name="linear_w8a16",
    triton=w8a16_linear,
    torch=w8a16_linear_reference,
    cases=lambda profile: shape_cases(profile, groups=False),
    make_inputs=w8_inputs,
    bench_cases=lambda: bench_cases(groups=False),
    smoke_cases=lambda: [{"M": m, "N": 33, "K": 100, "dtype": dt, "bias": m > 1}
                         for m in (1, 17) for dt in DTYPES],
    reduction_len=lambda c: c["K"],
    flops=lambda c: 2.0 * c["M"] * c["N"] * c["K"],
    bytes=lambda c: c["N"] * c["K"] + c["N"] * c["dtype"].itemsize + act_bytes(c),
    baseline=w8a16_cublas,
    baseline_name="cuBLAS bf16",
))

W4A16_OP = register(Op(
    name="linear_w4a16",
    triton=w4a16_linear,
    torch=w4a16_linear_reference,
    cases=lambda profile: shape_cases(profile, groups=True),
    make_inputs=w4_inputs,
    bench_cases=lambda: bench_cases(groups=True),
    smoke_cases=lambda: [{"M": m, "N": 33, "K": 3 * g, "dtype": dt, "bias": m > 1, "group_size": g}
                         for m, g in ((1, 32), (17, 128)) for dt in DTYPES],
    reduction_len=lambda c: c["K"],
    flops=lambda c: 2.0 * c["M"] * c["N"] * c["K"],
    bytes=lambda c: (c["N"] * c["K"] // 2 + 2 * (c["K"] // c["group_size"]) * c["N"] * c["dtype"].itemsize
                     + act_bytes(c)),
    baseline=w4a16_cublas,
    baseline_name="cuBLAS bf16",
))
