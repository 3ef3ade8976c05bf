"""Dense linear for many tokens (prefill): the tile code, and the one-program-per-tile kernel.

Math: for x [M, K] and weight [N, K] (as ``nn.Linear`` stores it), optional bias [N]:

    y[m, n] = sum_k x[m, k] * weight[n, k]  (+ bias[n])

accumulated in float32 and stored in x's dtype. Both operands are read along K with a unit stride
(row-major x, row-major weight), so every tile load is a contiguous run of BLOCK_K elements per row.

Tiles: the output is cut into BLOCK_M x BLOCK_N tiles; one tile reads a BLOCK_M x K strip of x and a
BLOCK_N x K strip of the weight. Tiles are visited in *grouped* order: GROUP_M consecutive tile rows
sweep the tile columns together, so the weight strips they share are still in L2 when the next row of
the group asks for them (with a plain row-major order every row would stream the whole weight again).

Two launch shapes share the tile code:

- ``tiled``: one program per tile (the grid is the tile count);
- ``persistent`` (kernels/linear_persistent.py): one program per multiprocessor, each looping over
  tiles ``pid, pid + #SMs, ...``, with a split tail and TMA loads.

A tile loads its operands through pointers (``_tile_acc``: rows past M or N re-read a valid row, K
masked) or through TMA descriptors (``_tile_acc_tma``: blocks past the edges arrive as zeros).

Interpreter: Triton's CPU interpreter computes a bf16 ``tl.dot`` wrongly, so the launcher passes
``UPCAST=True`` there and the kernel converts both operands to float32 before the dot.
"""

from __future__ import annotations

import torch

from kernels import alloc
from kernels._triton import tl, triton
from kernels.device import interpreting
from kernels.tuning import Tuned


@triton.jit
def _tile_coords(tile, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped order: tile index -> (tile row, tile column), GROUP_M rows sharing each column."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (tile // per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (tile % per_group) % group_rows
    pid_n = (tile % per_group) // group_rows
    return pid_m, pid_n


@triton.jit
def _tile_acc(
    x_ptr, w_ptr, pid_m, pid_n, M, N, K, stride_xm, stride_wn, k_lo, k_hi,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """The tile's product over K-iterations [k_lo, k_hi) (all of K: 0 to cdiv(K, BLOCK_K)), in float32."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = k_lo * BLOCK_K + tl.arange(0, BLOCK_K)
    # Rows past the edge read a valid row again (modulo) instead of being masked: the loads stay
    # unmasked along M and N, and the stores drop those rows.
    rows_x = (offs_m % M).to(tl.int64)
    rows_w = (offs_n % N).to(tl.int64)
    x_ptrs = x_ptr + rows_x[:, None] * stride_xm + offs_k[None, :]
    w_ptrs = w_ptr + rows_w[:, None] * stride_wn + offs_k[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_lo, k_hi):
        in_k = offs_k[None, :] < K - (k - k_lo) * BLOCK_K
        a = tl.load(x_ptrs, mask=in_k, other=0.0)
        b = tl.load(w_ptrs, mask=in_k, other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    return acc


@triton.jit
def _tile_acc_tma(
    x_desc, w_desc, pid_m, pid_n, k_lo, k_hi, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """:func:`_tile_acc` with both operands loaded by TMA: no addresses or masks in the threads; rows past M
    or N and columns past K arrive as zeros."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_lo, k_hi):
        a = x_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
        b = w_desc.load([pid_n * BLOCK_N, k * BLOCK_K])
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION)
    return acc


@triton.jit
def _descriptors(x_ptr, w_ptr, M, N, K, stride_xm, stride_wn,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """TMA descriptors over x [M, K] and the weight [N, K], in [BLOCK_M | BLOCK_N, BLOCK_K] blocks."""
    x_desc = tl.make_tensor_descriptor(x_ptr, shape=[M, K], strides=[stride_xm, 1], block_shape=[BLOCK_M, BLOCK_K])
    w_desc = tl.make_tensor_descriptor(w_ptr, shape=[N, K], strides=[stride_wn, 1], block_shape=[BLOCK_N, BLOCK_K])
    return x_desc, w_desc


@triton.jit
def _store_tile(acc, b_ptr, y_ptr, pid_m, pid_n, M, N, stride_ym, HAS_BIAS: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """y's tile = acc (+ bias), in y's dtype, rows and columns past the edges dropped."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@triton.jit
def _linear_tile(
    x_src, w_src, b_ptr, y_ptr, pid_m, pid_n, M, N, K, stride_xm, stride_wn, stride_ym,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, TMA: tl.constexpr = False,
):
    """One whole tile; x_src and w_src are pointers, or descriptors of this tile's blocks if TMA."""
    if TMA:
        acc = _tile_acc_tma(x_src, w_src, pid_m, pid_n, 0, tl.cdiv(K, BLOCK_K), UPCAST, PRECISION,
                            BLOCK_M, BLOCK_N, BLOCK_K)
    else:
        acc = _tile_acc(x_src, w_src, pid_m, pid_n, M, N, K, stride_xm, stride_wn, 0, tl.cdiv(K, BLOCK_K),
                        UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
    _store_tile(acc, b_ptr, y_ptr, pid_m, pid_n, M, N, stride_ym, HAS_BIAS, BLOCK_M, BLOCK_N)


@triton.jit(do_not_specialize=["M", "M_BUCKET"])  # per-step values: compiled once
def _linear_tiled_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym, M_BUCKET,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _tile_coords(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    _linear_tile(x_ptr, w_ptr, b_ptr, y_ptr, pid_m, pid_n, M, N, K, stride_xm, stride_wn, stride_ym,
                 HAS_BIAS, UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)


# --- configs as data ----------------------------------------------------------------------------
# NVIDIA (Hopper first): 128-row tiles feed wgmma with a full warpgroup per 64 rows; 3-4 stages of
# cp.async pipelining hide the memory latency within the 228 KB of shared memory.
_TILED_CUDA = [
    # For the interpreter only (see _keep): small tiles give CPU tests several tiles on small shapes.
    dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4, num_warps=4, num_stages=2),
    dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
    dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4),
    dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4),
]
# AMD (CDNA): two stages (LDS is 64 KB), and the HIP-only knobs for the matrix cores.
_TILED_HIP = [
    dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=4, num_warps=4, num_stages=2,
         waves_per_eu=0, matrix_instr_nonkdim=16, kpack=1),
    dict(BLOCK_M=256, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=2,
         waves_per_eu=0, matrix_instr_nonkdim=16, kpack=2),
    dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=2,
         waves_per_eu=0, matrix_instr_nonkdim=16, kpack=2),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=2,
         waves_per_eu=2, matrix_instr_nonkdim=16, kpack=2),
    dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=2,
         waves_per_eu=2, matrix_instr_nonkdim=16, kpack=1),
]
TILED_CONFIGS = {"cuda": _TILED_CUDA, "hip": _TILED_HIP}
# Shared memory a config needs for 2-byte operands; configs that cannot fit any card are dropped.
SHARED_MEMORY_LIMIT = 232_448


def _keep(c: dict) -> bool:
    """Small tiles only in the interpreter (several tiles on test shapes); on a GPU they ran 5-50x slower
    than cuBLAS (H200) and would only cost autotuning time. Big tiles only if their stages fit."""
    small = c["BLOCK_M"] * c["BLOCK_N"] <= 32 * 32
    if interpreting():
        return small
    stages = c.get("num_stages", 2)
    return not small and stages * (c["BLOCK_M"] + c["BLOCK_N"]) * c["BLOCK_K"] * 2 <= SHARED_MEMORY_LIMIT


def _quick_bench(fn, quantiles):
    # Shorter than the autotuner's default (25 ms warm-up, 100 ms timing) per config: enough to rank
    # configs that differ by several percent, and keeps first launches (and GPU tests) fast.
    return triton.testing.do_bench(fn, warmup=5, rep=25, quantiles=quantiles)


def first_config_for_fp32(configs, named_args, **kwargs):
    # float32 is the checking dtype (exact IEEE dots, never a hot path): the first kept config is
    # enough, and tuning it would compile every config once more for nothing.
    if named_args["x_ptr"].dtype == torch.float32:
        return configs[:1]
    return configs


_tiled = Tuned(_linear_tiled_kernel, TILED_CONFIGS, key=["M_BUCKET", "N", "K"], keep=_keep,
               do_bench=_quick_bench, prune_configs_by={"early_config_prune": first_config_for_fp32})


def cdiv(a: int, b: int) -> int:
    # Plain Python on purpose: triton.cdiv and triton.next_power_of_2 are JIT-aware helpers that cost
    # ~30 us per call from host code (measured on the CPU), several times the decode kernel itself.
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


M_BUCKET_CAP = 4096


def m_bucket(M: int) -> int:
    """The autotuning key for M: its power-of-two ceiling, so nearby token counts share a config, capped at
    :data:`M_BUCKET_CAP` (beyond it every config already fills the card): at most seven prefill buckets,
    which the engine tunes at start-up rather than on a live request."""
    return min(next_power_of_2(max(M, 1)), M_BUCKET_CAP)


# --- launchers (inputs already validated and 2-D by kernels.linear) ------------------------------


def _precision(dtype: torch.dtype, upcast: bool) -> str:
    # float32 operands (the checking dtype, or bf16 upcast in the interpreter) get exact IEEE dots, not
    # TF32; for 16-bit operands the setting is the default and changes nothing.
    return "ieee" if dtype == torch.float32 or upcast else "tf32"


def _flags(x: torch.Tensor) -> dict:
    upcast = interpreting() and x.dtype == torch.bfloat16
    return dict(UPCAST=upcast, PRECISION=_precision(x.dtype, upcast))


def linear_tiled_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    config: dict | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` for 2-D contiguous-along-K operands, one program per output tile.

    ``config`` (a dict of the ``TILED_CONFIGS`` kind) bypasses the autotuner; the tuning script uses it.
    """
    M, K = x.shape
    N = weight.shape[0]
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    args = (x, weight, bias if bias is not None else y, y, M, N, K, x.stride(0), weight.stride(0), y.stride(0),
            m_bucket(M))
    flags = dict(HAS_BIAS=bias is not None, **_flags(x))
    grid = lambda META: (cdiv(M, META["BLOCK_M"]) * cdiv(N, META["BLOCK_N"]),)
    if config is None:
        _tiled[grid](*args, **flags)
    else:
        _linear_tiled_kernel[grid](*args, **flags, **config)
    return y
