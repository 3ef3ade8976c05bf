"""Fused GGUF dequantize-matmul for decode: ``y = x @ dequant(data).T + bias`` from the raw blocks.

x is [M, K] (fp16, bf16 or fp32), ``data`` the GGUF blocks of a weight of N rows by K (uint8
[N, row_bytes], layouts in ``kernels.gguf_formats``), y is [M, N] in x's dtype.

Decode (M <= DECODE_MAX_M) is bound by reading the weight, which is why a quantized model is fast: Q4_0
is 4.5 bits per weight against bf16's 16. The kernel reads each quantized block once and never writes
a dense weight. A program owns BLOCK_N weight rows, all of M (<= 16, one tl.dot tile) and one chunk of
K (split-K, reduced inside the launch: ``kernels._split_k``); it walks its chunk one GGUF block at a time
(BLOCKS_PER_ITER blocks per loop trip) and, per scale group, dots the integer quants with x on the
tensor cores and applies the group's scale afterwards (``kernels._gguf_dot``).
fp32 x runs the dot as TF32, exact for the small integer quants but rounding x to 10 mantissa bits.
Q4_0 and Q4_K at M <= 4 take weight-streaming GEMV kernels instead (fp32 FMAs on the CUDA cores): with
16-bit x, Q4_0 rows of a multiple of 8 blocks as 8-block groups and Q4_K super-blocks, one 144-byte unit of a
row per thread in 16-byte loads (``kernels._q4_0_group_gemv``, ``kernels._q4_k_group_gemv``); other rows and
fp32 x as int16 / int32 words (``kernels._gguf_gemv``).

For larger M (prefill) the weight tile would be re-decoded for every 16 rows of x, so the op instead
dequantizes the weight (``gguf_dequantize``) and runs the project's dense matmul (``kernels.linear``): the
extra 2-byte-per-weight write and read are small next to the M * N * K multiply-adds. The dense weight is
made per call and dropped (a cache would hold a full-precision copy of every quantized weight).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from kernels import _q4_0_group_gemv as q4_0_group
from kernels import _q4_k_group_gemv as q4_k_group
from kernels import alloc
from kernels._dense_cache import dense_weight
from kernels._gguf_dot import q4_q5_block, q6_k_block, q8_0_block, q45_k_block
from kernels._gguf_gemv import (
    Q4_0_GEMV_CONFIGS,
    Q4_0_HALFWORD_GEMV_CONFIGS,
    Q4_K_GEMV_CONFIGS,
    q4_0_gemv_kernel,
    q4_0_pair_gemv_kernel,
    q4_k_gemv_kernel,
)
from kernels._q4_0_group_gemv import Q4_0_GROUP_GEMV_CONFIGS, q4_0_group_gemv_kernel
from kernels._q4_k_group_gemv import Q4_K_GROUP_GEMV_CONFIGS, q4_k_group_gemv_kernel
from kernels._quant_gemv import ONE_BITS
from kernels._quant_launch import gemv_launch_options, gemv_rows, launcher, m_bucket, use_gemv
from kernels._split_k import decode_split, finish_tile
from kernels._triton import tl, triton
from kernels.device import interpreting
from kernels.gguf_dequant import check_aligned, gguf_dequantize
from kernels.gguf_formats import FORMATS, Q4_0, Q4_K, check_blocks, gguf_dequantize_reference, random_blocks
from kernels.linear import linear as dense_linear
from kernels.registry import Op, register
from kernels.tuning import Tuned


@triton.jit(do_not_specialize=["M", "M_BUCKET"])  # per-step values: compiled once
def _gguf_linear_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr,
    M, N, K, M_BUCKET, row_bytes, stride_xm, stride_ym, B_CHUNK, SPLITS,
    QTYPE: tl.constexpr, QK: tl.constexpr, TYPE_SIZE: tl.constexpr,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, MAGIC_BITS: tl.constexpr, MAGIC_VALUE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCKS_PER_ITER: tl.constexpr,
):
    pid_n, split, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = offs_m < M, offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    rows = w_ptr + offs_n.to(tl.int64) * row_bytes
    b_start = split * B_CHUNK
    b_end = tl.minimum(b_start + B_CHUNK, K // QK)
    k_end = b_end * QK  # x columns past this split's blocks are masked off
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for b0 in range(b_start, b_end, BLOCKS_PER_ITER):
        for bi in tl.static_range(BLOCKS_PER_ITER):
            b = b0 + bi
            r_ok = n_ok & ((b + tl.zeros([BLOCK_N], tl.int32)) < b_end)  # false past this split's blocks
            blk = rows + b * TYPE_SIZE
            k0 = b * QK
            if QTYPE == 8:  # Q8_0
                acc = q8_0_block(acc, x_rows, m_ok, k0, k_end, blk, r_ok, UPCAST)
            elif QTYPE == 2:  # Q4_0
                acc = q4_q5_block(acc, x_rows, m_ok, k0, k_end, blk, r_ok, 2, 0, 8, False,
                                  UPCAST, MAGIC_BITS, MAGIC_VALUE)
            elif QTYPE == 3:  # Q4_1
                acc = q4_q5_block(acc, x_rows, m_ok, k0, k_end, blk, r_ok, 4, 0, 0, True,
                                  UPCAST, MAGIC_BITS, MAGIC_VALUE)
            elif QTYPE == 6:  # Q5_0
                acc = q4_q5_block(acc, x_rows, m_ok, k0, k_end, blk, r_ok, 6, 2, 16, False,
                                  UPCAST, MAGIC_BITS, MAGIC_VALUE)
            elif QTYPE == 7:  # Q5_1
                acc = q4_q5_block(acc, x_rows, m_ok, k0, k_end, blk, r_ok, 8, 4, 0, True,
                                  UPCAST, MAGIC_BITS, MAGIC_VALUE)
            elif QTYPE == 12:  # Q4_K
                acc = q45_k_block(acc, x_rows, m_ok, k0, k_end, blk, r_ok, False, UPCAST, MAGIC_BITS, MAGIC_VALUE)
            elif QTYPE == 13:  # Q5_K
                acc = q45_k_block(acc, x_rows, m_ok, k0, k_end, blk, r_ok, True, UPCAST, MAGIC_BITS, MAGIC_VALUE)
            else:  # Q6_K
                acc = q6_k_block(acc, x_rows, m_ok, k0, k_end, blk, r_ok, UPCAST, MAGIC_BITS, MAGIC_VALUE)
    finish_tile(acc, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS)


# --- configs as data ------------------------------------------------------------------------------
# BLOCK_M is 16 (decode only). Narrow programs keep every SM streaming; the simple formats unroll a few
# 32-element blocks per loop trip so each trip moves enough bytes, the K-quants (256 elements) one.

def _cfg(bn, blocks, warps, stages):
    return dict(BLOCK_M=16, BLOCK_N=bn, BLOCKS_PER_ITER=blocks, num_warps=warps, num_stages=stages)


CONFIGS = {
    "cuda": [_cfg(16, 1, 4, 3), _cfg(32, 4, 4, 3), _cfg(64, 2, 4, 3), _cfg(64, 1, 4, 3), _cfg(128, 1, 4, 3),
             _cfg(128, 2, 4, 3), _cfg(128, 1, 8, 3), _cfg(256, 1, 8, 3), _cfg(256, 1, 8, 2)],
    "hip": [_cfg(16, 1, 4, 2), _cfg(32, 4, 4, 2), _cfg(64, 2, 4, 2), _cfg(128, 1, 4, 2), _cfg(128, 1, 8, 2)],
}


def _prune(configs, named_args, **kwargs):
    """K-quant blocks are already 256 elements: one per loop trip, and rows enough to amortise the
    per-sub-block scale work (the first config stays for the interpreter)."""
    if kwargs.get("QTYPE", named_args.get("QTYPE")) < Q4_K:
        return configs
    kept = [c for c in configs if c.kwargs["BLOCKS_PER_ITER"] == 1 and c.kwargs["BLOCK_N"] >= 32]
    return kept or configs


_gguf_linear = Tuned(_gguf_linear_kernel, CONFIGS, key=["M_BUCKET", "N", "K", "QTYPE"],
                     prune_configs_by={"early_config_prune": _prune})
# Q4_0 and Q4_K at M <= 4: the weight-streaming GEMV kernels, widest words first, each with what its loads
# need. With 16-bit x, 144-byte units in 16-byte vectors: Q4_0 rows of a multiple of 8 blocks (K % 256 == 0)
# as 8-block groups (kernels._q4_0_group_gemv), Q4_K super-blocks (kernels._q4_k_group_gemv). Otherwise Q4_0
# rows of an even number of blocks as pairs in 4-byte words, odd ones in 2-byte words (18-byte blocks), and
# Q4_K super-blocks in 4-byte words spread over the lanes (kernels._gguf_gemv).
class _Gemv(NamedTuple):
    tuned: Tuned
    align: int  # bytes: the rows' length and start
    blocks_per_unit: int  # the split-K unit
    group: object = None  # the 16-byte group kernel's module (x as int32 words of two 16-bit values, its
    # TILES and PROGRAMS_PER_SM), or None

    def fits(self, data: torch.Tensor, x: torch.Tensor) -> bool:
        if not use_gemv(x.shape[0], data, self.align, None):
            return False
        if self.group is None:
            return True
        rows = x.shape[0]
        fp16_rows = self.group.TILES.fp16_most_rows
        sixteen_bit = x.dtype == torch.bfloat16 or (x.dtype == torch.float16 and rows <= fp16_rows)
        return sixteen_bit and x.data_ptr() % 4 == 0 and x.stride(0) % 2 == 0

    def programs_per_sm(self) -> int | None:
        """The split-K aim (None: kernels._split_k's), read at launch so that a benchmark can set it."""
        return self.group.PROGRAMS_PER_SM if self.group is not None else None


def _group_tuned(kernel, configs, module):
    return Tuned(kernel, configs, key=["N", "B_TOTAL", "ROWS"], cold_weight="w_ptr",
                 prune_configs_by={"early_config_prune": module.TILES.prune})


_GEMV = {
    Q4_0: [_Gemv(_group_tuned(q4_0_group_gemv_kernel, Q4_0_GROUP_GEMV_CONFIGS, q4_0_group), 16, 8, q4_0_group),
           _Gemv(Tuned(q4_0_pair_gemv_kernel, Q4_0_GEMV_CONFIGS, key=["N", "B_TOTAL"], cold_weight="w_ptr"), 4, 4),
           _Gemv(Tuned(q4_0_gemv_kernel, Q4_0_HALFWORD_GEMV_CONFIGS, key=["N", "B_TOTAL"],
                              cold_weight="w_ptr"), 2, 4)],
    Q4_K: [_Gemv(_group_tuned(q4_k_group_gemv_kernel, Q4_K_GROUP_GEMV_CONFIGS, q4_k_group), 16, 1, q4_k_group),
           _Gemv(Tuned(q4_k_gemv_kernel, Q4_K_GEMV_CONFIGS, key=["N", "B_TOTAL"], cold_weight="w_ptr"), 4, 1)],
}


def _gemv(qtype: int, x: torch.Tensor, data: torch.Tensor, config: dict | None) -> _Gemv | None:
    """The GEMV kernel of this launch, or None for the tensor-core one: the first of the format's GEMVs whose
    loads the weight and x allow; a pinned GEMV config (no BLOCK_M) takes the GEMV whose list holds it (the
    narrowest-word one if none does, as ``use_gemv`` forces it)."""
    gemvs = _GEMV.get(qtype, [])
    if not gemvs or not use_gemv(x.shape[0], data, gemvs[-1].align, config):
        return None
    if config is not None:
        return next((g for g in gemvs if any(config in cs for cs in g.tuned.configs.values())), gemvs[-1])
    return next((g for g in gemvs if g.fits(data, x)), gemvs[-1])


# --- launcher ----------------------------------------------------------------------------------

DECODE_MAX_M = 16
X_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_MAGIC = {torch.bfloat16: (0x4300, 128.0), torch.float16: (0x6400, 1024.0), torch.float32: (0, 0.0)}


def _check(x, data, qtype, bias):
    fmt, N, K = check_blocks(data, qtype)
    if x.dtype not in X_DTYPES:
        raise TypeError(f"gguf_linear: x must be float16, bfloat16 or float32, got {x.dtype}")
    if x.dim() != 2 or x.shape[1] != K:
        raise ValueError(f"gguf_linear: x must be [M, K={K}] to match the {fmt.name} weight "
                         f"({N} rows of {K}), got shape {tuple(x.shape)}")
    if x.device != data.device:
        raise ValueError(f"gguf_linear: x is on {x.device} but the weight is on {data.device}")
    if bias is not None and (bias.shape != (N,) or not bias.dtype.is_floating_point or bias.device != x.device):
        raise ValueError(f"gguf_linear: bias must be a float tensor of shape ({N},) on {x.device}, got "
                         f"{bias.dtype} {tuple(bias.shape)} on {bias.device}")
    return fmt, N, K


def gguf_linear(x: torch.Tensor, data: torch.Tensor, qtype: int, bias: torch.Tensor | None = None, *,
                config: dict | None = None) -> torch.Tensor:
    """``x @ W.T + bias`` with W given as raw GGUF blocks of ``qtype``; y [M, N] in x's dtype.

    ``config`` pins one entry of ``CONFIGS`` for the decode kernel (or, for Q4_0 and Q4_K at M <= 4, of
    the GEMV kernel's list when it has no BLOCK_M) instead of autotuning (tuning scripts).
    """
    fmt, N, K = _check(x, data, qtype, bias)
    M = x.shape[0]
    if M > DECODE_MAX_M:
        w = gguf_dequantize(data, qtype, x.dtype)
        return dense_linear(x, w, bias.to(x.dtype) if bias is not None else None)
    data = check_aligned(data)
    x = x if x.stride(-1) == 1 else x.contiguous()
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    magic_bits, magic_value = _MAGIC[x.dtype]
    gemv = _gemv(fmt.qtype, x, data, config)
    # K is split in whole units: 4 blocks of a simple format (BLOCKS_PER_ITER divides 4), 1 of a K-quant,
    # or the GEMV's own unit.
    per_unit = gemv.blocks_per_unit if gemv is not None else 1 if fmt.block_size == 256 else 4
    n_blocks = K // fmt.block_size
    per_sm = gemv.programs_per_sm() if gemv is not None else None
    splits, units, partials, counters = decode_split(M, N, triton.cdiv(n_blocks, per_unit), data.numel(), x.device,
                                                     per_sm)
    if gemv is not None:
        grid = lambda META: (triton.cdiv(N, META["BLOCK_N"]), splits)
        extra = {"X_BF16": x.dtype == torch.bfloat16} if gemv.group is not None else {}
        launcher(gemv.tuned, config)[grid](
            x, data, bias if bias is not None else x, y, partials, counters,
            M, N, data.shape[1], x.stride(0), y.stride(0), n_blocks, units * per_unit, splits, ONE_BITS,
            HAS_BIAS=bias is not None, ROWS=gemv_rows(M), **extra, **gemv_launch_options("gguf", x.device),
        )
        return y
    grid = lambda META: (triton.cdiv(N, META["BLOCK_N"]), splits, triton.cdiv(M, META["BLOCK_M"]))
    launcher(_gguf_linear, config)[grid](
        x, data, bias if bias is not None else x, y, partials, counters,
        M, N, K, m_bucket(M), data.shape[1], x.stride(0), y.stride(0), units * per_unit, splits,
        QTYPE=fmt.qtype, QK=fmt.block_size, TYPE_SIZE=fmt.type_size, HAS_BIAS=bias is not None,
        UPCAST=interpreting() and x.dtype == torch.bfloat16, MAGIC_BITS=magic_bits, MAGIC_VALUE=magic_value,
    )
    return y


def gguf_linear_reference(x, data, qtype, bias=None):
    """Pure torch, same signature: dequantize (``gguf_formats``), then a float32 (or float64) matmul."""
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = x.to(compute) @ gguf_dequantize_reference(data, qtype, compute).T
    if bias is not None:
        y = y + bias.to(compute)
    return y.to(x.dtype)


# --- registration -------------------------------------------------------------------------------

QTYPES = sorted(FORMATS)
# (N, K) of Llama-3-8B's projections and the Qwen2.5-0.5B ones whose K is a multiple of 256.
BENCH_SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (896, 896), (128, 896), (4864, 896), (896, 4864)]


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        m, n, units, dtypes = [1, 3, 17], [1, 17, 40], [1, 2], list(X_DTYPES)
    else:  # bf16 at model sizes; the other dtypes are covered by the CPU profile
        m, n, units, dtypes = [1, 4, 16, 40], [896, 4096, 4113], [14, 16], [torch.bfloat16]

    def with_k(c):
        unit = FORMATS[c["qtype"]].block_size if profile == "cpu" else 256
        return {**{k: v for k, v in c.items() if k != "units"}, "K": c["units"] * unit}

    return st.fixed_dictionaries({
        "M": st.sampled_from(m), "N": st.sampled_from(n), "units": st.sampled_from(units),
        "qtype": st.sampled_from(QTYPES), "dtype": st.sampled_from(dtypes), "bias": st.booleans(),
    }).map(with_k)


def _make_inputs(case, device, gen):
    data = random_blocks(case["qtype"], case["N"], case["K"], generator=gen, device=device)
    x = torch.randn(case["M"], case["K"], generator=gen, device=device).to(case["dtype"])
    bias = (0.1 * torch.randn(case["N"], generator=gen, device=device)).to(case["dtype"]) if case["bias"] else None
    return {"x": x, "data": data, "qtype": case["qtype"], "bias": bias}


def gguf_cublas(x, data, qtype, bias=None):
    """Baseline: x's-dtype cuBLAS matmul on the weight dequantized once (cached, not timed)."""
    w = dense_weight(data, x.dtype, lambda: gguf_dequantize_reference(data, qtype, torch.float32))
    return torch.nn.functional.linear(x, w, bias)


def _bench_cases():
    return [{"M": m, "N": n, "K": k, "qtype": q, "dtype": torch.bfloat16, "bias": False}
            for q in QTYPES for n, k in BENCH_SHAPES for m in (1, 4, 16) if k % FORMATS[q].block_size == 0]


def _bytes(c):
    fmt = FORMATS[c["qtype"]]
    weight = c["N"] * c["K"] // fmt.block_size * fmt.type_size
    return weight + c["dtype"].itemsize * (c["M"] * c["K"] + c["M"] * c["N"])


GGUF_LINEAR_OP = register(Op(
    name="gguf_linear",
    triton=gguf_linear,
    torch=gguf_linear_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [{"M": m, "N": 17, "K": 2 * FORMATS[q].block_size, "qtype": q, "dtype": torch.float16,
                          "bias": m == 1} for q in QTYPES for m in (1, 17)],
    reduction_len=lambda c: c["K"],
    flops=lambda c: 2.0 * c["M"] * c["N"] * c["K"],
    bytes=_bytes,
    baseline=gguf_cublas,
    baseline_name="cuBLAS bf16",
    tf32=True,
))
