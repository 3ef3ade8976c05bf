"""Timing a callable on the GPU: device events, median of many repeats, warm-up excluded, cold L2.

``time_ms(fn)`` times one callable with ``triton.testing.do_bench`` (which flushes L2 before every repeat
and times each with CUDA events). ``time_rotating(fn, input_sets)`` cycles through several input sets so
consecutive calls never find their operands in L2 even where the flush is skipped (CUDA-graph replays,
which remove the launch gaps that dominate kernels of a few microseconds). ``input_sets_for`` says how
many sets a working set needs: enough to exceed twice L2, within a memory cap.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

WARMUP_MS = 25
REP_MS = 100
MAX_SETS = 32
MAX_ROTATION_BYTES = 2 << 30


def time_ms(fn: Callable[[], Any], *, warmup_ms: int = WARMUP_MS, rep_ms: int = REP_MS, graph: bool = False) -> float:
    """Median milliseconds of ``fn()`` on the current device (the first calls, which compile, excluded)."""
    import triton.testing

    fn()  # compile / autotune outside the timed region
    if graph:
        return float(triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median"))
    return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))


def input_sets_for(set_bytes: float, l2_bytes: int) -> int:
    """How many distinct input sets keep a rotation's working set above 2x L2 (at least 1)."""
    if set_bytes <= 0:
        return 1
    wanted = int(2 * l2_bytes // set_bytes) + 1
    return max(1, min(wanted, MAX_SETS, int(MAX_ROTATION_BYTES // set_bytes)))


def time_rotating(fn: Callable[..., Any], input_sets: Sequence[dict[str, Any]], **kwargs) -> float:
    """Median milliseconds of ``fn(**inputs)``, each call taking the next of ``input_sets``."""
    cycle = itertools.cycle(input_sets)
    return time_ms(lambda: fn(**next(cycle)), **kwargs)
