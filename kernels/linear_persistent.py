"""Dense linear for many tokens (prefill), persistent: one program per multiprocessor looping over the tiles.

Math and tiles as in kernels/linear_prefill.py, whose tile code (grouped order, the tile product through
pointers or TMA, the store) this kernel runs: program ``pid`` takes tiles ``pid, pid + #SMs, ...``. That
saves the launch and tail costs of many short programs, and with ``FLATTEN`` lets the compiler's software
pipeliner run the next tile's first loads under the current tile's epilogue.

Split tail. T tiles on P programs take ceil(T / P) rounds; when T mod P is small, the last
round leaves most SMs idle (wave quantization: Qwen2.5-7B's qkv, 4608 x 3584 at M = 2048, is 288 tiles
of 128 x 256 on 132 SMs, 2.2 waves in 3 rounds). So the ``T mod P`` tiles of the last round may be cut
into halves (of the longer side) or quarters, each computed whole along K -- no partial sums, no fix-up:
2 (T mod P) halves or 4 (T mod P) quarters then share the SMs. A sub-tile is slower per flop than a whole
tile, so each config states what its last round costs cut in two (``COST_2``) or four (``COST_4``)
against 100 for whole tiles, and ``_tail_split`` takes the cheapest of ``100``,
``ceil(2 (T mod P) / P) * COST_2`` and ``ceil(4 (T mod P) / P) * COST_4``. On an H200 this took the three
Qwen2.5-7B shapes that missed 90% of cuBLAS from 0.78-0.94x to 0.88-1.04x over three timings
(bench/results/NVIDIA_H200/run26).

Loads: through pointers (rows past M or N re-read a valid row, K masked), or by TMA
(``_tile_acc_tma``: descriptors made in the kernel, blocks past the edges arriving as zeros, no address
arithmetic in the threads). TMA is chosen for 16-bit products of at least ``TMA_MIN_MACS`` multiply-adds
(:func:`persistent_tma`); ``TRITONFORGE_TMA=0`` or ``tma=False`` keeps the pointers.

Interpreter: bf16 operands are upcast before the dot (``UPCAST``), as in kernels/linear_prefill.py.
"""

from __future__ import annotations

import torch

from kernels import alloc
from kernels._triton import tl, triton
from kernels.device import device_sms
from kernels.linear_prefill import (
    _TILED_CUDA,
    _TILED_HIP,
    _descriptors,
    _flags,
    _keep,
    _linear_tile,
    _quick_bench,
    _tile_coords,
    cdiv,
    first_config_for_fp32,
    m_bucket,
)
from kernels.tma import kernel_descriptors, tma_aligned
from kernels.tuning import Tuned


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

# SPLIT_TAIL and TMA ride in the key so that an A/B of either (bench/tune_linear.py) tunes each side.
_persistent = Tuned(_linear_persistent_kernel, PERSISTENT_CONFIGS, key=["M_BUCKET", "N", "K", "SPLIT_TAIL", "TMA"],
                    keep=_keep,
                    do_bench=_quick_bench, prune_configs_by={"early_config_prune": first_config_for_fp32})


# --- launcher (inputs already validated and 2-D by kernels.linear) ---------------------------------

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
