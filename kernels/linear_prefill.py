"""Dense linear for many tokens (prefill): tiled and persistent matrix-product kernels.

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
- ``persistent``: one program per multiprocessor, each looping over tiles ``pid, pid + #SMs, ...``.
  It saves the launch and tail costs of many short programs, and with ``FLATTEN`` lets the compiler's
  software pipeliner run the next tile's first loads under the current tile's epilogue.

Split tail (persistent). T tiles on P programs take ceil(T / P) rounds; when T mod P is small, the last
round leaves most SMs idle (wave quantization: Qwen2.5-7B's qkv, 4608 x 3584 at M = 2048, is 288 tiles
of 128 x 256 on 132 SMs, 2.2 waves in 3 rounds). So the ``T mod P`` tiles of the last round may be cut
into halves (of the longer side) or quarters, each computed whole along K -- no partial sums, no fix-up:
2 (T mod P) halves or 4 (T mod P) quarters then share the SMs. A sub-tile is slower per flop than a whole
tile, so each config states what its last round costs cut in two (``COST_2``) or four (``COST_4``)
against 100 for whole tiles, and ``_tail_split`` takes the cheapest of ``100``,
``ceil(2 (T mod P) / P) * COST_2`` and ``ceil(4 (T mod P) / P) * COST_4``. On an H200 this took the three
Qwen2.5-7B shapes that missed 90% of cuBLAS from 0.78-0.94x to 0.88-1.04x over three timings
(bench/results/NVIDIA_H200/run26).

Loads (persistent): through pointers (rows past M or N re-read a valid row, K masked), or by TMA
(``_tile_acc_tma``: descriptors made in the kernel, blocks past the edges arriving as zeros, no address
arithmetic in the threads). TMA is chosen for 16-bit products of at least ``TMA_MIN_MACS`` multiply-adds
(:func:`persistent_tma`); ``TRITONFORGE_TMA=0`` or ``tma=False`` keeps the pointers.

Interpreter: Triton's CPU interpreter computes a bf16 ``tl.dot`` wrongly, so the launcher passes
``UPCAST=True`` there and the kernel converts both operands to float32 before the dot.
"""

from __future__ import annotations

import torch

from kernels import alloc
from kernels._triton import tl, triton
from kernels.device import device_sms, interpreting
from kernels.tma import kernel_descriptors, tma_aligned
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


@triton.jit
def _tail_split(tail, NUM_PROGRAMS: tl.constexpr, COST_2: tl.constexpr, COST_4: tl.constexpr):
    """How many sub-tiles (1, 2 or 4) each of the ``tail`` tiles of a partial last wave is cut into: the
    choice with the fewest rounds of sub-tiles times a sub-tile's cost (a whole tile costs 100)."""
    cost_2 = tl.cdiv(2 * tail, NUM_PROGRAMS) * COST_2
    cost_4 = tl.cdiv(4 * tail, NUM_PROGRAMS) * COST_4
    return tl.where((tail > 0) & (cost_4 < 100) & (cost_4 < cost_2), 4, tl.where((tail > 0) & (cost_2 < 100), 2, 1))


@triton.jit
def _sub_tile(x_ptr, w_ptr, b_ptr, y_ptr, tile, sub, M, N, K, stride_xm, stride_wn, stride_ym,
              HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
              PARTS_M: tl.constexpr, PARTS_N: tl.constexpr, TMA: tl.constexpr):
    """Part ``sub`` of tile ``tile`` cut PARTS_M x PARTS_N ways, computed whole along K."""
    pid_m, pid_n = _tile_coords(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    x_src, w_src = x_ptr, w_ptr
    if TMA:  # descriptors of the part's blocks
        x_src, w_src = _descriptors(x_ptr, w_ptr, M, N, K, stride_xm, stride_wn,
                                    BLOCK_M // PARTS_M, BLOCK_N // PARTS_N, BLOCK_K)
    _linear_tile(x_src, w_src, b_ptr, y_ptr, pid_m * PARTS_M + sub // PARTS_N, pid_n * PARTS_N + sub % PARTS_N,
                 M, N, K, stride_xm, stride_wn, stride_ym, HAS_BIAS, UPCAST, PRECISION,
                 BLOCK_M // PARTS_M, BLOCK_N // PARTS_N, BLOCK_K, TMA)


@triton.jit(do_not_specialize=["M", "M_BUCKET"])  # per-step values: compiled once
def _linear_persistent_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym, M_BUCKET,
    NUM_PROGRAMS: tl.constexpr,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    FLATTEN: tl.constexpr, SPLIT_TAIL: tl.constexpr = False, COST_2: tl.constexpr = 100,
    COST_4: tl.constexpr = 100, TMA: tl.constexpr = False,
):
    tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    whole = tiles
    split = 1
    if SPLIT_TAIL and BLOCK_M >= 32 and BLOCK_N >= 32:  # a GPU's dot needs parts of at least 16 x 16
        tail = tiles % NUM_PROGRAMS
        split = _tail_split(tail, NUM_PROGRAMS, COST_2, COST_4)
        whole = tiles - tl.where(split > 1, tail, 0)
    x_src, w_src = x_ptr, w_ptr
    if TMA:
        x_src, w_src = _descriptors(x_ptr, w_ptr, M, N, K, stride_xm, stride_wn, BLOCK_M, BLOCK_N, BLOCK_K)
    for tile in tl.range(tl.program_id(0), whole, NUM_PROGRAMS, flatten=FLATTEN):
        pid_m, pid_n = _tile_coords(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        _linear_tile(x_src, w_src, b_ptr, y_ptr, pid_m, pid_n, M, N, K, stride_xm, stride_wn, stride_ym,
                     HAS_BIAS, UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, TMA)
    if SPLIT_TAIL and BLOCK_M >= 32 and BLOCK_N >= 32:
        # The partial last wave in halves (of the longer side) or quarters, so that more SMs share it.
        if split == 2:
            for u in tl.range(tl.program_id(0), 2 * (tiles - whole), NUM_PROGRAMS):
                _sub_tile(x_ptr, w_ptr, b_ptr, y_ptr, whole + u // 2, u % 2, M, N, K, stride_xm, stride_wn,
                          stride_ym, HAS_BIAS, UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M,
                          1 + (BLOCK_M > BLOCK_N), 1 + (BLOCK_M <= BLOCK_N), TMA)
        if split == 4:
            for u in tl.range(tl.program_id(0), 4 * (tiles - whole), NUM_PROGRAMS):
                _sub_tile(x_ptr, w_ptr, b_ptr, y_ptr, whole + u // 4, u % 4, M, N, K, stride_xm, stride_wn,
                          stride_ym, HAS_BIAS, UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, 2, 2, TMA)


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
# Measured on an H200 (bench/results/NVIDIA_H200/linear_configs_run1.csv): FLATTEN=True (the next tile's
# loads pipelined under this tile's epilogue) beat FLATTEN=False in every config, by 2-25%.
# COST_2 / COST_4: what the last round costs when its tiles are cut in halves / quarters, against 100 for
# whole tiles (the split tail, see _tail_split); 100 never splits. Measured on an H200 at three shapes with
# a partial last wave (bench/results/NVIDIA_H200/run26/tail_ab_call4.csv): the halves and quarters of a
# 128 x 256 tile cost 74-79 and 47-70, of 256 x 128 64-84 and 63; those of 128 x 128 tiles (128 x 64 and
# 64 x 64) made every shape slower. No AMD measurements yet: no split there.
PERSISTENT_CONFIGS = {
    "cuda": [
        dict(_TILED_CUDA[0], FLATTEN=False, COST_2=75, COST_4=55),  # the interpreter's: splits as the big ones
        dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3, FLATTEN=True,
             COST_2=78, COST_4=55),
        dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4, FLATTEN=True,
             COST_2=78, COST_4=55),
        dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4, FLATTEN=True),
        dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4, FLATTEN=True),
        dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3, FLATTEN=True,
             COST_2=75, COST_4=60),
    ],
    "hip": [dict(c, FLATTEN=False) for c in _TILED_HIP],
}
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
# SPLIT_TAIL and TMA ride in the key so that an A/B of either (bench/tune_linear.py) tunes each side.
_persistent = Tuned(_linear_persistent_kernel, PERSISTENT_CONFIGS, key=["M_BUCKET", "N", "K", "SPLIT_TAIL", "TMA"],
                    keep=_keep,
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


# TMA loads from this many multiply-adds (M * N * K) up: about 85 us of product on an H200. On the 24 prefill
# shapes (M >= 2048) TMA ran at a median 1.04-1.05x the pointer loads' speed eager and 1.02-1.03x as graph
# replays, with losses of up to 6% at a few (bench/results/NVIDIA_H200/run27). But a TMA launch costs the host 10-30 us
# more (the descriptors' scratch allocation among it: 59 against 48 us at 256 x 1024 x 1024, 93-103 against
# 48-70 us at 2048 x 3584 x 3584), so shorter products, whose eager launches are bound by the host, keep the
# pointer loads: at 128 x 3584 x 3584 TMA's eager time was 83-86 us against 62-64.
TMA_MIN_MACS = 3 * 10**10


def persistent_tma(x: torch.Tensor, weight: torch.Tensor, min_macs: int = TMA_MIN_MACS) -> bool:
    """The persistent kernel loads its tiles by TMA (kernels/tma.py): a product of at least ``min_macs``
    multiply-adds on 16-bit operands a TMA can read, on a device that makes descriptors in kernels. float32
    (the checking dtype) keeps the pointer loads."""
    if x.element_size() != 2 or x.shape[0] * weight.shape[0] * weight.shape[1] < min_macs:
        return False
    return kernel_descriptors(x.device) and tma_aligned(x, weight)


def linear_persistent_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         config: dict | None = None, split_tail: bool = True,
                         programs: int | None = None, tma: bool | None = None) -> torch.Tensor:
    """As :func:`linear_tiled_2d`, with one program per multiprocessor looping over the tiles.

    ``split_tail`` cuts the tiles of a partial last wave into halves or quarters where the config's costs
    say that is quicker (``COST_2=0`` in a pinned config forces halves, ``COST_4=0`` quarters).
    ``programs`` (default: the card's SM count) lets tests reach every tail on small shapes.
    ``tma`` (default: :func:`persistent_tma`) loads the tiles through tensor descriptors or pointers.
    """
    M, K = x.shape
    N = weight.shape[0]
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    programs = programs or device_sms(x.device)
    if tma is None:
        tma = persistent_tma(x, weight)
    elif tma and not (tma_aligned(x, weight) and kernel_descriptors(x.device)):
        raise ValueError("linear_persistent_2d: tma=True needs 16-byte aligned rows and a device (or interpreter) "
                         "that makes tensor descriptors; pass tma=None to choose automatically")
    args = (x, weight, bias if bias is not None else y, y, M, N, K, x.stride(0), weight.stride(0), y.stride(0),
            m_bucket(M))
    flags = dict(NUM_PROGRAMS=programs, HAS_BIAS=bias is not None, SPLIT_TAIL=split_tail, TMA=tma, **_flags(x))
    # A split tail may give sub-tiles to every program, even when there are fewer tiles than programs.
    grid = lambda META: (
        programs if split_tail else min(programs, cdiv(M, META["BLOCK_M"]) * cdiv(N, META["BLOCK_N"])),)
    if config is None:
        _persistent[grid](*args, **flags)
    else:
        _linear_persistent_kernel[grid](*args, **flags, **config)
    return y
