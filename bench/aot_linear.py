"""Compile the dense prefill linear kernels for a Hopper GPU on a machine without one, and read the result.

The interpreter runs the persistent kernel's TMA path through Python's descriptors, not the compiler's:
an error only the GPU compiler raises, or a config that spills once an edit adds registers, passes every
CPU test. This compiles every CUDA config of the tiled and persistent kernels (the persistent one with
pointer loads and with TMA, its split tail on) for sm_90, as their launchers would launch them on a
2048 x 4608 x 3584 bf16 product, with the compiler ``bench.aot_quant`` uses.

``python -m bench.aot_linear`` prints registers, stack bytes and the largest loop's length per config;
``--check`` exits nonzero on a compile error or a spill (the test suite runs it in a subprocess).
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import sys

import torch

from bench.aot_quant import available, compile_sm90, inspect

M, N, K = 2047, 4608, 3584  # M odd: the launchers' M is never specialised on
SMS = 132


@functools.cache
def launches() -> list:
    """(label, kernel, positional args, keyword args) for every CUDA config the GPU would compile."""
    from kernels.linear_persistent import PERSISTENT_CONFIGS, _linear_persistent_kernel
    from kernels.linear_prefill import TILED_CONFIGS, _keep, _linear_tiled_kernel, m_bucket

    t = torch.empty(16, dtype=torch.bfloat16)  # only the dtype and the alignment reach the compiler
    args = (t, t, t, t, M, N, K, K, K, N, m_bucket(M))
    flags = dict(HAS_BIAS=False, UPCAST=False, PRECISION="tf32")
    out = []
    for c in TILED_CONFIGS["cuda"]:
        if _keep(c):
            out.append((f"tiled {c}", _linear_tiled_kernel, args, {**flags, **c}))
    for c in PERSISTENT_CONFIGS["cuda"]:
        if _keep(c):
            for tma in (False, True):
                kw = {**flags, "NUM_PROGRAMS": SMS, "SPLIT_TAIL": True, "TMA": tma, "COST_2": 100, "COST_4": 100, **c}
                out.append((f"persistent tma={tma} {c}", _linear_persistent_kernel, args, kw))
    return out


def _compile_one(index: int) -> tuple[str, bool]:
    label, kernel, args, kwargs = launches()[index]
    try:
        report = inspect(compile_sm90(kernel, args, dict(kwargs)))
    except Exception as e:  # every config is tried; each failure is reported with its cause
        return f"FAILED {label}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}", True
    spill = f"  SPILLS {report.stack_bytes} bytes" if report.stack_bytes else ""
    line = f"ok {label}: {report.registers} registers, largest loop {report.loop_instructions} instructions{spill}"
    return line, bool(report.stack_bytes)


def main() -> int:
    why = available()
    if why:
        print(f"aot_linear: cannot compile for sm_90 here: {why}", file=sys.stderr)
        return 2
    count = len(launches())
    jobs = max(1, min(os.cpu_count() or 1, 8, count))
    failures = 0
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for line, failed in pool.map(_compile_one, range(count)):
            failures += failed
            print(line, flush=True)
    return 1 if failures and "--check" in sys.argv[1:] else 0


if __name__ == "__main__":
    sys.exit(main())
