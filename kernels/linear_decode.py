"""Dense linear for few tokens (decode, M = 1..64): split-K weight streaming.

Math: y[m, n] = sum_k x[m, k] * weight[n, k] (+ bias[n]), weight [N, K] row-major, accumulated in float32.

Why a separate kernel: with M <= 64 the product is bound by reading the weight (2*N*K bytes against
2*M*N*K flops, under 64 flops per byte), so the goal is to keep every multiprocessor streaming weight
rows. A tile grid over N alone gives N / BLOCK_N programs (a few dozen for a 896-wide layer): too few
to fill 132 SMs. So K is cut into chunks as well:

    program (n_tile, s) computes   P[s, m, n] = sum over k in chunk s of x[m, k] * weight[n, k]
    the last program of a tile     y[m, n]    = P[0, m, n] + P[1, m, n] + ... (+ bias[n])

Each program stores its partial, then increments an arrival counter for its output tile (an atomic
with acquire-release ordering); the one that sees the count reach ``splits`` adds the partials in
split order -- not arrival order, so the result is deterministic -- writes y and re-arms the counter.
One launch, no second reduction kernel: at a few microseconds per decode product the launch itself
is a large share of the time. With a single chunk the program writes y directly (the same sum).

Batch invariance. The chunk size is a function of (N, K, the M bucket) only -- never of M itself or of
a tuned config -- see :func:`decode_chunk`; the M bucket is the row-tile height BLOCK_M (16, 32 or 64,
the next power of two >= M) and is also the autotuning key together with N and K. Each output row of a
matrix product depends only on its own input row, so a token's output is bitwise the same whether it is
decoded alone or with up to 15 others (any M in the same bucket), which batched serving relies on to
give the same tokens whatever else is in the batch. Across buckets the sums are grouped differently
and agree only to rounding.

Memory: the fp32 partials are [splits, M, N]; the split count is capped so that writing and reading
them costs at most a quarter of the weight bytes even at the bucket's largest M (in practice M is
smaller and the partials a few percent).

Interpreter: bf16 operands are upcast to float32 before ``tl.dot`` (``UPCAST``), since the interpreter
computes bf16 dots wrongly.
"""

from __future__ import annotations

import torch

from kernels import alloc, pdl
from kernels._split_k import arrival_counters, finish_tile
from kernels._triton import tl, triton
from kernels.device import device_sms, interpreting
from kernels.linear_prefill import _precision, cdiv, first_config_for_fp32, next_power_of_2
from kernels.tuning import Tuned, graph_bench

# Chunks are whole multiples of this many K elements (every BLOCK_K below divides it), and the split
# aims at this many programs per multiprocessor (counting BLOCK_N = 64 column tiles). Measured on an
# H200 (bench/results/NVIDIA_H200/linear_configs_decode_run2.csv, CUDA-graph timing): with 256 and 4, the
# chunks were too small -- twice the chunk ran 3-11% faster on all four shapes tried (fewer partials
# to write and reduce, longer unmasked K loops); 512 and 2 give those measured-best chunk sizes.
SPLIT_UNIT = 512
PROGRAMS_PER_SM = 2


@triton.jit(do_not_specialize=["M"])  # per-step values: compiled once
def _linear_decode_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr, M, N, K, stride_xm, stride_wn, stride_ym, K_CHUNK, SPLITS,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SILU_INPUT: tl.constexpr = False,
    PDL: tl.constexpr = 0, SIGNAL_AFTER_WAIT: tl.constexpr = False,
):
    # x comes from an earlier kernel (kernels/pdl.py). SIGNAL_AFTER_WAIT (a tuned choice, see DECODE_CONFIGS)
    # lets the next kernel be scheduled only once this one runs, whatever the launch's mode.
    if SIGNAL_AFTER_WAIT:
        pdl.wait(PDL)
        pdl.launch_dependents(PDL)
    else:
        pdl.start(PDL)
        pdl.enter(PDL)
    pid_n = tl.program_id(0)
    split = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    k_start = split * K_CHUNK
    k_end = tl.minimum(k_start + K_CHUNK, K)
    # Weight rows past N re-read a valid row (modulo) so the weight loads need a mask along K only.
    rows_w = (offs_n % N).to(tl.int64)
    x_ptrs = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm + (k_start + offs_k)[None, :]
    w_ptrs = w_ptr + rows_w[:, None] * stride_wn + (k_start + offs_k)[None, :]
    in_m = offs_m[:, None] < M
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(k_start, k_end, BLOCK_K):
        in_k = (k + offs_k)[None, :] < k_end
        a = tl.load(x_ptrs, mask=in_m & in_k, other=0.0)
        if SILU_INPUT:
            # x holds [gate | up] (2K per row): the input is silu(gate) * up, rounded to x's dtype as
            # silu_and_mul would store it, so the product matches the unfused pair.
            g = a.to(tl.float32)
            u = tl.load(x_ptrs + K, mask=in_m & in_k, other=0.0).to(tl.float32)
            a = (g / (1.0 + tl.exp(-g)) * u).to(x_ptr.dtype.element_ty)
        b = tl.load(w_ptrs, mask=in_k, other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, tl.trans(b), acc, input_precision=PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    # One split: write y. Several: publish this split's partials, count arrivals for the tile; the
    # last program adds the partials in split order, writes y and re-arms the counter (kernels/_split_k.py).
    finish_tile(acc, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS)


# --- configs as data ----------------------------------------------------------------------------
# BLOCK_M is not tuned (it is the M bucket); BLOCK_K must divide SPLIT_UNIT. Deep pipelines keep
# several weight tiles in flight per program, which is what streaming at full bandwidth needs.
DECODE_CONFIGS = {
    "cuda": [
        # First: the interpreter's choice, small enough that CPU test shapes span several tiles.
        dict(BLOCK_N=32, BLOCK_K=64, num_warps=4, num_stages=3),
        dict(BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4),
        dict(BLOCK_N=64, BLOCK_K=256, num_warps=4, num_stages=3),
        dict(BLOCK_N=32, BLOCK_K=256, num_warps=4, num_stages=4),
        dict(BLOCK_N=128, BLOCK_K=128, num_warps=4, num_stages=4),
        dict(BLOCK_N=128, BLOCK_K=64, num_warps=4, num_stages=6),
        dict(BLOCK_N=64, BLOCK_K=128, num_warps=8, num_stages=5),
        # 16-column tiles: four times the programs of BLOCK_N = 64, for layers under a few MB.
        dict(BLOCK_N=16, BLOCK_K=256, num_warps=4, num_stages=4),
        dict(BLOCK_N=16, BLOCK_K=128, num_warps=2, num_stages=5),
        # The small-layer tiles again, signalling the next kernel only after their wait (SIGNAL_AFTER_WAIT).
        # Signalled at the start, launches of this kernel back to back ran slower at some shapes than with no
        # PDL at all (which fits a chain of later launches sitting resident): 896 x 896 at M = 16,
        # 16/128/2w/5s in one chunk, 5.41 us at the start, 3.98 without PDL, 3.40 after the wait; 1152 x 896
        # 3.37 either way (H200, bench/results/NVIDIA_H200/run22). So the tuner picks the signal per shape.
        dict(BLOCK_N=16, BLOCK_K=128, num_warps=2, num_stages=5, SIGNAL_AFTER_WAIT=True),
        dict(BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=4, SIGNAL_AFTER_WAIT=True),
        dict(BLOCK_N=32, BLOCK_K=256, num_warps=4, num_stages=4, SIGNAL_AFTER_WAIT=True),
    ],
    "hip": [
        dict(BLOCK_N=32, BLOCK_K=64, num_warps=4, num_stages=2, waves_per_eu=0, matrix_instr_nonkdim=16, kpack=1),
        dict(BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=2, waves_per_eu=2, matrix_instr_nonkdim=16, kpack=2),
        dict(BLOCK_N=64, BLOCK_K=256, num_warps=4, num_stages=2, waves_per_eu=2, matrix_instr_nonkdim=16, kpack=2),
        dict(BLOCK_N=128, BLOCK_K=128, num_warps=8, num_stages=2, waves_per_eu=0, matrix_instr_nonkdim=16, kpack=2),
    ],
}


def _divides_unit(c: dict) -> bool:
    return SPLIT_UNIT % c["BLOCK_K"] == 0


_decode = Tuned(_linear_decode_kernel, DECODE_CONFIGS, key=["BLOCK_M", "N", "K"], keep=_divides_unit,
                cold_weight="w_ptr", do_bench=graph_bench,
                prune_configs_by={"early_config_prune": first_config_for_fp32})


def decode_block_m(M: int) -> int:
    """The M bucket: row-tile height 16, 32 or 64 (tl.dot needs at least 16 rows)."""
    return min(64, max(16, next_power_of_2(max(M, 1))))


# Shapes whose K is not cut, whatever the SM count asks for. Measured on an H200 with each config tuned on
# cold weights (bench/cold_tune_ab.py): K under 1024 (the 0.5B model's layers) in one chunk took 3.3 us at
# 1152 x 896, M = 4 and 16, against 4.4-4.6 in two (the arrivals and the partials' reduce cost more than the
# extra programs give on a 2 MB weight; run 17); at the 64-row bucket with K up to 4096, one chunk took 7.3 us
# at 3072 x 2048 against 8.4 in two, 6.3 at 2048 x 2048 against 6.7 (run 17; run 14 found the same at
# 2048-4096 wide: splits lost 5-15%). In the 16-row bucket the same holds for K up to 4096 once the column
# tiles alone give a program to a third of the SMs: at M = 4 and 16 one chunk took 6.3-6.4 us at
# 3072 x 2048 against 6.6-6.7 in four, 11.5 at 4096 x 4096 against 11.6-12.1 in four, 15.0-15.2 at
# 6144 x 4096 against 15.4-15.8 in two, while 2048 x 2048 (32 tiles) still gained from four (5.3-5.5 us
# against 5.9; run 25, call 1).
UNSPLIT_BELOW_K = 1024
UNSPLIT_UP_TO_K = 4096
UNSPLIT_TILES_PER_SM = 1 / 3  # 64-wide column tiles per SM from which the 16-row bucket leaves K <= 4096 whole
# Programs per SM the split aims at in the 64-row bucket: there a program's x tile is 64 rows deep, so a
# second program per SM adds x reads from L2 and partials without adding weight bandwidth. At 2048 x 8192,
# M = 64: four splits (128 programs) took 13.6 us, eight (PROGRAMS_PER_SM, 256) 17.9, cuBLAS 14.7; at
# 4096 x 14336, two and four splits both took 36.5-36.7 us (H200, run 25, call 1).
PROGRAMS_PER_SM_64_ROWS = 1


def decode_chunk(N: int, K: int, block_m: int, sms: int) -> int:
    """K elements per split for an [N, K] weight in the ``block_m`` bucket on a GPU with ``sms`` SMs.

    As many splits as keep N/64 column tiles times the splits within PROGRAMS_PER_SM programs per SM
    (PROGRAMS_PER_SM_64_ROWS in the 64-row bucket; rounded down: a layer whose column tiles alone come near
    that is not split, as splitting it costs more in partials and arrivals than the extra programs give --
    on an H200, 9728x896 at M = 1 ran in 7.2 us unsplit against 8.4 us in two splits, 16384x2048 in 18.1
    against 20.0), at most K/SPLIT_UNIT of them, and few enough that the fp32 partials (8 bytes per row and
    column per split, written then read) stay under a quarter of the weight's 2*N*K bytes at M = block_m.
    K under UNSPLIT_BELOW_K is one chunk, and so is K up to UNSPLIT_UP_TO_K in the 64-row bucket or where
    the column tiles reach UNSPLIT_TILES_PER_SM (measured, above).
    Depends on the shape and the card, never on M: this is what keeps decode batch-invariant.
    """
    tiles = cdiv(N, 64)
    if K < UNSPLIT_BELOW_K or (K <= UNSPLIT_UP_TO_K and (block_m >= 64 or tiles >= UNSPLIT_TILES_PER_SM * sms)):
        return cdiv(K, SPLIT_UNIT) * SPLIT_UNIT
    aim = PROGRAMS_PER_SM_64_ROWS if block_m >= 64 else PROGRAMS_PER_SM
    return split_chunk(N, K, sms, row_tile=64, unit=SPLIT_UNIT, max_splits=max(1, K // (16 * block_m)),
                       programs_per_sm=aim)


def split_chunk(N: int, K: int, sms: int, row_tile: int, unit: int, max_splits: int | None = None,
                programs_per_sm: int = PROGRAMS_PER_SM) -> int:
    """K elements per split, a multiple of ``unit``: as many splits as keep N/row_tile column tiles times
    the splits within ``programs_per_sm`` programs per SM (rounded down), at most K/unit and ``max_splits``.
    The rule behind :func:`decode_chunk` and ``kernels.linear_gemv.gemv_chunk``."""
    units = cdiv(K, unit)
    wanted = (programs_per_sm * sms) // cdiv(N, row_tile)
    splits = max(1, min(wanted, units, units if max_splits is None else max_splits))
    return cdiv(units, splits) * unit


# Enough counters for the smallest BLOCK_N any config uses.
_MIN_BLOCK_N = min(c["BLOCK_N"] for c in DECODE_CONFIGS["cuda"] + DECODE_CONFIGS["hip"])


def linear_decode_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     config: dict | None = None, k_chunk: int | None = None, silu_input: bool = False) -> torch.Tensor:
    """``x @ weight.T + bias`` for 2-D contiguous-along-K operands by split-K weight streaming.

    ``silu_input``: x is [M, 2K], a SwiGLU's gate and up halves, and the product's input is
    ``silu(gate) * up`` computed as the tiles are loaded (kernels/silu_linear.py). ``k_chunk`` overrides
    :func:`decode_chunk` (tests use it to exercise the reduction on small K); ``config`` (a
    ``DECODE_CONFIGS`` entry) bypasses the autotuner. Any M works: rows beyond 64 are handled by further
    row tiles, though the prefill kernels are faster there.
    """
    M = x.shape[0]
    N, K = weight.shape
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    block_m = decode_block_m(M)
    sms = device_sms(x.device)
    chunk = k_chunk if k_chunk is not None else decode_chunk(N, K, block_m, sms)
    if chunk < 1:
        raise ValueError(f"linear decode: k_chunk must be a positive number of K elements, got {chunk}")
    splits = cdiv(K, chunk)
    partials = alloc.empty(splits, M, N, dtype=torch.float32, device=x.device) if splits > 1 else y
    counters = arrival_counters(x.device, cdiv(N, _MIN_BLOCK_N) * cdiv(M, block_m))
    upcast = interpreting() and x.dtype == torch.bfloat16
    grid = lambda META: (cdiv(N, META["BLOCK_N"]), splits, cdiv(M, block_m))
    args = (x, weight, bias if bias is not None else y, y, partials, counters, M, N, K,
            x.stride(0), weight.stride(0), y.stride(0), chunk, splits)
    flags = dict(HAS_BIAS=bias is not None, UPCAST=upcast, PRECISION=_precision(x.dtype, upcast), BLOCK_M=block_m,
                 SILU_INPUT=silu_input, **pdl.launch_options(x.device, "linear_decode"))
    if config is None:
        _decode[grid](*args, **flags)
    else:
        _linear_decode_kernel[grid](*args, **flags, **config)
    return y
