"""Dense linear for one to four tokens: a GEMV on the CUDA cores, split-K reduced in the same launch.

Math: y[m, n] = sum_k x[m, k] * weight[n, k] (+ bias[n]), weight [N, K] row-major, accumulated in float32.

Why another decode kernel: the split-K kernel of ``kernels.linear_decode`` pads M to 16 rows for the
tensor cores and moves each weight tile through shared memory into the dot-operand layout. At M <= 4 none
of that is needed: every weight element is used by at most four FMAs. Here a program owns BLOCK_N weight
rows and one chunk of K, loads [BLOCK_N, BLOCK_K] tiles straight into registers (16-byte vectors along K,
coalesced along the row), multiplies them by the rows of x in fp32 and sums along K at the end. On the
small layers of a 0.5B-1B model (1-20 MB of weight), where a decode product lasts a few microseconds,
what is left is the launch, one memory latency per loop trip, and the split-K arrival.

Rows of x: a program computes ROWS (1, 2 or 4, from M) rows with one accumulator each; a launch with
more rows tiles M by ROWS along the grid's third axis (correct for any M, meant for M <= 4). Rows past M
re-read row M - 1 (never stored), weight rows past N re-read row N - 1 (never stored): no load masks
except along K in a chunk that is not whole tiles.

Configs per row count. Each accumulator is a whole [BLOCK_N, BLOCK_K] fp32 tile (FMAs only in the loop,
one reduction along K at the end), so ROWS of them cost ROWS * BLOCK_N * BLOCK_K / threads registers a
thread. The tiles that stream fastest for one row hold 64 a thread; four of them spill. Run 7 (H200) timed
M = 4 through the one-row configs at 0.31-0.94x cuBLAS. Two to four rows therefore tune over their own
list (``GEMV_ROWS_CONFIGS``, at most 64 accumulator registers a thread at four rows), keyed by ROWS too.
The dispatcher (``kernels.linear.choose_linear_variant``) sends M = 2-4 to the split-K kernel since run 22;
the row tiles serve ``variant="gemv"`` and the A/B scripts.

Split-K and batch invariance: the chunk (:func:`gemv_chunk`) depends on N, K and the card only, and the
autotuner's key (N, K, ROWS) leaves M out, so within a row count one config serves every M: a row's output
is bitwise the same whether it is decoded with one or with three others (M = 3 and 4 share ROWS = 4;
tested). Across row counts the tiles differ and the sums agree to rounding, as across the split-K kernel's
M buckets. The partials are reduced in the launch by ``kernels._split_k.finish_tile``.
"""

from __future__ import annotations

import torch

from kernels import alloc, pdl
from kernels._quant_gemv import put_row
from kernels._quant_launch import gemv_rows
from kernels._split_k import arrival_counters, finish_tile
from kernels._triton import tl, triton
from kernels.device import device_sms, interpreting, vendor
from kernels.linear_decode import split_chunk
from kernels.linear_prefill import cdiv
from kernels.tuning import Tuned, graph_bench

GEMV_MAX_M = 4  # the rows it is built for (any M works, by tiles of 4); the dispatcher uses it at M = 1 only
GEMV_UNIT = 512  # K chunks are whole multiples of this (every BLOCK_K below divides it)
ROW_TILE = 16  # the split rule counts column tiles of this many weight rows


@triton.jit
def _x_slice(x_row, k, offs_k, k_ok, EVEN: tl.constexpr):
    if EVEN:  # noqa: SIM108  (a compile-time branch: no mask at all)
        xv = tl.load(x_row + k + offs_k)
    else:
        xv = tl.load(x_row + k + offs_k, mask=k_ok, other=0.0)
    return xv


@triton.jit
def _row_dot(acc, w, x_row, k, offs_k, k_ok, K, EVEN: tl.constexpr, SILU: tl.constexpr):
    """acc + w * x[k : k + BLOCK_K]; with SILU the row is [gate | up] (2K wide) and x is silu(gate) * up,
    computed and rounded to x's dtype exactly as kernels/silu_and_mul.py stores it."""
    xv = _x_slice(x_row, k, offs_k, k_ok, EVEN)
    if SILU:
        a = xv.to(tl.float32)
        b = _x_slice(x_row + K, k, offs_k, k_ok, EVEN).to(tl.float32)
        xv = (a / (1.0 + tl.exp(-a)) * b).to(xv.dtype)
    return acc + w * xv.to(tl.float32)[None, :]


@triton.jit
def _rows_dot(acc0, acc1, acc2, acc3, w, x0, x1, x2, x3, k, offs_k, k_ok, K,
              ROWS: tl.constexpr, EVEN: tl.constexpr, SILU: tl.constexpr):
    """One weight tile times the ROWS rows of x it serves (accumulators past ROWS pass through)."""
    acc0 = _row_dot(acc0, w, x0, k, offs_k, k_ok, K, EVEN, SILU)
    if ROWS > 1:
        acc1 = _row_dot(acc1, w, x1, k, offs_k, k_ok, K, EVEN, SILU)
    if ROWS > 2:
        acc2 = _row_dot(acc2, w, x2, k, offs_k, k_ok, K, EVEN, SILU)
        acc3 = _row_dot(acc3, w, x3, k, offs_k, k_ok, K, EVEN, SILU)
    return acc0, acc1, acc2, acc3


@triton.jit
def weight_slice(w_rows, k, offs_k, k_end, EVEN: tl.constexpr):
    """The [BLOCK_N, BLOCK_K] weight tile at ``k`` in fp32, and which of its columns lie in the chunk
    (unused when EVEN: no masks at all)."""
    if EVEN:
        k_ok = offs_k < 0
        w = tl.load(w_rows + k)
    else:
        k_ok = (k + offs_k) < k_end
        w = tl.load(w_rows + k, mask=k_ok[None, :], other=0.0)
    return w.to(tl.float32), k_ok


@triton.jit
def first_weight_slice(w_rows, k_start, offs_k, k_end, EVEN: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr):
    """A chunk's first weight tile, and the PDL wait for the kernel that wrote x (kernels/pdl.py): a static
    weight's tile (PREFETCH) is read before the wait, any other after it."""
    if PREFETCH:
        w, k_ok = weight_slice(w_rows, k_start, offs_k, k_end, EVEN)
        pdl.enter(PDL)
    else:
        pdl.enter(PDL)
        w, k_ok = weight_slice(w_rows, k_start, offs_k, k_end, EVEN)
    return w, k_ok


@triton.jit(do_not_specialize=["M"])  # a per-step value: compiled once per ROWS
def _gemv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr, M, N, K, stride_xm, stride_wn, stride_ym, K_CHUNK, SPLITS,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, EVEN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PDL: tl.constexpr, PREFETCH: tl.constexpr = False, SILU: tl.constexpr = False,
):
    pdl.start(PDL)
    pid_n, split, pid_m = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_m = pid_m * ROWS + tl.arange(0, ROWS)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    k_start = split * K_CHUNK
    k_end = tl.minimum(k_start + K_CHUNK, K)
    w_rows = w_ptr + tl.minimum(offs_n, N - 1).to(tl.int64)[:, None] * stride_wn + offs_k[None, :]
    m0 = pid_m * ROWS
    x0 = x_ptr + tl.minimum(m0, M - 1).to(tl.int64) * stride_xm
    x1 = x_ptr + tl.minimum(m0 + 1, M - 1).to(tl.int64) * stride_xm
    x2 = x_ptr + tl.minimum(m0 + 2, M - 1).to(tl.int64) * stride_xm
    x3 = x_ptr + tl.minimum(m0 + 3, M - 1).to(tl.int64) * stride_xm
    acc0 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    acc1, acc2, acc3 = acc0, acc0, acc0
    w, k_ok = first_weight_slice(w_rows, k_start, offs_k, k_end, EVEN, PDL, PREFETCH)
    acc0, acc1, acc2, acc3 = _rows_dot(acc0, acc1, acc2, acc3, w, x0, x1, x2, x3, k_start, offs_k, k_ok, K,
                                       ROWS, EVEN, SILU)
    for k in range(k_start + BLOCK_K, k_end, BLOCK_K):
        w, k_ok = weight_slice(w_rows, k, offs_k, k_end, EVEN)
        acc0, acc1, acc2, acc3 = _rows_dot(acc0, acc1, acc2, acc3, w, x0, x1, x2, x3, k, offs_k, k_ok, K,
                                           ROWS, EVEN, SILU)
    local = tl.arange(0, ROWS)
    y = put_row(tl.zeros((ROWS, BLOCK_N), dtype=tl.float32), local, 0, tl.sum(acc0, axis=1))
    if ROWS > 1:
        y = put_row(y, local, 1, tl.sum(acc1, axis=1))
    if ROWS > 2:
        y = put_row(y, local, 2, tl.sum(acc2, axis=1))
        y = put_row(y, local, 3, tl.sum(acc3, axis=1))
    finish_tile(y, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS, HAS_BIAS)


# --- configs as data ----------------------------------------------------------------------------
# BLOCK_K divides GEMV_UNIT. First: the interpreter's choice (small tiles, cheap on a CPU). Wider BLOCK_K
# keeps more 16-byte loads in flight per thread (a [16, 512] bf16 tile is eight per thread at 4 warps).
GEMV_CONFIGS = {
    "cuda": [
        dict(BLOCK_N=16, BLOCK_K=128, num_warps=4, num_stages=1),
        dict(BLOCK_N=16, BLOCK_K=256, num_warps=4, num_stages=3),
        dict(BLOCK_N=16, BLOCK_K=512, num_warps=4, num_stages=2),
        dict(BLOCK_N=8, BLOCK_K=512, num_warps=4, num_stages=2),
        dict(BLOCK_N=32, BLOCK_K=256, num_warps=4, num_stages=3),
        dict(BLOCK_N=32, BLOCK_K=512, num_warps=8, num_stages=2),
        dict(BLOCK_N=8, BLOCK_K=256, num_warps=2, num_stages=3),
        dict(BLOCK_N=64, BLOCK_K=128, num_warps=8, num_stages=3),
    ],
    "hip": [
        dict(BLOCK_N=16, BLOCK_K=128, num_warps=4, num_stages=1),
        dict(BLOCK_N=16, BLOCK_K=256, num_warps=4, num_stages=2),
        dict(BLOCK_N=32, BLOCK_K=256, num_warps=4, num_stages=2),
    ],
}
# Two to four rows: accumulators of [BLOCK_N, BLOCK_K] / threads = 16 fp32 a thread and row (64 at four
# rows); first: the interpreter-sized tile, as above.
GEMV_ROWS_CONFIGS = {
    "cuda": [
        dict(BLOCK_N=16, BLOCK_K=128, num_warps=4, num_stages=3),
        dict(BLOCK_N=8, BLOCK_K=256, num_warps=4, num_stages=3),
        dict(BLOCK_N=4, BLOCK_K=512, num_warps=4, num_stages=2),
        dict(BLOCK_N=8, BLOCK_K=512, num_warps=8, num_stages=2),
        dict(BLOCK_N=16, BLOCK_K=256, num_warps=8, num_stages=2),
        dict(BLOCK_N=32, BLOCK_K=128, num_warps=8, num_stages=3),
    ],
    "hip": [
        dict(BLOCK_N=16, BLOCK_K=128, num_warps=4, num_stages=1),
        dict(BLOCK_N=8, BLOCK_K=256, num_warps=4, num_stages=2),
    ],
}
_MIN_BLOCK_N = min(c["BLOCK_N"] for table in (GEMV_CONFIGS, GEMV_ROWS_CONFIGS)
                   for c in table["cuda"] + table["hip"])


def _tile(c) -> tuple:
    """A config's tile and launch shape, for a config dict or a ``triton.Config``."""
    if isinstance(c, dict):
        return c["BLOCK_N"], c["BLOCK_K"], c["num_warps"], c["num_stages"]
    return c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps, c.num_stages


def _configs_for_rows(configs, named_args, **kwargs):
    """One row tunes over GEMV_CONFIGS, two to four over GEMV_ROWS_CONFIGS (the autotuner holds both)."""
    table = GEMV_CONFIGS if kwargs.get("ROWS", 1) == 1 else GEMV_ROWS_CONFIGS
    wanted = {_tile(c) for c in table["cuda" if interpreting() else vendor()]}
    return [c for c in configs if _tile(c) in wanted] or configs[:1]


_gemv = Tuned(_gemv_kernel, {v: GEMV_CONFIGS[v] + GEMV_ROWS_CONFIGS[v] for v in GEMV_CONFIGS},
              key=["N", "K", "ROWS"], cold_weight="w_ptr",
              do_bench=graph_bench, prune_configs_by={"early_config_prune": _configs_for_rows})


def gemv_chunk(N: int, K: int, sms: int) -> int:
    """K elements per split for an [N, K] weight on a GPU with ``sms`` SMs, a multiple of GEMV_UNIT.

    As many splits as keep N/16 column tiles times the splits within PROGRAMS_PER_SM programs per SM
    (rounded down: a layer whose column tiles alone come near that is not split), at most K/GEMV_UNIT of
    them. Depends on the shape and the card, never on M or the config: this keeps the GEMV batch-invariant.
    """
    return split_chunk(N, K, sms, row_tile=ROW_TILE, unit=GEMV_UNIT)


def gemv_split(x: torch.Tensor, M: int, N: int, K: int, rows: int, y: torch.Tensor, k_chunk: int | None = None):
    """(chunk, splits, fp32 partials, arrival counters, EVEN) for a GEMV launch of M rows of x, ``rows``
    per program, writing ``y`` (the partials' stand-in when there is one split)."""
    sms = device_sms(x.device)
    chunk = k_chunk if k_chunk is not None else gemv_chunk(N, K, sms)
    if chunk < 1:
        raise ValueError(f"linear gemv: k_chunk must be a positive number of K elements, got {chunk}")
    splits = cdiv(K, chunk)
    partials = alloc.empty(splits, M, N, dtype=torch.float32, device=x.device) if splits > 1 else y
    counters = arrival_counters(x.device, cdiv(N, _MIN_BLOCK_N) * cdiv(M, rows))
    # EVEN: every chunk is whole BLOCK_K tiles (BLOCK_K divides GEMV_UNIT, which divides a default chunk).
    return chunk, splits, partials, counters, K % chunk == 0 and chunk % GEMV_UNIT == 0


def linear_gemv_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   config: dict | None = None, k_chunk: int | None = None, silu_input: bool = False) -> torch.Tensor:
    """``x @ weight.T + bias`` for 2-D contiguous-along-K operands, ROWS rows of x per program.

    ``silu_input``: x is [M, 2K], a SwiGLU's gate and up halves, and the product's input is
    ``silu(gate) * up``, formed as each slice is loaded (kernels/silu_linear.py). ``k_chunk`` overrides
    :func:`gemv_chunk` (tests use it to exercise the reduction on small K); ``config`` (a ``GEMV_CONFIGS``
    entry) bypasses the autotuner. Any M works, by tiles of ROWS rows, though M <= 4 is what it is for.
    """
    M = x.shape[0]
    N, K = weight.shape
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    rows = gemv_rows(M)
    chunk, splits, partials, counters, even = gemv_split(x, M, N, K, rows, y, k_chunk)
    grid = lambda META: (cdiv(N, META["BLOCK_N"]), splits, cdiv(M, rows))
    args = (x, weight, bias if bias is not None else y, y, partials, counters, M, N, K,
            x.stride(0), weight.stride(0), y.stride(0), chunk, splits)
    launch = pdl.launch_options(x.device, "linear_gemv")
    flags = dict(HAS_BIAS=bias is not None, ROWS=rows, EVEN=even, SILU=silu_input,
                 PREFETCH=bool(launch["PDL"]) and pdl.is_static(weight), **launch)
    if config is None:
        _gemv[grid](*args, **flags)
    else:
        _gemv_kernel[grid](*args, **flags, **config)
    return y
