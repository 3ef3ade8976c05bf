"""A/B of one op's implementations on a GPU: the shipped kernel against edited variants, same process, same inputs.

    python -m bench.impl_ab OP [--impls triton my_variant ...] [--import MODULE ...] [--cases MODULE:NAME]
                            [--repeat 2] [--csv out.csv] [--deadline-s 300]

An edited kernel is registered as a variant of the op (``registry.register_impl``), usually by a module of
its own: ``--import`` imports such modules first (they must be importable: on ``PYTHONPATH``). ``--impls``
picks the implementations to time (default: ``triton`` and every registered variant). The cases are the
op's ``bench_cases()``, or the list ``NAME`` in ``MODULE`` (the shapes an edit is about, ragged lengths say).

For each case the inputs are made once, rotated as the sweep rotates them (``bench.timing``: CUDA-graph
replays, working set beyond L2). Every implementation's output on the first input set is compared with the
first implementation's (``same_bits``, ``max_abs_diff``; not for ops that write into their inputs). Then all
of them, and the op's baseline, are timed in one ``time_each`` call, the list repeated ``--repeat`` times so
that each is timed in several places of the sequence; the minimum is reported, every pass in ``passes``.
``vs_first``: time over the first implementation's time.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from typing import Any

import torch

from bench.report import csv_sink, shape_string
from bench.timing import gpu_missing

FIELDS = ["gpu", "op", "case", "impl", "ms", "vs_first", "tflops", "gbps", "same_bits", "max_abs_diff", "passes",
          "timing"]


def load_cases(op, spec: str | None) -> list[dict[str, Any]]:
    """The op's bench cases, or the list ``NAME`` of ``MODULE`` for a ``MODULE:NAME`` spec."""
    if not spec:
        return list(op.bench_cases())
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"--cases wants MODULE:NAME (a list of case dicts in an importable module), got {spec!r}")
    cases = getattr(importlib.import_module(module), name, None)
    if not isinstance(cases, list | tuple) or not cases:
        raise ValueError(f"--cases {spec}: {module} has no non-empty list {name!r}")
    return list(cases)


def compare(op, impls: list[str], inputs: dict[str, Any]) -> dict[str, tuple[bool | None, float | None]]:
    """impl -> (same bits as the first implementation's output, max abs difference) on ``inputs``; (None,
    None) for an op that writes into its inputs, whose outputs cannot be compared this way."""
    if op.mutates:
        return {name: (None, None) for name in impls}
    outs = {name: _tensors(op.impl(name)(**inputs)) for name in impls}
    first = outs[impls[0]]

    def against_first(out):
        if len(out) != len(first) or any(a.shape != b.shape for a, b in zip(out, first, strict=True)):
            return False, float("inf")
        same = all(torch.equal(a, b) for a, b in zip(out, first, strict=True))
        diff = max((float((a.double() - b.double()).abs().max()) for a, b in zip(out, first, strict=True)
                    if a.numel()), default=0.0)
        return same, diff
    return {name: against_first(out) for name, out in outs.items()}


def _tensors(out) -> list[torch.Tensor]:
    """An implementation's output as a list of tensors (ops may return one tensor or a tuple of them)."""
    return [out] if isinstance(out, torch.Tensor) else [t for t in out if isinstance(t, torch.Tensor)]


def run(op, impls: list[str], cases, repeat: int, deadline: float, sink) -> None:
    from bench.timing import input_sets_for, time_each

    gpu, device = torch.cuda.get_device_name(0), torch.device("cuda")
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    for case in cases:
        if time.monotonic() > deadline:
            print(f"deadline: {shape_string(case)} and after not timed", flush=True)
            return
        gen = torch.Generator(device=device).manual_seed(0)
        sets = [op.make_inputs(case, device, gen) for _ in range(input_sets_for(op.bytes(case), l2))]
        checks = compare(op, impls, sets[0])
        fns = [op.impl(name) for name in impls] + ([op.baseline] if op.baseline is not None else [])
        times, method = time_each(fns * repeat, sets)
        n = len(fns)
        names = impls + ([f"baseline ({op.baseline_name})"] if op.baseline is not None else [])
        best = [min(times[i::n]) for i in range(n)]
        for i, name in enumerate(names):
            same, diff = checks.get(name, (None, None))
            row = dict(gpu=gpu, op=op.name, case=shape_string(case), impl=name, ms=best[i], vs_first=best[i] / best[0],
                       tflops=op.flops(case) / best[i] / 1e9, gbps=op.bytes(case) / best[i] / 1e6, same_bits=same,
                       max_abs_diff=diff, passes=" ".join(f"{t:.5f}" for t in times[i::n]), timing=method)
            sink(row)
            print(f"{shape_string(case):70} {name:24} {best[i] * 1e3:10.2f} us  x{row['vs_first']:.3f}  "
                  f"same bits {same}  max diff {diff}", flush=True)
        del sets
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    from kernels import registry

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("op", help="a registered op, e.g. prefill_attention")
    p.add_argument("--impls", nargs="+", help="implementations to time (default: triton and every variant)")
    p.add_argument("--import", dest="imports", nargs="+", default=[], metavar="MODULE",
                   help="modules to import first (they register the variants)")
    p.add_argument("--cases", metavar="MODULE:NAME", help="a list of cases instead of the op's bench cases")
    p.add_argument("--repeat", type=int, default=2, help="times each implementation is timed, interleaved")
    p.add_argument("--deadline-s", type=float, default=1e9, help="start no new case after this long")
    p.add_argument("--csv")
    args = p.parse_args(argv)
    for module in args.imports:
        importlib.import_module(module)
    op = registry.get(args.op)
    impls = args.impls or ["triton"] + [n for n in op.impls if n not in ("triton", "torch")]
    for name in impls:
        op.impl(name)  # a KeyError that names the registered implementations
    cases = load_cases(op, args.cases)
    if gpu_missing("impl_ab"):
        return 2
    deadline = time.monotonic() + args.deadline_s
    with csv_sink(args.csv, FIELDS) as sink:
        run(op, impls, cases, max(1, args.repeat), deadline, sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
