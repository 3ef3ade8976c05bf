"""A/B of the W4A16 and W8A16 decode GEMVs, each config pinned, against cuBLAS bf16.

    python -m bench.quant_gemv_ab [--kernels w4a16 w8a16] [--shapes 4096x4096 14336x4096 4096x14336]
                                  [--rows 1] [--aims 4] [--units 4] [--singles] [--csv out.csv]
                                  [--edits LABEL=MODULE ...] [--deadline-s 300]

At each M of ``--rows`` (the FMA GEMVs take 1-4, the tensor-core variant 1-16; W4A16 at group 128), on the
same rotated inputs (``bench.timing.time_each``, CUDA-graph replays, L2 defeated), for every config of the
kernel's GEMV list:
bf16 x in 8-byte loads of four values (``quads``, what ``x_quads`` picks for aligned bf16 rows) and, with
``--singles``, in 2-byte loads (the path of fp16, fp32 and misaligned x); for W4A16 also at every split-K
aim of ``--aims`` (``W4_GEMV_PROGRAMS_PER_SM``) and split unit of ``--units`` (``W4_SPLIT_GROUPS``), each
set around the launch. Beside them the shipped (autotuned) launch and cuBLAS on the dense weight.
Also every config of the tensor-core GEMV (``kernels/w4a16_mma_gemv.py``, ``w8a16_mma_gemv.py``, code ``mma``),
and the shipped launch with no rows given to it (code ``no-mma``: the FMA GEMV to M = 4, the tensor-core tiles
above); for W8A16 also that launch with the tiles at every M (code ``tiles``).
``--edits``: also every config (at the first aim and unit) with the GEMV kernels of MODULE, an edited copy of
``kernels/_quant_gemv.py`` importable by that name, labelled LABEL in the ``code`` column: a kernel edit
timed against the shipped code in one process, on the same inputs. A MODULE with a ``w4a16_mma_linear`` (or
``w8a16_mma_linear``) is an edited copy of that tensor-core GEMV instead: each of its own ``CONFIGS`` is timed,
at every M.
``pct_copy``: the bytes a launch must move over the run's measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import torch

from bench.gguf_gemv_ab import _rotation
from bench.report import csv_sink
from bench.timing import gpu_missing

DEVICE = "cuda"
SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]
FIELDS = ["gpu", "kernel", "code", "variant", "config", "aim", "unit", "x_loads", "M", "N", "K", "us", "cublas_us",
          "speedup", "pct_copy"]


def _launch(kernel: str):
    """callable(x, config=None, **weights) for ``kernel``: its quantized linear at M rows of x."""
    from kernels import quant_linear as ql

    if kernel == "w4a16":
        return lambda x, q, s, z, config=None: ql.w4a16_linear(x, q, s, z, 128, config=config)
    return lambda x, q, s, config=None: ql.w8a16_linear(x, q, s, config=config)


def _with_kernels(run, module):
    """``run`` with the GEMV kernels of ``module`` (an edited copy of kernels/_quant_gemv.py) in their place."""
    from kernels import quant_linear as ql

    def edited(x, **weights):
        saved = ql._w4a16_gemv.kernel, ql._w8a16_gemv.kernel
        ql._w4a16_gemv.kernel, ql._w8a16_gemv.kernel = module.w4a16_gemv_kernel, module.w8a16_gemv_kernel
        try:
            return run(x, **weights)
        finally:
            ql._w4a16_gemv.kernel, ql._w8a16_gemv.kernel = saved
    return edited


def _mma_launch(kernel: str, module, config: dict):
    """callable(x, **weights): ``module``'s tensor-core GEMV (``w4a16_mma_linear`` or ``w8a16_mma_linear``)
    pinned to ``config``."""
    if kernel == "w4a16":
        return lambda x, q, s, z: module.w4a16_mma_linear(x, q, s, z, 128, config=config)
    return lambda x, q, s: module.w8a16_mma_linear(x, q, s, config=config)


def _label(config: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())


def _variants(kernel: str, aims: list[int], units: list[int], singles: bool, edits: dict | None = None):
    """(code, label, config, (aim, unit), x loads, callable(x, **weights)): shipped, then every config (for
    W4A16 at every aim and split unit), with bf16 x in quads and (``singles``) in single loads; then every
    config again with the kernels of each module in ``edits`` (label -> module), at the first aim and unit."""
    from kernels import quant_linear as ql

    launch = _launch(kernel)

    def pinned(config, split: tuple[int, int], quads: bool):
        def run(x, **weights):
            chosen, split0 = ql.x_quads, (ql.W4_GEMV_PROGRAMS_PER_SM, ql.W4_SPLIT_GROUPS)
            ql.x_quads, (ql.W4_GEMV_PROGRAMS_PER_SM, ql.W4_SPLIT_GROUPS) = (lambda x: quads and chosen(x)), split
            try:
                return launch(x, **weights, config=config)
            finally:
                ql.x_quads, (ql.W4_GEMV_PROGRAMS_PER_SM, ql.W4_SPLIT_GROUPS) = chosen, split0
        return run

    shipped = (ql.W4_GEMV_PROGRAMS_PER_SM, ql.W4_SPLIT_GROUPS)
    out = [("shipped", "shipped", None, shipped, "as picked", lambda x, **weights: launch(x, **weights))]
    configs = (ql.W4_GEMV_CONFIGS if kernel == "w4a16" else ql.W8_GEMV_CONFIGS)["cuda"]
    for c in configs:
        label = _label(c)
        splits = [(a, u) for a in aims for u in units if u % c.get("GROUPS_PER_ITER", 1) == 0]
        for split in splits if kernel == "w4a16" else [shipped]:
            out += [("shipped", label, c, split, "quads", pinned(c, split, True))]
            out += [("shipped", label, c, split, "singles", pinned(c, split, False))] if singles else []
    # and the tensor-core GEMV (kernels/w4a16_mma_gemv.py, w8a16_mma_gemv.py): every config, and the shipped
    # dispatch with no rows given to it
    mma = importlib.import_module(f"kernels.{kernel}_mma_gemv")
    rows_name = "W4_MMA_ROWS" if kernel == "w4a16" else "W8_MMA_ROWS"

    def without_mma(x, **weights):
        rows = getattr(ql, rows_name)
        setattr(ql, rows_name, range(0))
        try:
            return launch(x, **weights)
        finally:
            setattr(ql, rows_name, rows)
    out += [("no-mma", f"shipped, {rows_name} empty", None, shipped, "as picked", without_mma)]
    if kernel == "w8a16":  # and the tensor-core tiles at every M (the FMA GEMV's rows at M <= 4)

        def tiles(x, **weights):
            most, ql.W8_GEMV_MAX_M = ql.W8_GEMV_MAX_M, 0
            try:
                return without_mma(x, **weights)
            finally:
                ql.W8_GEMV_MAX_M = most
        out += [("tiles", "shipped, W8_GEMV_MAX_M = 0", None, shipped, "as picked", tiles)]
    out += [("mma", _label(c), c, shipped, "16 columns", _mma_launch(kernel, mma, c)) for c in mma.CONFIGS["cuda"]]
    for code, module in (edits or {}).items():
        if hasattr(module, f"{kernel}_mma_linear"):  # an edited tensor-core variant
            out += [(code, _label(c), c, shipped, "16 columns", _mma_launch(kernel, module, c))
                    for c in module.CONFIGS["cuda"]]
            continue
        for c in configs:
            split = (aims[0], units[0]) if kernel == "w4a16" else shipped
            if kernel == "w4a16" and split[1] % c["GROUPS_PER_ITER"]:
                continue
            label = _label(c)
            out += [(code, label, c, split, "quads", _with_kernels(pinned(c, split, True), module))]
    return out


def _weights(kernel: str, w: torch.Tensor) -> dict:
    from kernels.quant_pack import quantize_w4, quantize_w8

    if kernel == "w4a16":
        q4, s4, z4 = quantize_w4(w.float().cpu(), 128)
        return {"q": q4.to(DEVICE), "s": s4.to(DEVICE, torch.bfloat16), "z": z4.to(DEVICE, torch.bfloat16)}
    q8, s8 = quantize_w8(w.float().cpu())
    return {"q": q8.to(DEVICE), "s": s8.to(DEVICE, torch.bfloat16)}


def run(kernels: list[str], shapes, rows: list[int], aims: list[int], units: list[int], singles: bool,
        deadline: float, sink, edits: dict | None = None) -> None:
    from bench.ceilings import copy_bandwidth_gbps
    from bench.timing import time_each

    gpu, copy = torch.cuda.get_device_name(0), copy_bandwidth_gbps()
    print(f"{gpu}: copy {copy:.0f} GB/s", flush=True)
    gen = torch.Generator().manual_seed(0)
    for (N, K), M in ((shape, m) for shape in shapes for m in rows):
        w = torch.randn(N, K, generator=gen).to(DEVICE, torch.bfloat16)
        (cublas,), _ = time_each([lambda x, w: x @ w.T], _rotation(M, K, w=w))
        for kernel in kernels:
            if time.monotonic() > deadline:
                print(f"deadline: {kernel} at {M}x{N}x{K} and after not timed", flush=True)
                return
            weights = _weights(kernel, w)
            w_bytes = sum(t.numel() * t.element_size() for t in weights.values())
            variants = [v for v in _variants(kernel, aims, units, singles, edits)
                        if M <= 4 or v[2] is None or v[4] == "16 columns"]  # the FMA GEMVs take 1-4 rows
            times, _ = time_each([v[5] for v in variants], _rotation(M, K, **weights))
            for (code, label, config, (aim, unit), x_loads, _), ms in zip(variants, times, strict=True):
                us = ms * 1e3
                row = dict(gpu=gpu, kernel=kernel, code=code, variant=label, config=config, aim=aim, unit=unit,
                           x_loads=x_loads, M=M, N=N, K=K, us=us, cublas_us=cublas * 1e3, speedup=cublas / ms,
                           pct_copy=100 * (w_bytes + 2 * M * (K + N)) / (us * 1e-6) / (copy * 1e9))
                sink(row)
                print(f"{kernel} {code:8} {label:48} aim={aim:<3} unit={unit} {x_loads:9} {M}x{N:>5}x{K:<5} "
                      f"{us:7.2f} us  cuBLAS {cublas * 1e3:6.2f}  {row['speedup']:.2f}x  {row['pct_copy']:3.0f}% copy",
                      flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernels", nargs="+", default=["w4a16", "w8a16"], choices=["w4a16", "w8a16"])
    p.add_argument("--shapes", nargs="+", default=[f"{n}x{k}" for n, k in SHAPES], help="N x K, e.g. 4096x14336")
    p.add_argument("--rows", nargs="+", type=int, default=[1], choices=range(1, 17), metavar="M",
                   help="M values to time (1-16; above 4 only the shipped launches and the tensor-core GEMV)")
    p.add_argument("--aims", nargs="+", type=int, default=[4], help="W4_GEMV_PROGRAMS_PER_SM values to time")
    p.add_argument("--units", nargs="+", type=int, default=[4], help="W4_SPLIT_GROUPS values to time")
    p.add_argument("--singles", action="store_true", help="also time bf16 x in 2-byte loads")
    p.add_argument("--deadline-s", type=float, default=1e9, help="start no new kernel after this long")
    p.add_argument("--edits", nargs="+", default=[], metavar="LABEL=MODULE",
                   help="also time every config with the GEMV kernels of MODULE (an edited copy of _quant_gemv)")
    p.add_argument("--csv")
    args = p.parse_args(argv)
    edits = {label: importlib.import_module(name) for label, name in (e.split("=", 1) for e in args.edits)}
    if gpu_missing("quant_gemv_ab"):
        return 2
    deadline = time.monotonic() + args.deadline_s
    with csv_sink(args.csv, FIELDS) as sink:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
        run(args.kernels, shapes, args.rows, args.aims, args.units, args.singles, deadline, sink, edits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
