"""Split-K for the decode kernels (dense and quantized linears), reduced inside the same launch.

At decode (M <= 16) a [N, K] weight tiled only along N gives N / BLOCK_N programs: 32 for a 4096-wide
layer at BLOCK_N = 128, a quarter of an H100's multiprocessors, and the others' share of the memory
bandwidth is lost. So K is cut into ``splits`` chunks as well:

    program (n_tile, s, m_tile) computes  P[s, m, n] = sum over k in chunk s of x[m, k] * W[n, k]
    the last program of a tile           y[m, n]    = P[0, m, n] + ... + P[splits-1, m, n] (+ bias)

Each program stores its fp32 partial, then increments an arrival counter for its output tile (an
atomic with acquire-release ordering, after a barrier so that every thread's stores precede it); the
program that sees the count reach ``splits`` adds the partials in split order -- not arrival order, so
the result is deterministic -- writes y, and re-arms the counter to zero for the next launch.

The split count depends on the shape, the card and the M bucket (1-4 or 5-16) only (``split_plan``),
never on the tuned config, so a row's output is the same whichever batch of its bucket it was decoded
in. Partials are [splits, M, N] fp32; the count is capped so that writing and reading them at the
bucket's largest M costs at most a quarter of the weight's bytes.
"""

from __future__ import annotations

import torch

from kernels._triton import tl, triton
from kernels.device import num_sms

PROGRAMS_PER_SM = 2  # aim: about this many programs per SM, counting 128-row tiles of N
REFERENCE_BLOCK_N = 128


def split_plan(M: int, N: int, units: int, weight_bytes: int, device: torch.device,
               programs_per_sm: int | None = None) -> tuple[int, int]:
    """(splits, units per split) for a decode product whose K is ``units`` indivisible chunks.

    Depends on M only through its bucket (1-4 or 5-16), whose largest M bounds the partials' bytes.
    ``programs_per_sm`` (default ``PROGRAMS_PER_SM``) lets a kernel aim at a fuller card; it must not
    depend on M within a bucket either.
    """
    n_tiles = triton.cdiv(N, REFERENCE_BLOCK_N)
    wanted = triton.cdiv((programs_per_sm or PROGRAMS_PER_SM) * num_sms(device.index or 0), n_tiles)
    rows = 4 if M <= 4 else 16
    cap = max(1, weight_bytes // (4 * 8 * rows * max(N, 1)))
    splits = max(1, min(wanted, cap, units))
    per_split = triton.cdiv(units, splits)
    if units % per_split:  # a short last split: every tile waits for its full-length ones
        per_split = _even_per_split(units, splits, cap) or per_split
    return triton.cdiv(units, per_split), per_split


def _even_per_split(units: int, splits: int, cap: int) -> int | None:
    """Units per split for the split count nearest ``splits`` (ties: the larger) that divides ``units``, within
    2/3x to 2x of it and at most ``cap``; None if there is none.

    H200, W8A16 GEMV at 14336 x 4096 (8 units): 3 splits of 3, 3 and 2 units took 20.0 us, 4 of 2 took 19.3
    (bench/results/NVIDIA_H200/run10/w8_configs_call2.csv, split aims 2 and 3-4).
    """
    counts = [c for c in range(max(1, -(-2 * splits // 3)), min(2 * splits, cap, units) + 1) if units % c == 0]
    if not counts:
        return None
    return units // min(counts, key=lambda c: (abs(c - splits), -c))


def decode_split(M: int, N: int, units: int, weight_bytes: int, device: torch.device,
                 programs_per_sm: int | None = None):
    """(splits, units per split, fp32 partials, arrival counters) for one launch; one split above M = 16."""
    if M > 16:
        return 1, units, torch.empty(1, dtype=torch.float32, device=device), arrival_counters(device, 1)
    splits, per_split = split_plan(M, N, units, weight_bytes, device, programs_per_sm)
    partials = torch.empty(splits * M * N if splits > 1 else 1, dtype=torch.float32, device=device)
    # Enough counters for the narrowest config (BLOCK_N = 16).
    return splits, per_split, partials, arrival_counters(device, triton.cdiv(N, 16) * triton.cdiv(M, 16))


_COUNTERS: dict[tuple, torch.Tensor] = {}
_RETIRED: list[torch.Tensor] = []  # outgrown buffers a captured CUDA graph may still point at


class CountersDuringCapture(RuntimeError):
    """A split-K launch met no (or too few) arrival counters while a CUDA graph was being captured."""


def arrival_counters(device: torch.device, tiles: int) -> torch.Tensor:
    """Zeroed int32 counters, one per output tile, shared by launches on one device and stream.

    Every launch leaves them zero (the last program of a tile re-arms its counter), so they are made
    once; two streams get separate buffers because launches on them may overlap.

    They must be made outside CUDA-graph capture: inside one, ``torch.zeros`` only records the zero fill
    into that graph, so the buffer holds whatever its memory held until that graph first replays, and
    other graphs (or eager launches) that use it before then count arrivals from garbage -- a tile that
    never finishes, or one reduced from unwritten partials. So a capture that would have to create or
    grow them raises :class:`CountersDuringCapture`; run the same launch once eagerly on the capturing
    stream first (engine.decode_graphs does: warm-up and capture share one stream).
    """
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device.type, device.index, stream)
    buf = _COUNTERS.get(key)
    if buf is None or buf.numel() < tiles:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise CountersDuringCapture(
                f"split-K arrival counters for {tiles} tiles do not exist yet on the capturing stream; run "
                "this launch once eagerly on the same stream before capturing it in a CUDA graph")
        if buf is not None:
            _RETIRED.append(buf)
        buf = torch.zeros(max(tiles, 4096), dtype=torch.int32, device=device)
        _COUNTERS[key] = buf
    return buf


@triton.jit
def reduce_tile(acc, part_ptr, count_ptr, offs_m, offs_n, M, N, split, SPLITS):
    """(whether this program holds its tile's full sum, that sum) for a [rows, BLOCK_N] fp32 ``acc``.

    One split: this program's own sum. Several: publish the partial, count the arrival, and in the last
    program to arrive add the partials in split order and re-arm the counter; the others get False."""
    last = SPLITS == 1
    if SPLITS > 1:
        out_mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
        cols = offs_n[None, :]
        tl.store(part_ptr + (split * M + offs_m).to(tl.int64)[:, None] * N + cols, acc, mask=out_mask)
        tl.debug_barrier()  # every thread's partial store happens before the release below
        tile = tl.program_id(2) * tl.num_programs(0) + tl.program_id(0)
        arrived = tl.atomic_add(count_ptr + tile, 1, sem="acq_rel")
        last = arrived == SPLITS - 1
        if last:
            tl.debug_barrier()
            acc = tl.zeros(acc.shape, dtype=tl.float32)
            for s in range(0, SPLITS):
                rows = (s * M + offs_m).to(tl.int64)
                acc += tl.load(part_ptr + rows[:, None] * N + cols, mask=out_mask, other=0.0, cache_modifier=".cg")
            tl.store(count_ptr + tile, 0)  # re-arm for the next launch
    return last, acc


@triton.jit
def finish_tile(acc, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, M, N, stride_ym, split, SPLITS,
                HAS_BIAS: tl.constexpr):
    """Write y for this tile directly (one split) or through the partials and the arrival counter."""
    last, acc = reduce_tile(acc, part_ptr, count_ptr, offs_m, offs_n, M, N, split, SPLITS)
    if last:
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        out_mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
        y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=out_mask)
