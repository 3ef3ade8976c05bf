"""Dense linear for many tokens, stream-K: the persistent kernel with its last waves split along K.

Math: y[m, n] = sum_k x[m, k] * weight[n, k] (+ bias[n]), as in kernels/linear_prefill.py, whose tile
code, grouped tile order and configs this kernel shares.

Why: the persistent kernel gives each of the P programs (one per SM) whole tiles, so a product of T
tiles takes ceil(T / P) rounds of one tile each. When T is a little over a multiple of P, the last
round runs with most SMs idle (*wave quantization*): Qwen2.5-7B's qkv projection (N = 4608, K = 3584)
at M = 4096 has 576 tiles of 128 x 256 on 132 SMs, 4.36 waves run in 5 rounds, and the persistent
kernel reached 0.84x cuBLAS there (H200, bench/results/NVIDIA_H200/linear_bench_run2.csv).

Measured (H200, bench/results/NVIDIA_H200/run26): at those prefill shapes the fix-up costs more than the
idle SMs did -- storing and summing 128 KB fp32 partials took 11 + 28 us of a 224 us product -- so the
persistent kernel's split tail (halves and quarters of the last round's tiles, computed whole along K,
kernels/linear_persistent.py) is the default there. Stream-K wins where there are far fewer tiles than SMs and
K is long: 128 x 4096 x 14336 and 128 x 3584 x 18944 ran at 1.5-1.8x the persistent kernel's speed, and
``kernels.linear.choose_linear_variant`` sends such products here.

Stream-K (Osama et al., 2023) splits the work of that last round, not just its tiles. In one launch:

- stream-K phase: the last ``S = T mod P`` tiles (all T when T < P) as ``S * ITERS`` K-iterations
  (``ITERS = cdiv(K, BLOCK_K)``), dealt out as equal contiguous ranges to ``min(P, S * sqrt(ITERS))``
  programs: each tile is cut among at most about sqrt(ITERS) programs (more pieces shorten the phase,
  but the program that sums a tile reads one fp32 partial per piece);
- data-parallel phase: the first ``T - S`` tiles, whole, in the persistent kernel's loop, on every
  program. The stream-K phase runs first, so that its fix-ups overlap other programs' whole tiles and
  every program ends on whole tiles.

The split pays only if the SMs the last round would leave idle wait longer than the fix-up costs:
``(P - S) * ITERS >= FIXUP_ITERS * P``, else S = 0 and this is the persistent kernel (at 4096^3 on 132
SMs, 116 of 132 SMs are busy in the last round: nothing to win).

A tile that one program covers whole is stored directly. A tile cut between programs is reduced as in
the split-K decode kernel (kernels/_split_k.py): each contributor stores its fp32 partial in its own
workspace slot, then counts its arrival on the tile's counter (acquire-release, after a barrier); the
last to arrive adds the partials in K order -- not arrival order, so the result is deterministic --
adds the bias, stores y and re-arms the counter. Nothing waits on another program, so the kernel cannot
deadlock, in the interpreter (which runs programs one by one) or on a card that does not run all P at once.

Slots: program p's first tile is slot 2p, its last (if different) slot 2p + 1; every other tile it
touches is whole. The workspace is 2P fp32 tiles (34 MB for 128 x 256 on 132 SMs, most of it unused).

Not batch-invariant: where K is cut depends on T, and so on M. A row's result is deterministic for a
given M but may differ in the last bits between two batch sizes (the persistent kernel is invariant
within an M bucket).
"""

from __future__ import annotations

import torch

from kernels import alloc
from kernels._split_k import arrival_counters
from kernels._triton import tl, triton
from kernels.device import device_sms
from kernels.linear_persistent import PERSISTENT_CONFIGS
from kernels.linear_prefill import (
    _flags,
    _keep,
    _linear_tile,
    _quick_bench,
    _store_tile,
    _tile_acc,
    _tile_coords,
    first_config_for_fp32,
    m_bucket,
)
from kernels.tuning import Tuned


@triton.jit
def _range_start(p, base, extra):
    """First K-iteration of program p when ``base * P + extra`` iterations are dealt out (the first
    ``extra`` programs take one more)."""
    return p * base + tl.minimum(p, extra)


@triton.jit
def _range_owner(i, base, extra):
    """The program whose range holds iteration i (the inverse of :func:`_range_start`)."""
    long_ranges = extra * (base + 1)
    return tl.where(i < long_ranges, i // (base + 1), extra + (i - long_ranges) // tl.maximum(base, 1))


@triton.jit
def _streamk_plan(tiles, iters, NUM_PROGRAMS: tl.constexpr, FIXUP_ITERS: tl.constexpr):
    """(tiles for the stream-K phase, programs that share them): the partial last wave, dealt out to at
    most sqrt(iters) programs a tile, if what that saves beats the fix-up; else (0, 0)."""
    partial_wave = tiles % NUM_PROGRAMS
    saved = (NUM_PROGRAMS - partial_wave) * iters  # iterations the idle SMs of the last round would wait
    use = (partial_wave > 0) & (saved >= FIXUP_ITERS * NUM_PROGRAMS)
    sk_tiles = tl.where(use, partial_wave, 0)
    per_tile = tl.maximum(tl.sqrt(iters.to(tl.float32)).to(tl.int32), 1)
    return sk_tiles, tl.minimum(NUM_PROGRAMS, sk_tiles * per_tile)


@triton.jit(do_not_specialize=["M", "M_BUCKET"])  # per-step values: compiled once
def _linear_streamk_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, ws_ptr, count_ptr, M, N, K, stride_xm, stride_wn, stride_ym, M_BUCKET,
    NUM_PROGRAMS: tl.constexpr, FIXUP_ITERS: tl.constexpr,
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    FLATTEN: tl.constexpr,
):
    pid = tl.program_id(0)
    tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
    iters = tl.cdiv(K, BLOCK_K)
    sk_tiles, sk_programs = _streamk_plan(tiles, iters, NUM_PROGRAMS, FIXUP_ITERS)
    dp_tiles = tiles - sk_tiles

    # Stream-K phase first: the fix-ups then overlap the data-parallel tiles of other programs, and
    # every program ends on whole tiles. This program's share of the last sk_tiles * iters iterations:
    total = sk_tiles * iters
    base = total // tl.maximum(sk_programs, 1)
    extra = total % tl.maximum(sk_programs, 1)
    it = tl.minimum(_range_start(pid, base, extra), total)
    end = tl.minimum(_range_start(pid + 1, base, extra), total)
    my_first_tile = it // iters
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    slot_offs = offs_m[:, None] * BLOCK_N + offs_n[None, :]
    while it < end:
        t = it // iters
        k_lo = it - t * iters
        k_hi = tl.minimum(iters, k_lo + (end - it))
        pid_m, pid_n = _tile_coords(dp_tiles + t, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        acc = _tile_acc(x_ptr, w_ptr, pid_m, pid_n, M, N, K, stride_xm, stride_wn, k_lo, k_hi,
                        UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
        last = (k_lo == 0) & (k_hi == iters)  # the whole tile is this program's
        if (k_lo != 0) | (k_hi != iters):
            slot = 2 * pid + (t != my_first_tile).to(tl.int32)
            tl.store(ws_ptr + slot.to(tl.int64) * (BLOCK_M * BLOCK_N) + slot_offs, acc)
            tl.debug_barrier()  # every thread's partial store happens before the release below
            first_owner = _range_owner(t * iters, base, extra)
            last_owner = _range_owner(t * iters + iters - 1, base, extra)
            arrived = tl.atomic_add(count_ptr + t, 1, sem="acq_rel")
            last = arrived == last_owner - first_owner
            if last:
                tl.debug_barrier()
                acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
                for q in range(first_owner, last_owner + 1):
                    q_slot = 2 * q + (t != _range_start(q, base, extra) // iters).to(tl.int32)
                    acc += tl.load(ws_ptr + q_slot.to(tl.int64) * (BLOCK_M * BLOCK_N) + slot_offs,
                                   cache_modifier=".cg")
                tl.store(count_ptr + t, 0)  # re-arm for the next launch
        if last:
            _store_tile(acc, b_ptr, y_ptr, pid_m, pid_n, M, N, stride_ym, HAS_BIAS, BLOCK_M, BLOCK_N)
        it += k_hi - k_lo

    # Data-parallel phase: whole tiles, exactly the persistent kernel's loop.
    for tile in tl.range(pid, dp_tiles, NUM_PROGRAMS, flatten=FLATTEN):
        pid_m, pid_n = _tile_coords(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
        _linear_tile(x_ptr, w_ptr, b_ptr, y_ptr, pid_m, pid_n, M, N, K, stride_xm, stride_wn, stride_ym,
                     HAS_BIAS, UPCAST, PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)


# --- configs as data ----------------------------------------------------------------------------
# The persistent kernel's list (kernels/linear_persistent.py): the data-parallel phase is that kernel, and
# the stream-K phase uses the same tiles.
STREAMK_CONFIGS = {vendor: [{k: v for k, v in c.items() if not k.startswith("COST_")} for c in configs]
                   for vendor, configs in PERSISTENT_CONFIGS.items()}
# The fix-up's cost in K-iterations of one program: split a partial wave only where the idle SMs of a
# last round would wait longer than this (counted over all P programs).
FIXUP_ITERS = 12

_streamk = Tuned(_linear_streamk_kernel, STREAMK_CONFIGS, key=["M_BUCKET", "N", "K"], keep=_keep,
                 do_bench=_quick_bench, prune_configs_by={"early_config_prune": first_config_for_fp32})


# --- launcher (inputs already validated and 2-D by kernels.linear) --------------------------------


def linear_streamk_2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      config: dict | None = None, programs: int | None = None,
                      fixup_iters: int = FIXUP_ITERS) -> torch.Tensor:
    """As :func:`kernels.linear_persistent.linear_persistent_2d`, with a partial last wave split along K.

    ``programs`` (default: the card's SM count) sets P; tests use small values to reach every way a range
    can fall on the tiles, and ``fixup_iters=0`` to split every partial wave. ``config`` bypasses the
    autotuner, as in the other launchers.
    """
    M, K = x.shape
    N = weight.shape[0]
    y = alloc.empty(M, N, dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return y
    programs = programs or device_sms(x.device)
    # Slots for the largest tile the autotuner may pick on this card (not another vendor's 256 x 256).
    tiles = _streamk.candidates() if config is None else [config]
    tile = max(c["BLOCK_M"] * c["BLOCK_N"] for c in tiles)
    workspace = alloc.empty(2 * programs * tile, dtype=torch.float32, device=x.device)
    counters = arrival_counters(x.device, programs)  # one per stream-K tile, fewer than P
    args = (x, weight, bias if bias is not None else y, y, workspace, counters, M, N, K,
            x.stride(0), weight.stride(0), y.stride(0), m_bucket(M))
    flags = dict(NUM_PROGRAMS=programs, FIXUP_ITERS=fixup_iters, HAS_BIAS=bias is not None, **_flags(x))
    if config is None:
        _streamk[(programs,)](*args, **flags)
    else:
        _linear_streamk_kernel[(programs,)](*args, **flags, **config)
    return y
