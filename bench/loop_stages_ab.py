"""A/B of the quantized decode GEMVs' weight loop: register prefetch against Triton's software pipeline.

    python -m bench.loop_stages_ab [--kernels w4a16 q4_0 q4_k] [--stages 0 2 3 4] [--shapes 4096x4096 ...]
                                   [--csv out.csv] [--deadline-s 500]

The GEMVs hold no ``tl.dot``, and Triton pipelines the loads of such a loop only when the loop itself asks
for stages (``tl.range(..., num_stages=...)``): then the next trips' weights travel by ``cp.async`` into
shared memory while this trip computes, instead of by the kernel's own register prefetch (W4A16) or not at
all (the GGUF group kernels). Each kernel's ``LOOP_STAGES`` (0: the plain loop) selects it. For every kernel,
config of its list and stage count this times the launch pinned, at M = 1 on the same rotated inputs
(``bench.timing.time_each``, CUDA-graph replays, L2 defeated), beside the shipped (autotuned) launch and
cuBLAS bf16 on the dense weight. W4A16 is also timed with each ``X_WORDS`` of ``--x-words`` (how it reads x).
``pct_copy``: the bytes a launch must move over the run's measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import sys
import time

import torch

from bench.gguf_gemv_ab import _rotation
from bench.timing import gpu_missing

DEVICE = "cuda"
SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336)]
FIELDS = ["gpu", "kernel", "variant", "config", "stages", "x_words", "M", "N", "K", "us", "cublas_us", "speedup",
          "pct_copy"]


@contextlib.contextmanager
def listed(configs: list[dict], extra: list[dict]):
    """``extra`` appended to a kernel's config list for the block (a pinned GGUF config must be listed)."""
    configs.extend(extra)
    try:
        yield
    finally:
        del configs[len(configs) - len(extra):]


def _w4_variants(stages: list[int], x_words: list[int]):
    from kernels import quant_linear as ql

    out = [("shipped", None, 0, 0, lambda x, q, s, z: ql.w4a16_linear(x, q, s, z, 128))]
    for c in ql.W4_GEMV_CONFIGS["cuda"]:
        for st in stages:
            for xw in x_words:
                pinned = dict(c, LOOP_STAGES=st, X_WORDS=xw)
                out.append((f"BN={c['BLOCK_N']} GPI={c['GROUPS_PER_ITER']} warps={c['num_warps']}", pinned, st, xw,
                            lambda x, q, s, z, p=pinned: ql.w4a16_linear(x, q, s, z, 128, config=p)))
    return out


def _gguf_variants(name: str, qtype: int, stages: list[int]):
    from kernels import gguf_linear as gl

    group = importlib.import_module(f"kernels._{name}_group_gemv")
    out = [("shipped", None, 0, 0, lambda x, data: gl.gguf_linear(x, data, qtype))]
    for c in group.TILES.configs["cuda"]:
        for st in stages:
            pinned = dict(c, LOOP_STAGES=st)
            out.append((f"BN={c['BLOCK_N']} warps={c['num_warps']}", pinned, st, 0,
                        lambda x, data, p=pinned: gl.gguf_linear(x, data, qtype, config=p)))
    return out, group.TILES.configs["cuda"]


def run(kernels: list[str], stages: list[int], x_words: list[int], shapes, deadline: float, sink) -> None:
    from bench.ceilings import copy_bandwidth_gbps
    from bench.timing import time_each
    from kernels.gguf_formats import Q4_0, Q4_K, random_blocks
    from kernels.quant_pack import quantize_w4

    gpu, copy = torch.cuda.get_device_name(0), copy_bandwidth_gbps()
    print(f"{gpu}: copy {copy:.0f} GB/s", flush=True)
    gen = torch.Generator().manual_seed(0)
    for N, K in shapes:
        w = torch.randn(N, K, generator=gen).to(DEVICE, torch.bfloat16)
        (cublas,), _ = time_each([lambda x, w: x @ w.T], _rotation(1, K, w=w))
        for name in kernels:
            if time.monotonic() > deadline:
                print(f"deadline: {name} at {N}x{K} and after not timed", flush=True)
                return
            if name == "w4a16":
                q4, s4, z4 = quantize_w4(w.float().cpu(), 128)
                weights = {"q": q4.to(DEVICE), "s": s4.to(DEVICE, torch.bfloat16), "z": z4.to(DEVICE, torch.bfloat16)}
                variants, extra, configs = _w4_variants(stages, x_words), [], []
            else:
                qtype = {"q4_0": Q4_0, "q4_k": Q4_K}[name]
                weights = {"data": random_blocks(qtype, N, K, generator=gen).to(DEVICE)}
                variants, configs = _gguf_variants(name, qtype, stages)
                extra = [v[1] for v in variants if v[1] is not None]
            w_bytes = sum(t.numel() * t.element_size() for t in weights.values())
            sets = _rotation(1, K, **weights)
            variants[0][4](**sets[0])  # the shipped launch tunes over the shipped list, before any is added
            with listed(configs, extra):
                times, _ = time_each([v[4] for v in variants], sets)
            for (label, config, st, xw, _), ms in zip(variants, times, strict=True):
                us = ms * 1e3
                row = dict(gpu=gpu, kernel=name, variant=label, config=config, stages=st, x_words=xw, M=1, N=N, K=K,
                           us=us, cublas_us=cublas * 1e3, speedup=cublas / ms,
                           pct_copy=100 * (w_bytes + 2 * (K + N)) / (us * 1e-6) / (copy * 1e9))
                sink(row)
                print(f"{name:6} {label:34} stages={st} xw={xw} {N:>5}x{K:<5} {us:7.2f} us  cuBLAS {cublas * 1e3:6.2f}"
                      f"  {row['speedup']:.2f}x  {row['pct_copy']:3.0f}% copy", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernels", nargs="+", default=["w4a16", "q4_0", "q4_k"], choices=["w4a16", "q4_0", "q4_k"])
    p.add_argument("--stages", nargs="+", type=int, default=[0, 2, 3, 4])
    p.add_argument("--x-words", nargs="+", type=int, default=[0, 1, 3],
                   help="W4A16's X_WORDS: 0 x in 16-bit loads, 1 in int32 pairs, 3 four pairs in one 16-byte load")
    p.add_argument("--shapes", nargs="+", default=[f"{n}x{k}" for n, k in SHAPES], help="N x K, e.g. 4096x14336")
    p.add_argument("--deadline-s", type=float, default=1e9, help="stop starting new kernels after this long")
    p.add_argument("--csv")
    args = p.parse_args(argv)
    if gpu_missing("loop_stages_ab"):
        return 2
    deadline = time.monotonic() + args.deadline_s
    with open(args.csv or "/dev/null", "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()

        def sink(row):
            writer.writerow(row)
            f.flush()
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
        run(args.kernels, args.stages, args.x_words, shapes, deadline, sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
