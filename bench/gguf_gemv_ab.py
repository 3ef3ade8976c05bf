"""A/B of the Q4_0 and Q4_K decode GEMVs on a GPU: each kernel and tile against cuBLAS bf16, same run.

    python -m bench.gguf_gemv_ab [--formats Q4_0 Q4_K] [--rows 1 4] [--aims 4 8 16] [--tiles] [--csv out.csv]

For every format, decode shape (N x K, the Llama-3-8B and Qwen2.5-0.5B projections) and row count M it
times, on the same rotated inputs (``bench.timing.time_each``, CUDA-graph replays, L2 defeated):
- ``shipped``: ``gguf_linear`` as the engine calls it (the kernel ``_gemv`` picks, autotuned), at each
  split-K aim in ``--aims`` (the group kernel's ``PROGRAMS_PER_SM``, set before the call);
- with ``--tiles``, ``group BN=.. warps=..``: the 16-byte group kernel pinned to each of its tiles, and
  ``words (best tile)``: the int16 / int32 word kernel (the fallback for misaligned or fp32 x), each of its
  configs pinned, the fastest reported (each pinned config compiles: minutes on a fresh machine);
- ``W4A16``: the project's int4 group-128 kernel on the same shape, for scale;
and cuBLAS (``x @ w.T``, bf16 dense weights, rotated the same way). ``pct_copy`` is the bytes a launch
must move (weights, x, y) over the run's measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import torch

from bench.report import csv_sink
from bench.timing import gpu_missing

DEVICE = "cuda"  # "cpu" for a dry run of the script in the Triton interpreter
SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (896, 4864)]
FIELDS = ["gpu", "format", "variant", "M", "N", "K", "us", "cublas_us", "speedup", "pct_copy"]


def _rotation(M: int, K: int, **weights: torch.Tensor) -> list[dict]:
    """Input sets of fresh bf16 x [M, K] and copies of ``weights``, enough that a rotation defeats L2."""
    from bench.timing import input_sets_for

    set_bytes = sum(w.numel() * w.element_size() for w in weights.values())
    n = input_sets_for(set_bytes, torch.cuda.get_device_properties(0).L2_cache_size)
    return [{"x": torch.randn(M, K, device=DEVICE, dtype=torch.bfloat16), **{k: w.clone() for k, w in weights.items()}}
            for _ in range(n)]


def _variants(fmt, M: int, aims: list[int], tiles: bool):
    """(label, callable(x, data)) for one format at M rows: shipped at each aim, then (``tiles``) every tile."""
    from kernels import _gguf_gemv as words
    from kernels import gguf_linear as gl

    group = importlib.import_module(f"kernels._{fmt.name.lower()}_group_gemv")
    out = []
    for aim in aims:
        def shipped(x, data, aim=aim):
            group.PROGRAMS_PER_SM = aim
            return gl.gguf_linear(x, data, fmt.qtype)
        out.append((f"shipped aim={aim}", shipped))
    for c in group.TILES.configs["cuda"] if tiles else []:
        if group.TILES.most_rows(c) >= M:
            out.append((f"group BN={c['BLOCK_N']} warps={c['num_warps']}",
                        lambda x, data, c=c: gl.gguf_linear(x, data, fmt.qtype, config=c)))
    word_configs = {"Q4_0": words.Q4_0_GEMV_CONFIGS, "Q4_K": words.Q4_K_GEMV_CONFIGS}[fmt.name]["cuda"]
    for c in word_configs if tiles else []:
        out.append((f"words {c}", lambda x, data, c=c: gl.gguf_linear(x, data, fmt.qtype, config=c)))
    return out, group


def run(formats: list[str], rows: list[int], aims: list[int], tiles: bool = False, shapes=SHAPES,
        sink=lambda row: None) -> list[dict]:
    """The table's rows; ``sink`` gets each as it is measured (a run cut short keeps what it measured)."""
    from bench.ceilings import copy_bandwidth_gbps
    from bench.timing import time_each
    from kernels import quant_linear as ql
    from kernels.gguf_formats import FORMATS, random_blocks
    from kernels.quant_pack import quantize_w4

    gpu, copy = torch.cuda.get_device_name(0), copy_bandwidth_gbps()
    print(f"{gpu}: copy {copy:.0f} GB/s", flush=True)
    by_name = {f.name: f for f in FORMATS.values()}
    gen = torch.Generator().manual_seed(0)
    results = []
    for N, K in shapes:
        w = torch.randn(N, K, generator=gen).to(DEVICE, torch.bfloat16)
        for M in rows:
            x_bytes = 2 * M * (K + N)
            (cublas,), _ = time_each([lambda x, w: x @ w.T], _rotation(M, K, w=w))
            q4, s4, z4 = quantize_w4(w.float().cpu(), 128)
            w4 = {"q": q4.to(DEVICE), "s": s4.to(DEVICE, torch.bfloat16), "z": z4.to(DEVICE, torch.bfloat16)}
            (w4_ms,), _ = time_each([lambda x, q, s, z: ql.w4a16_linear(x, q, s, z, 128)], _rotation(M, K, **w4))
            rows_out = [("W4A16", "shipped", w4_ms, sum(t.numel() * t.element_size() for t in w4.values()))]
            for name in formats:
                fmt = by_name[name]
                blocks = random_blocks(fmt.qtype, N, K, generator=gen).to(DEVICE)
                sets = _rotation(M, K, data=blocks)
                variants, group = _variants(fmt, M, aims, tiles)
                aim0 = group.PROGRAMS_PER_SM
                try:
                    times, _ = time_each([fn for _, fn in variants], sets)
                finally:
                    group.PROGRAMS_PER_SM = aim0
                timed = [(label, t) for (label, _), t in zip(variants, times, strict=True)]
                rows_out += [(name, label, t, blocks.numel()) for label, t in timed if not label.startswith("words")]
                words = [(t, label) for label, t in timed if label.startswith("words")]
                if words:
                    t, label = min(words)
                    rows_out.append((name, f"words (best tile: {label[6:]})", t, blocks.numel()))
            for fmt_name, label, ms, w_bytes in rows_out:
                us = ms * 1e3
                row = dict(gpu=gpu, format=fmt_name, variant=label, M=M, N=N, K=K, us=us, cublas_us=cublas * 1e3,
                           speedup=cublas / ms, pct_copy=100 * (w_bytes + x_bytes) / (us * 1e-6) / (copy * 1e9))
                results.append(row)
                sink(row)
                print(f"{fmt_name:6} {label[:44]:44} M={M:<2} {N:>5}x{K:<5} {us:7.1f} us  cuBLAS {cublas * 1e3:6.1f} us"
                      f"  {row['speedup']:.2f}x  {row['pct_copy']:3.0f}% copy", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--formats", nargs="+", default=["Q4_0", "Q4_K"])
    p.add_argument("--rows", nargs="+", type=int, default=[1, 4])
    p.add_argument("--aims", nargs="+", type=int, default=[8])
    p.add_argument("--shapes", nargs="+", default=[f"{n}x{k}" for n, k in SHAPES], help="N x K, e.g. 4096x14336")
    p.add_argument("--tiles", action="store_true", help="also every group tile and word-kernel config, pinned")
    p.add_argument("--csv")
    args = p.parse_args(argv)
    if gpu_missing("gguf_gemv_ab"):
        return 2
    with csv_sink(args.csv, FIELDS) as sink:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
        run(args.formats, args.rows, args.aims, args.tiles, shapes, sink=sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
