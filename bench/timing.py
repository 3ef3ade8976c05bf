"""Timing callables on the GPU: device events, median of many repeats, warm-up excluded, cold inputs.

Kernels of a few microseconds cannot be timed launch by launch: the host's launch overhead (tens of
microseconds in Python) lands between the events. So :func:`time_each` captures each callable, called
over and over, in a CUDA graph and times the replays (``triton.testing.do_bench_cudagraph``, median of
the replays). Graph replays skip do_bench's L2 flush, so the calls rotate through several input sets
whose total exceeds twice L2 (:func:`input_sets_for`); only tiny problems, latency-bound anyway, stay in
L2 (the capped number of sets fits in it), much as they would inside a model step, where the previous
kernel has just written them. Callables that cannot be captured (they synchronise with the host) fall
back to ``triton.testing.do_bench``: events around each call, L2 flushed before each.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

WARMUP_MS = 25
REP_MS = 100
MAX_SETS = 128
MAX_ROTATION_BYTES = 2 << 30


def gpu_missing(script: str) -> bool:
    """True, after saying so on stderr, when torch sees no CUDA or ROCm GPU: a GPU script's first check."""
    import sys

    import torch

    if torch.cuda.is_available():
        return False
    print(f"{script}: needs a CUDA or ROCm GPU; none is visible to torch here", file=sys.stderr)
    return True


def time_ms(fn: Callable[[], Any], *, graph: bool = False, warmup_ms: int = WARMUP_MS, rep_ms: int = REP_MS) -> float:
    """Median milliseconds of ``fn()`` on the current device (the first call, which compiles, excluded)."""
    import torch
    import triton.testing

    fn()  # compile / autotune outside the timed region
    torch.cuda.synchronize()
    if graph:
        warm_capture_stream(fn)
        return float(triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))
    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def warm_capture_stream(fn: Callable[[], Any]) -> None:
    """Call ``fn()`` once on the stream that ``torch.cuda.graph`` captures on by default.

    Split-K arrival counters are made per stream and never during a capture
    (``kernels._split_k.arrival_counters``); ``do_bench_cudagraph`` captures on torch's default capture
    stream, which no eager launch has used, so a split launch would refuse to be captured there without this.
    """
    import torch

    torch.cuda.graph(torch.cuda.CUDAGraph())  # makes torch's default capture stream if it is not there yet
    stream = torch.cuda.graph.default_capture_stream
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()


def input_sets_for(set_bytes: float, l2_bytes: int) -> int:
    """How many distinct input sets keep a rotation's working set above 2x L2 (at least 1)."""
    if set_bytes <= 0:
        return 1
    wanted = int(2 * l2_bytes // set_bytes) + 1
    return max(1, min(wanted, MAX_SETS, int(MAX_ROTATION_BYTES // set_bytes)))


def time_rotating(fn: Callable[..., Any], input_sets: Sequence[dict[str, Any]], *, graph: bool = False) -> float:
    """Median milliseconds of ``fn(**inputs)``, each call taking the next of ``input_sets``."""
    cycle = itertools.cycle(input_sets)
    return time_ms(lambda: fn(**next(cycle)), graph=graph)


def time_each(fns: Sequence[Callable[..., Any]], input_sets: Sequence[dict[str, Any]]) -> tuple[list[float], str]:
    """Times of every callable on the same rotated inputs, all by one method: ``"graph"`` or ``"events"``.

    Every callable first runs once on every input set, outside any capture: whatever it builds lazily per
    input (a baseline's dense copy of a quantized weight, ``kernels._dense_cache``) is built then. Built
    inside the capture instead, that work would be replayed with every call and timed as part of it.
    """
    import torch

    for fn in fns:
        for inputs in input_sets:
            fn(**inputs)
    torch.cuda.synchronize()
    try:
        return [time_rotating(fn, input_sets, graph=True) for fn in fns], "graph"
    except RuntimeError:  # a host sync inside fn makes capture fail: time every callable with events instead
        torch.cuda.synchronize()
        return [time_rotating(fn, input_sets, graph=False) for fn in fns], "events"
