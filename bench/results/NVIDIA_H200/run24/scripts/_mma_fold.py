"""W4A16 decode on the tensor cores with the weight as the left operand: two weights per integer instruction.

Math, per group g of GROUP consecutive k (``kernels.quant_pack``: W[n, k] = s[g, n] (u[n, k] - z[g, n]), u the
unsigned nibble):

    y[m, n] = sum_g s[g, n] (D[g, n, m] - (C + z[g, n]) X[g, m])
    D[g, n, m] = sum_{k in g} (C + u[n, k]) x[m, k],   X[g, m] = sum_{k in g} x[m, k]

with C = 128 for bf16 x and 1024 for fp16 x: ``(word >> 4j) & 0x000F000F | magic`` turns nibbles j and j + 4 of
a 32-bit word into two 16-bit floats C + u at once (magic 0x43004300 in bf16, 0x64006400 in fp16; both values
exact). D is one ``tl.dot`` per group, [BLOCK_N, GROUP] x [GROUP, 16], with the rows of x padded to 16
columns: at M = 1 fifteen of them are zero, but a tensor-core instruction costs less than the 2048 FMAs it
replaces. This is "swap AB": the weight is the A operand, which Hopper reads from registers.

Why (H200, ``bench/results/NVIDIA_H200/run23_notes.md``): the FMA GEMV of ``kernels._quant_gemv`` is bound
by instruction issue with about three warps a scheduler, not by memory. Per 32-bit word of eight weights it
spends four shifts, eight LOP3s and eight FMAs. Here a word costs three shifts and four LOP3s, and the
products go to the MMA. Compiled for sm_90 (``python -m bench.aot_quant``), the loop issues about 0.14
warp instructions per weight byte, against 0.23 for the FMA GEMV's leanest tile.

The order of k inside a group is free, since D is a sum over it, so the A tile's columns are permuted (and
x's rows with them). Logical column s = 32 B + 16 b + 8 e + 2 c + h holds nibble j + 4 h (j = e + 2 b) of
word t = 4 B + c. Then the four pair registers of one word are exactly one thread's A-fragment slots
(2c, 2c + 1, 2c + 8, 2c + 9) of two k16 steps, so a word's pairs can stay with the thread that loaded it.
The unpermuted order (nibbles j and j + 4 side by side) compiled to about a fifth more instructions a trip.

Status: a research variant, selectable as the ``linear_w4a16`` implementation ``"w4a16_mma_gemv"`` (for
example ``bench/impl_ab.py linear_w4a16 --impls triton w4a16_mma_gemv``). Tested in the interpreter and
compiled for sm_90 here. **It has not run on a GPU yet**, so ``w4a16_linear`` does not dispatch to it.
Takes 1 <= M <= 16, bf16 or fp16 x, groups of 32, 64 or 128. Split-K as the FMA GEMV
(``kernels._split_k``, the same split rule), one group a loop trip. Its reference is the op's own
(``kernels.quant_linear.w4a16_linear_reference``: dequantize, then matmul).
"""

from __future__ import annotations

import torch

from kernels import alloc, pdl
from kernels import quant_linear as ql
from kernels._quant_checks import check_w4_linear
from kernels._quant_launch import launcher
from kernels._split_k import decode_split, finish_tile
from kernels._triton import tl, triton
from kernels.device import interpreting
from kernels.tuning import Tuned

MAX_M = 16  # the padded columns of x
MAGIC = {torch.bfloat16: (0x43004300, 128.0), torch.float16: (0x64006400, 1024.0)}


@triton.jit
def _pairs_to_a(w, magic, BLOCK_N: tl.constexpr, GROUP: tl.constexpr, F16: tl.constexpr):
    """[BLOCK_N, WPG] int32 words -> the [BLOCK_N, GROUP] A tile C + u in the permuted column order (above)."""
    WPG: tl.constexpr = GROUP // 8
    sh = 4 * tl.arange(0, 4)
    p = ((w[:, :, None] >> sh[None, None, :]) & 0x000F000F) | magic  # [BN, WPG, 4(j)]: nibbles j, j + 4
    dt: tl.constexpr = tl.float16 if F16 else tl.bfloat16
    lo = (p & 0xFFFF).to(tl.int16).to(dt, bitcast=True)
    hi = (p >> 16).to(tl.int16).to(dt, bitcast=True)
    a6 = tl.reshape(tl.join(lo, hi), (BLOCK_N, WPG // 4, 4, 2, 2, 2))  # [n, B, c, b, e, h]
    return tl.reshape(tl.permute(a6, (0, 1, 3, 4, 2, 5)), (BLOCK_N, GROUP))  # [n, B, b, e, c, h]


@triton.jit(do_not_specialize=["M"])  # a per-step value
def _w4a16_mma_gemv_kernel(
    x_ptr, w_ptr, s_ptr, z_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, stride_xm, stride_ym, stride_wn, G_TOTAL, G_CHUNK, SPLITS, magic, offset,
    GROUP: tl.constexpr, HAS_BIAS: tl.constexpr, F16: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, PDL: tl.constexpr = 0,
):
    WPG: tl.constexpr = GROUP // 8
    pdl.wait(PDL)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.minimum(offs_n, N - 1)
    cols = tl.arange(0, 16)
    g_start = split * G_CHUNK
    g_end = tl.minimum(g_start + G_CHUNK, G_TOTAL)
    w_rows = w_ptr + rows.to(tl.int64)[:, None] * stride_wn + tl.arange(0, WPG)[None, :]
    s = tl.arange(0, GROUP)
    k_of = 8 * (4 * (s // 32) + (s // 2) % 4) + (s // 8) % 2 + 2 * ((s // 16) % 2) + 4 * (s % 2)
    x_tile = x_ptr + tl.minimum(cols, M - 1)[None, :] * stride_xm + k_of[:, None]
    m_ok = (cols < M)[None, :]
    acc = tl.zeros((BLOCK_N, 16), dtype=tl.float32)
    for g in range(g_start, g_end):
        a = _pairs_to_a(tl.load(w_rows + g * WPG), magic, BLOCK_N, GROUP, F16)
        sg = tl.load(s_ptr + g * N + rows)
        zs = -(tl.load(z_ptr + g * N + rows).to(tl.float32) * sg.to(tl.float32)).to(sg.dtype)
        C: tl.constexpr = 1024.0 if F16 else 128.0
        w = (a - C) * sg[:, None] + zs[:, None]
        xg = tl.load(x_tile + g * GROUP, mask=m_ok, other=0.0)
        if UPCAST:  # noqa: SIM108  (a compile-time branch; the interpreter's 16-bit tl.dot is wrong)
            acc = tl.dot(w.to(tl.float32), xg.to(tl.float32), acc)
        else:
            acc = tl.dot(w, xg, acc)
    pdl.launch_dependents(PDL)
    finish_tile(tl.trans(acc), y_ptr, b_ptr, part_ptr, count_ptr, cols, offs_n, M, N, stride_ym, split, SPLITS,
                HAS_BIAS)


# First: the interpreter's choice. BLOCK_N = 64 rows a warpgroup (4 warps) is one wgmma tile on sm_90.
CONFIGS = {
    "cuda": [dict(BLOCK_N=128, num_warps=8, num_stages=3), dict(BLOCK_N=64, num_warps=4, num_stages=3),
             dict(BLOCK_N=256, num_warps=8, num_stages=3), dict(BLOCK_N=128, num_warps=8, num_stages=4),
             dict(BLOCK_N=128, num_warps=8, num_stages=2), dict(BLOCK_N=256, num_warps=8, num_stages=4),
             dict(BLOCK_N=64, num_warps=4, num_stages=4), dict(BLOCK_N=128, num_warps=4, num_stages=3)],
    "hip": [dict(BLOCK_N=64, num_warps=4, num_stages=2)],
}
_tuned = Tuned(_w4a16_mma_gemv_kernel, CONFIGS, key=["N", "G_TOTAL", "GROUP", "F16"], cold_weight="w_ptr")


def w4a16_mma_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                     group_size: int, bias: torch.Tensor | None = None, *, config: dict | None = None) -> torch.Tensor:
    """``w4a16_linear`` (same arguments and result) for 1 <= M <= 16 through this file's kernel; ``config``
    pins one entry of ``CONFIGS`` instead of autotuning."""
    N, K = check_w4_linear("w4a16_mma_linear", x, qweight, scales, zeros, group_size, bias)
    M = x.shape[0]
    if M > MAX_M:
        raise ValueError(f"w4a16_mma_linear takes 1 to {MAX_M} rows of x (the tensor-core tile's padded "
                         f"columns), got {M}; use kernels.quant_linear.w4a16_linear for larger batches")
    x, qweight = (x if x.stride(-1) == 1 else x.contiguous()), qweight.contiguous()
    if qweight.data_ptr() % 4:
        raise ValueError("w4a16_mma_linear: qweight must start 4-byte aligned (it is read as int32 words)")
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    groups = K // group_size
    unit = ql.W4_SPLIT_GROUPS  # the FMA GEMV's split rule, read at each launch
    splits, units, partials, counters = decode_split(M, N, triton.cdiv(groups, unit), N * K // 2, x.device,
                                                     ql.W4_GEMV_PROGRAMS_PER_SM)
    magic, offset = MAGIC[x.dtype]
    grid = lambda META: (triton.cdiv(N, META["BLOCK_N"]), splits)
    launcher(_tuned, config)[grid](
        x, qweight.view(torch.int32), scales.contiguous(), zeros.contiguous(), bias if bias is not None else scales,
        y, partials, counters, M, N, x.stride(0), y.stride(0), K // 8, groups, units * unit, splits,
        magic, offset, GROUP=group_size, HAS_BIAS=bias is not None, F16=x.dtype == torch.float16,
        UPCAST=interpreting(), **pdl.launch_options(x.device, "w4a16_mma_gemv"),
    )
    return y



