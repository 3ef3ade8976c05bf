"""A bandwidth-bound op against a plain copy of the same bytes: what a launch of that size can reach at all.

    python -m bench.copy_at_size [--ops kv_cache_write paged_decode_attention] [--where batch=1 kv_heads=2]
                                 [--csv out.csv]

The sweep reports a kernel's bytes over the card's copy bandwidth, measured on a 1 GiB copy
(``bench.ceilings``). A launch that moves a few MB cannot reach that figure: its launch, the first loads'
latency and the tail are a large share of its time. This script times, in one process and by the sweep's
method (``bench.timing.time_each``: CUDA-graph replays, inputs rotated beyond L2), each bench case of the
ops named, and beside it a ``copy_`` between two contiguous buffers of half its bytes (read + written: the
same total as the case). Columns: ``pct_copy`` (the op, of the 1 GiB copy's bandwidth, as the sweep gives
it), ``copy_pct`` (the same-size copy, same measure) and ``vs_copy`` (the copy's time over the op's: 1.0 is
as fast as a copy of its bytes). ``--where KEY=VALUE`` keeps the cases whose KEY has that value.
"""

from __future__ import annotations

import argparse
import sys

from bench.report import csv_sink, shape_string
from bench.timing import gpu_missing

FIELDS = ["gpu", "op", "case", "bytes", "op_us", "copy_us", "pct_copy", "copy_pct", "vs_copy", "timing"]


def parse_where(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict (values kept as text, compared with ``str`` of the case's value)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--where takes KEY=VALUE (batch=1, say), got {item!r}")
        out[key] = value
    return out


def selected(cases: list[dict], where: dict[str, str]) -> list[dict]:
    """The cases whose every ``where`` key is present and prints as the given value."""
    return [c for c in cases if all(k in c and str(c[k]) == v for k, v in where.items())]


def pct_of(nbytes: int, ms: float, copy_gbps: float) -> float:
    """``nbytes`` moved in ``ms`` milliseconds, in percent of ``copy_gbps`` (GB/s, read + written)."""
    return 100 * nbytes / (ms * 1e-3) / 1e9 / copy_gbps


COPY_ALIGN = 4096  # copy buffers are whole multiples of this many bytes (see copy_pair)


def copy_pair(nbytes: int, device: str = "cuda") -> dict:
    """One rotation set for the copy: a source of ``nbytes // 2`` random bytes, rounded up to a multiple of
    COPY_ALIGN, and a destination. On an H200 a ``copy_`` of 16,780,800 bytes (3584 past a 4 KiB multiple)
    took 13.8 us where 16,777,216 or 16,785,408 took 9.7 (bench/results/NVIDIA_H200/run25_notes.md): the
    reference is the fast copy, and the rounding adds under 4 KiB."""
    import torch

    half = -(-max(1, nbytes // 2) // COPY_ALIGN) * COPY_ALIGN
    src = torch.empty(half, dtype=torch.uint8, device=device).random_()
    return {"src": src, "dst": torch.empty_like(src)}


def run(op_names: list[str], where: dict[str, str], sink) -> None:
    import torch

    from bench.ceilings import measure
    from bench.timing import input_sets_for, time_each
    from kernels import registry

    ceil = measure()
    print(f"{ceil.gpu}: copy {ceil.copy_gbps:.0f} GB/s (1 GiB)", flush=True)
    for name in op_names:
        op = registry.get(name)
        for case in selected(list(op.bench_cases()), where):
            nbytes = int(op.bytes(case))
            n = input_sets_for(nbytes, ceil.l2_bytes)
            gen = torch.Generator(device="cuda").manual_seed(0)
            sets = [op.make_inputs(case, torch.device("cuda"), gen) for _ in range(n)]
            copies = [copy_pair(nbytes) for _ in range(n)]
            (op_ms,), timing = time_each([op.impl("triton")], sets)
            (copy_ms,), _ = time_each([lambda src, dst: dst.copy_(src)], copies)
            row = {"gpu": ceil.gpu, "op": name, "case": shape_string(case), "bytes": nbytes,
                   "op_us": 1e3 * op_ms, "copy_us": 1e3 * copy_ms, "pct_copy": pct_of(nbytes, op_ms, ceil.copy_gbps),
                   "copy_pct": pct_of(nbytes, copy_ms, ceil.copy_gbps), "vs_copy": copy_ms / op_ms, "timing": timing}
            sink(row)
            print(f"{name} {row['case']}: {row['op_us']:.2f} us ({row['pct_copy']:.1f}% of copy), same-size copy "
                  f"{row['copy_us']:.2f} us ({row['copy_pct']:.1f}%): {row['vs_copy']:.2f}x", flush=True)
            del sets, copies
            torch.cuda.empty_cache()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", nargs="+", default=["kv_cache_write"])
    p.add_argument("--where", nargs="*", default=[], metavar="KEY=VALUE", help="keep the cases with these values")
    p.add_argument("--csv")
    args = p.parse_args()
    where = parse_where(args.where)
    if gpu_missing("copy_at_size"):
        return 2
    with csv_sink(args.csv, FIELDS) as sink:
        run(args.ops, where, sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
