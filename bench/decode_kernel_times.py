"""Where a paged decode launch's time goes: each kernel of ours and of SDPA's, timed by the profiler.

``bench/tune_attention.py --splits`` says how long a whole launch takes (CUDA-graph replays); this says
which of its kernels takes it. For each case of the split study, a CUDA graph of back-to-back calls (the
inputs rotating, as ``bench.timing`` rotates them) is replayed under ``torch.profiler``. Per kernel name it
reports the mean device time of a launch and its share of the critical path (how much later than the
kernel before it each kernel ends: ``bench.decode_profile.critical_path``; under PDL a kernel starts early
and waits, so its own duration overstates it). Writes ``<out>/decode_kernel_times.csv``::

    PYTHONPATH=. python3 bench/decode_kernel_times.py --out "$OUT" [--splits auto 64 128] [--calls 16]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

from bench.decode_profile import critical_path, event_device_us, profiled_replays
from bench.report import write_rows
from bench.timing import gpu_missing, warm_capture_stream
from bench.tune_attention import SPLIT_CASES, _short
from kernels import registry


def kernel_times(fn, sets, calls: int, replays: int) -> list[dict]:
    """Per kernel name: launches per call, mean microseconds per launch, critical-path microseconds per call."""
    cycle = itertools.cycle(sets)
    warm_capture_stream(lambda: fn(**next(cycle)))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn(**next(cycle))
    prof = profiled_replays(graph, replays)
    n = calls * replays
    path = critical_path(prof, n)
    rows = []
    for event in prof.key_averages():
        device_us = event_device_us(event)
        if device_us and event.count >= n:
            rows.append({"kernel": event.key[:60], "launches_per_call": event.count / n,
                         "us_per_launch": device_us / event.count, "path_us_per_call": path.get(event.key, 0.0)})
    return sorted(rows, key=lambda r: -r["path_us_per_call"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--splits", nargs="*", default=["auto", "64"], help="split counts of ours to profile (auto: policy)")
    p.add_argument("--calls", type=int, default=16, help="calls captured in one graph")
    p.add_argument("--replays", type=int, default=8)
    args = p.parse_args(argv)
    if gpu_missing("decode_kernel_times"):
        return 2
    op = registry.get("paged_decode_attention")
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for case in SPLIT_CASES:
        sets = [op.make_inputs(case, "cuda", gen) for _ in range(4)]
        impls = {f"s{s}": (lambda n: lambda **kw: op.triton(**kw, num_splits=n))(None if s == "auto" else int(s))
                 for s in args.splits}
        impls["sdpa"] = op.baseline
        for name, fn in impls.items():
            for r in kernel_times(fn, sets, args.calls, args.replays):
                rows.append({"case": _short(case), "impl": name, **r})
                print(f"{_short(case):70s} {name:6s} {r['kernel']:60s} {r['launches_per_call']:4.1f} "
                      f"{r['us_per_launch']:7.2f} us/launch {r['path_us_per_call']:7.2f} us/call on the path",
                      flush=True)
        del sets
        torch.cuda.empty_cache()
    write_rows(rows, Path(args.out) / "decode_kernel_times.csv", float_format=".4g")
    return 0


if __name__ == "__main__":
    sys.exit(main())
