"""W8A16 decode on the tensor cores with the weight as the left operand, converted to x's dtype in registers.

Math (``kernels.quant_pack.quantize_w8``: W[n, k] = s[n] q[n, k], q a signed byte, s per output channel):

    y[m, n] = s[n] sum_k q[n, k] x[m, k]

Every int8 is exact in bf16 and fp16, so the sum runs on the tensor cores over q itself, in fp32, and the
scale multiplies the result once. A byte becomes a float without an integer-to-float instruction: with
``b`` the unsigned byte, ``b ^ 0x80`` is q + 128, and ``(b ^ 0x80) | 0x4B000000`` read as fp32 is
2^23 + q + 128 exactly. Since b's upper bits are zero, the OR and the XOR are one XOR with ``magic`` =
0x4B000080: one LOP3 (with the shift and the mask) and one FADD of -(2^23 + 128) a weight, then one
conversion packs two floats into a pair of x's dtype (exact: |q| <= 128 has at most 8 significant bits).

The A tile [BLOCK_N, KB] meets x, its rows padded to 16 columns, in one ``tl.dot`` a trip of KB = 128 k that
accumulates in fp32 (``kernels/w4a16_mma_gemv.py`` does the same for int4, where it is explained). The order
of k inside a trip is free, since the dot is a sum over it: logical column s = 16 t + 8 e + 2 c + h holds byte
2 e + h of word 4 t + c, so the four bytes of a word are one thread's A-fragment slots (2c, 2c + 1, 2c + 8,
2c + 9) of one k16 step. x's rows are permuted with them, and x, loaded in 2-byte gathers that the pipeliner
leaves alone, is loaded a trip ahead by hand.

Status: a research variant, selectable as the ``linear_w8a16`` implementation ``"w8a16_mma_gemv"`` and timed
by ``bench/quant_gemv_ab.py`` (code ``mma``). ``w8a16_linear`` would send it M in ``quant_linear.W8_MMA_ROWS``,
which is empty. On an H200 (``bench/results/NVIDIA_H200/run24_notes.md``, call 7) it took 29-35 us at
8B shapes for M = 1-16 (flat in M, 0.86-1.10x cuBLAS). That beat the FMA GEMV at M = 3-4 (40-41 us), but not
the tensor-core tiles of ``quant_linear``, which took M = 8-16 in 20-23 us. Compiled for sm_90 (Triton 3.6), its
loop issues 0.14 warp instructions a weight byte with 2 barriers a trip; what bounds it was not profiled.
Takes 1 <= M <= 16, bf16 or fp16 x, K a multiple of 128. Split-K in units of one trip, as the W4A16 variant.
Its reference is the op's own (``kernels.quant_linear.w8a16_linear_reference``).
"""

from __future__ import annotations

import torch

from kernels import alloc, pdl
from kernels._quant_checks import check_mma_gemv, check_w8_linear
from kernels._quant_launch import launcher
from kernels._split_k import decode_split, finish_tile
from kernels._triton import tl, triton
from kernels.device import interpreting
from kernels.registry import register_impl
from kernels.tuning import Tuned

MAX_M = 16  # the padded columns of x
KB = 128  # k a loop trip
MAGIC = 0x4B000080  # (byte ^ 0x80) | the exponent of 2^23, as one XOR
PROGRAMS_PER_SM = 2  # split-K's aim (kernels._split_k.decode_split), as the W4A16 variant; read at each launch


@triton.jit
def _converted_a(w, magic, BLOCK_N: tl.constexpr, KB: tl.constexpr, F16: tl.constexpr, UPCAST: tl.constexpr):
    """[BLOCK_N, KB / 4] int32 words of signed bytes -> the [BLOCK_N, KB] A tile q in x's dtype (fp32 with
    ``UPCAST``: the interpreter's 16-bit dot is wrong), in the permuted column order (above)."""
    sh = 16 * tl.arange(0, 2)[None, None, :]  # e: bytes 2 e and 2 e + 1 of each word
    # magic: an argument, not a constant, so that shift, mask and XOR can stay one instruction
    lo = (((w[:, :, None] >> sh) & 0xFF) ^ magic).to(tl.float32, bitcast=True) - 8388736.0
    hi = (((w[:, :, None] >> (sh + 8)) & 0xFF) ^ magic).to(tl.float32, bitcast=True) - 8388736.0
    if not UPCAST:
        lo, hi = lo.to(tl.float16 if F16 else tl.bfloat16), hi.to(tl.float16 if F16 else tl.bfloat16)
    a5 = tl.reshape(tl.join(lo, hi), (BLOCK_N, KB // 16, 4, 2, 2))  # [n, t, c, e, h]: byte 2 e + h of word 4 t + c
    return tl.reshape(tl.permute(a5, (0, 1, 3, 2, 4)), (BLOCK_N, KB))  # [n, t, e, c, h]


@triton.jit(do_not_specialize=["M", "M_BUCKET"])  # per-step values
def _w8a16_mma_gemv_kernel(
    x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, M_BUCKET, N, stride_xm, stride_ym, stride_wn, T_TOTAL, T_CHUNK, SPLITS, magic,
    KB: tl.constexpr, HAS_BIAS: tl.constexpr, F16: tl.constexpr, UPCAST: tl.constexpr, BLOCK_N: tl.constexpr,
    PDL: tl.constexpr = 0,
):
    """w_ptr: int32 words [N, K / 4]; s: [N]; a program: BLOCK_N rows, trips [split * T_CHUNK, + T_CHUNK) of KB
    k. Rows past N are clamped to N - 1 (computed, never stored); columns of x past M load as zeros."""
    pdl.wait(PDL)  # x comes from an earlier kernel (kernels/pdl.py)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.minimum(offs_n, N - 1)
    cols = tl.arange(0, 16)
    t_start = split * T_CHUNK
    t_end = tl.minimum(t_start + T_CHUNK, T_TOTAL)
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * stride_wn + tl.arange(0, KB // 4)[None, :]  # [BN, KB / 4]
    s = tl.arange(0, KB)  # the permuted column -> its k in the trip: word 4 t + c, byte 2 e + h
    k_of = 16 * (s // 16) + 4 * ((s // 2) % 4) + 2 * ((s // 8) % 2) + s % 2
    x_tile = x_ptr + tl.minimum(cols, M - 1)[None, :] * stride_xm + k_of[:, None]  # [KB, 16]
    m_ok = (cols < M)[None, :]
    acc = tl.zeros((BLOCK_N, 16), dtype=tl.float32)
    xn = tl.load(x_tile + tl.minimum(t_start, T_TOTAL - 1) * KB, mask=m_ok, other=0.0)
    for t in range(t_start, t_end):
        xt = xn
        more = (t + 1 + 0 * cols < t_end)[None, :]  # a tensor: the interpreter takes no scalar in a mask
        xn = tl.load(x_tile + tl.minimum(t + 1, t_end - 1) * KB, mask=m_ok & more, other=0.0)
        a = _converted_a(tl.load(w_rows + t * (KB // 4)), magic, BLOCK_N, KB, F16, UPCAST)
        if UPCAST:  # noqa: SIM108  (a compile-time branch)
            acc = tl.dot(a, xt.to(tl.float32), acc)
        else:
            acc = tl.dot(a, xt, acc)
    acc *= tl.load(s_ptr + rows).to(tl.float32)[:, None]
    pdl.launch_dependents(PDL)  # late, as the FMA GEMVs (kernels/_quant_gemv.py)
    finish_tile(tl.trans(acc), y_ptr, b_ptr, part_ptr, count_ptr, cols, offs_n, M, N, stride_ym, split, SPLITS,
                HAS_BIAS)


# First: the interpreter's choice. 64 rows a warpgroup (4 warps) is one wgmma tile on sm_90.
CONFIGS = {
    "cuda": [dict(BLOCK_N=64, num_warps=4, num_stages=3), dict(BLOCK_N=128, num_warps=8, num_stages=3),
             dict(BLOCK_N=64, num_warps=4, num_stages=4), dict(BLOCK_N=128, num_warps=4, num_stages=3)],
    "hip": [dict(BLOCK_N=64, num_warps=4, num_stages=2), dict(BLOCK_N=128, num_warps=4, num_stages=2)],
}
_tuned = Tuned(_w8a16_mma_gemv_kernel, CONFIGS, key=["M_BUCKET", "N", "T_TOTAL", "F16"], cold_weight="w_ptr")


def w8a16_mma_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                     bias: torch.Tensor | None = None, *, config: dict | None = None) -> torch.Tensor:
    """``w8a16_linear`` (same arguments and result) for 1 <= M <= 16 and K a multiple of 128 through this
    file's kernel; ``config`` pins one entry of ``CONFIGS`` instead of autotuning."""
    K = check_w8_linear("w8a16_mma_linear", x, qweight, scales, bias)[1]
    check_mma_gemv("w8a16_mma_linear", x, qweight, MAX_M, "kernels.quant_linear.w8a16_linear")
    if K % KB:
        raise ValueError(f"w8a16_mma_linear: K must be a multiple of {KB} (its loop trip), got {K}; use "
                         f"kernels.quant_linear.w8a16_linear")
    return launch_mma_gemv(x if x.stride(-1) == 1 else x.contiguous(), qweight.contiguous(), scales, bias, config)


def launch_mma_gemv(x, qweight, scales, bias=None, config: dict | None = None):
    """The launch, on arguments already checked (``w8a16_linear`` checks them before it dispatches here):
    x [M <= 16, K] 16-bit with unit stride along K, K % 128 == 0, qweight contiguous and 4-byte aligned."""
    M, (N, K) = x.shape[0], qweight.shape
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    trips = K // KB
    splits, units, partials, counters = decode_split(M, N, trips, N * K, x.device, PROGRAMS_PER_SM)
    grid = lambda META: (triton.cdiv(N, META["BLOCK_N"]), splits)
    launcher(_tuned, config)[grid](
        x, qweight.view(torch.int32), scales.contiguous(), bias if bias is not None else scales, y, partials,
        counters, M, 4 if M <= 4 else 16, N, x.stride(0), y.stride(0), K // 4, trips, units, splits, MAGIC,
        KB=KB, HAS_BIAS=bias is not None, F16=x.dtype == torch.float16, UPCAST=interpreting(),
        **pdl.launch_options(x.device, "w8a16_mma_gemv"),
    )
    return y


register_impl("linear_w8a16", "w8a16_mma_gemv", w8a16_mma_linear)
