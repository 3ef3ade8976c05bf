"""W4A16 decode on the tensor cores with the weight as the left operand, dequantized two weights at a time.

Math, per group g of GROUP consecutive k (``kernels.quant_pack``: W[n, k] = s[g, n] (u[n, k] - z[g, n]), u the
unsigned nibble):

    y[m, n] = sum_g sum_{k in g} A[n, k] x[m, k],   A[n, k] = u[n, k] s[g, n] - z[g, n] s[g, n]

``(word >> 4j) & 0x000F000F | magic`` turns nibbles j and j + 4 of a 32-bit word into two 16-bit floats
C + u at once (magic 0x43004300, C = 128, in bf16; 0x64006400, C = 1024, in fp16). The magic is also the pair
(C, C), so one packed ``fma(p, 1, -magic)`` leaves u exactly and one packed ``fma(u, s, -z s)`` the weight in
x's dtype: the weight a dequantize-then-matmul would use, to one rounding (of -z s). Two packed instructions
for two weights (inline PTX ``fma.rn.bf16x2``, sm_80 and later; plain element-wise code on other backends).
The tile A [BLOCK_N, GROUP] then meets x, its rows padded to 16 columns, in one ``tl.dot`` a group that
accumulates in fp32 across groups: no per-group epilogue, no reduction across threads. At M = 1 fifteen of x's
columns are zero, but a tensor-core instruction costs less than the FMAs it replaces. This is "swap AB": the
weight is the A operand, which Hopper reads from registers.

The order of k inside a group is free, since the dot is a sum over it, so the A tile's columns are permuted (and
x's rows with them). Logical column s = 32 B + 16 b + 8 e + 2 c + h holds nibble j + 4 h (j = e + 2 b) of
word t = 4 B + c. Then the four pair registers of one word are exactly one thread's A-fragment slots
(2c, 2c + 1, 2c + 8, 2c + 9) of two k16 steps, so a word's pairs can stay with the thread that loaded it.

Measured (H200, ``bench/results/NVIDIA_H200/run24_notes.md``): at M = 3-16, 1.2-1.5x cuBLAS bf16 at the
Llama-3-8B shapes (0.8-1.3x at two 0.5B-sized ones) and 1.4-2.4x faster than the kernels ``w4a16_linear`` took
there before, so ``w4a16_linear`` sends M in ``quant_linear.W4_MMA_ROWS`` here on CUDA (``use_mma_gemv``). At
M = 1 it is slower than the FMA GEMV of ``kernels._quant_gemv`` (23 against 15 us at 14336 x 4096), which keeps
that row. An earlier form that scaled the fp32 products after the dot, with a per-group sum of x, spent 15
barriers a loop trip on layout conversions (Triton 3.6) and ran at half this speed (run 24, call 1).
Takes 1 <= M <= 16, bf16 or fp16 x, groups of 32, 64 or 128. Split-K as the FMA GEMV
(``kernels._split_k``, the same split unit, its own aim ``PROGRAMS_PER_SM``), one group a loop trip. Its
reference is the op's own (``kernels.quant_linear.w4a16_linear_reference``: dequantize, then matmul).
"""

from __future__ import annotations

import torch

from kernels import alloc, pdl
from kernels import quant_linear as ql
from kernels._quant_checks import check_mma_gemv, check_w4_linear
from kernels._quant_launch import launcher
from kernels._split_k import decode_split, finish_tile
from kernels._triton import tl, triton
from kernels.device import interpreting
from kernels.registry import register_impl
from kernels.tuning import Tuned

MAX_M = 16  # the padded columns of x
MAGIC = {torch.bfloat16: 0x43004300, torch.float16: 0x64006400}
# Split-K aims at this many programs an SM (``kernels._split_k.decode_split``); read at each launch. On an H200
# (run 24 call 4) 2 was as fast as 4 at six shapes of M = 1-16 and 3-5% faster at 4096 x 14336; 8 was slower.
PROGRAMS_PER_SM = 2


def _mode() -> int:
    """How the kernel dequantizes (``_dequantized_a``): fp32 in the interpreter, element-wise code on ROCm,
    else inline PTX (also what ``bench.aot_quant`` compiles for sm_90 from CPU tensors)."""
    if interpreting():
        return 0
    return 2 if torch.version.hip is not None else 1


@triton.jit
def _dequantized_a(w, s, z, magic, BLOCK_N: tl.constexpr, GROUP: tl.constexpr, F16: tl.constexpr, MODE: tl.constexpr):
    """[BLOCK_N, WPG] int32 words, [BLOCK_N] scales and zero points, the magic (above) -> the [BLOCK_N, GROUP]
    A tile s (u - z) in x's dtype, in the permuted column order (above). MODE: 0 fp32 (the interpreter, whose
    bf16 rounding and 16-bit dot are wrong), 1 packed inline PTX (CUDA), 2 element-wise 16-bit code (ROCm)."""
    WPG: tl.constexpr = GROUP // 8
    dt: tl.constexpr = tl.float16 if F16 else tl.bfloat16
    C: tl.constexpr = 1024.0 if F16 else 128.0
    sh = 4 * tl.arange(0, 4)
    # magic: an argument, not a constant, so that the mask and the OR stay one LOP3
    p = ((w[:, :, None] >> sh[None, None, :]) & 0x000F000F) | magic  # [BN, WPG, 4(j)]: nibbles j, j + 4
    zs32 = -(z.to(tl.float32) * s.to(tl.float32))
    zs = zs32.to(dt)
    if MODE == 1:  # s and z may come in any of the scale dtypes: s is rounded to x's, as zs
        sb = s.to(dt).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        zb = zs.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        one: tl.constexpr = 0x3C003C00 if F16 else 0x3F803F80
        neg: tl.constexpr = (0xE400E400 if F16 else 0xC300C300) - (1 << 32)  # (-C, -C), as an int32
        op: tl.constexpr = "fma.rn.f16x2" if F16 else "fma.rn.bf16x2"
        p = tl.inline_asm_elementwise(
            "{ .reg .b32 t; " + op + " t, $1, $4, $5; " + op + " $0, t, $2, $3; }", "=r,r,r,r,r,r",
            [p, (sb | (sb << 16))[:, None, None], (zb | (zb << 16))[:, None, None], p * 0 + one, p * 0 + neg],
            dtype=tl.int32, is_pure=True, pack=1)
    lo = (p & 0xFFFF).to(tl.int16).to(dt, bitcast=True)
    hi = (p >> 16).to(tl.int16).to(dt, bitcast=True)
    if MODE == 0:
        lo = (lo.to(tl.float32) - C) * s.to(tl.float32)[:, None, None] + zs32[:, None, None]
        hi = (hi.to(tl.float32) - C) * s.to(tl.float32)[:, None, None] + zs32[:, None, None]
    elif MODE == 2:
        lo = (lo - C) * s.to(dt)[:, None, None] + zs[:, None, None]
        hi = (hi - C) * s.to(dt)[:, None, None] + zs[:, None, None]
    a6 = tl.reshape(tl.join(lo, hi), (BLOCK_N, WPG // 4, 4, 2, 2, 2))  # [n, B, c, b, e, h]
    return tl.reshape(tl.permute(a6, (0, 1, 3, 4, 2, 5)), (BLOCK_N, GROUP))  # [n, B, b, e, c, h]


@triton.jit(do_not_specialize=["M", "M_BUCKET"])  # per-step values
def _w4a16_mma_gemv_kernel(
    x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, M_BUCKET, N, stride_xm, stride_ym, stride_wn, G_TOTAL, G_CHUNK, SPLITS, magic,
    GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, F16: tl.constexpr, MODE: tl.constexpr,
    BLOCK_N: tl.constexpr, PDL: tl.constexpr = 0,
):
    """w_ptr: int32 words [N, K / 8]; s, z: [K / GROUP, N]; a program: BLOCK_N rows, groups
    [split * G_CHUNK, + G_CHUNK). Rows past N are clamped to N - 1 (computed, never stored); columns of x
    past M load as zeros."""
    WPG: tl.constexpr = GROUP // 8
    pdl.wait(PDL)  # x comes from an earlier kernel (kernels/pdl.py)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.minimum(offs_n, N - 1)
    cols = tl.arange(0, 16)
    g_start = split * G_CHUNK
    g_end = tl.minimum(g_start + G_CHUNK, G_TOTAL)
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * stride_wn + tl.arange(0, WPG)[None, :]  # [BN, WPG]
    s = tl.arange(0, GROUP)  # the permuted column -> its k in the group: t = 4 B + c, j = e + 2 b, + 4 h
    k_of = 8 * (4 * (s // 32) + (s // 2) % 4) + (s // 8) % 2 + 2 * ((s // 16) % 2) + 4 * (s % 2)
    x_tile = x_ptr + tl.minimum(cols, M - 1)[None, :] * stride_xm + k_of[:, None]  # [GROUP, 16]
    m_ok = (cols < M)[None, :]
    acc = tl.zeros((BLOCK_N, 16), dtype=tl.float32)
    # x, scales and zeros are loaded a trip ahead, by hand: 2-byte gathers, which the pipeliner leaves in the
    # trip that uses them (1.05-1.3x at M = 4 and 16 against loading them there, run 24 call 4)
    # (the last trip reads its own scales again rather than those past the chunk, which may be past the tensor)
    gn = tl.minimum(g_start, G_TOTAL - 1)
    xn = tl.load(x_tile + gn * GROUP, mask=m_ok, other=0.0)
    sn = tl.load(s_ptr + gn * N + rows)
    zn = tl.load(z_ptr + gn * N + rows)
    for g in range(g_start, g_end):
        xg, sg, zg = xn, sn, zn
        gn = tl.minimum(g + 1, g_end - 1)
        more = (g + 1 + 0 * cols < g_end)[None, :]  # a tensor: the interpreter takes no scalar in a mask
        xn = tl.load(x_tile + gn * GROUP, mask=m_ok & more, other=0.0)  # x: no redundant gather
        sn = tl.load(s_ptr + gn * N + rows)
        zn = tl.load(z_ptr + gn * N + rows)
        a = _dequantized_a(tl.load(w_rows + g * WPG), sg, zg, magic, BLOCK_N, GROUP, F16, MODE)
        if MODE == 0:  # noqa: SIM108  (a compile-time branch; the interpreter's 16-bit tl.dot is wrong)
            acc = tl.dot(a, xg.to(tl.float32), acc)
        else:
            acc = tl.dot(a, xg, acc)
    pdl.launch_dependents(PDL)  # late, as the FMA GEMV (kernels/_quant_gemv.py)
    finish_tile(tl.trans(acc), y_ptr, b_ptr, part_ptr, count_ptr, cols, offs_n, M, N, stride_ym, split, SPLITS,
                HAS_BIAS)


# First: the interpreter's choice. 64 rows a warpgroup (4 warps) is one wgmma tile on sm_90. The best at
# 4096 x 14336 and 14336 x 4096 was 64 rows and 4 warps, at 4096 x 4096 128 rows and 8 (H200, run 24 call 2).
CONFIGS = {
    "cuda": [dict(BLOCK_N=64, num_warps=4, num_stages=3), dict(BLOCK_N=128, num_warps=8, num_stages=3),
             dict(BLOCK_N=64, num_warps=4, num_stages=4), dict(BLOCK_N=128, num_warps=8, num_stages=4)],
    "hip": [dict(BLOCK_N=64, num_warps=4, num_stages=2), dict(BLOCK_N=128, num_warps=4, num_stages=2)],
}
# Tuned per M_BUCKET (M <= 4, M > 4): at 4096 x 4096 the best tile of M = 3 was 19% slower at M = 16 (run 24).
_tuned = Tuned(_w4a16_mma_gemv_kernel, CONFIGS, key=["M_BUCKET", "N", "G_TOTAL", "GROUP", "F16"],
               cold_weight="w_ptr")


def w4a16_mma_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                     group_size: int, bias: torch.Tensor | None = None, *, config: dict | None = None) -> torch.Tensor:
    """``w4a16_linear`` (same arguments and result) for 1 <= M <= 16 through this file's kernel; ``config``
    pins one entry of ``CONFIGS`` instead of autotuning."""
    check_w4_linear("w4a16_mma_linear", x, qweight, scales, zeros, group_size, bias)
    check_mma_gemv("w4a16_mma_linear", x, qweight, MAX_M, "kernels.quant_linear.w4a16_linear")
    return launch_mma_gemv(x if x.stride(-1) == 1 else x.contiguous(), qweight.contiguous(), scales, zeros,
                           group_size, bias, config)


def launch_mma_gemv(x, qweight, scales, zeros, group_size: int, bias=None, config: dict | None = None):
    """The launch, on arguments already checked (``w4a16_linear`` checks them before it dispatches here):
    x [M <= 16, K] 16-bit with unit stride along K, qweight contiguous and 4-byte aligned."""
    M, (N, K) = x.shape[0], (qweight.shape[0], x.shape[1])
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    groups = K // group_size
    unit = ql.W4_SPLIT_GROUPS  # the FMA GEMV's split unit, read at each launch
    splits, units, partials, counters = decode_split(M, N, triton.cdiv(groups, unit), N * K // 2, x.device,
                                                     PROGRAMS_PER_SM)
    grid = lambda META: (triton.cdiv(N, META["BLOCK_N"]), splits)
    launcher(_tuned, config)[grid](
        x, qweight.view(torch.int32), scales.contiguous(), zeros.contiguous(), bias if bias is not None else scales,
        y, partials, counters, M, 4 if M <= 4 else 16, N, x.stride(0), y.stride(0), K // 8, groups, units * unit,
        splits, MAGIC[x.dtype], GROUP=group_size, HAS_BIAS=bias is not None, F16=x.dtype == torch.float16, MODE=_mode(),
        **pdl.launch_options(x.device, "w4a16_mma_gemv"),
    )
    return y


register_impl("linear_w4a16", "w4a16_mma_gemv", w4a16_mma_linear)
