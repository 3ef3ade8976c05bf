"""Block-shape study for the memory-bound foundation kernels (SiLU-and-mul, RoPE, RMSNorm), one GPU run.

Measures the copy bandwidth in the same run, then times each kernel's automatic choice next to forced
block shapes and the torch eager baseline, as CUDA-graph replays over rotated inputs (bench.timing).
Prints a short table per kernel and writes every number to ``<out>/tune_foundation.csv``::

    PYTHONPATH=. python3 bench/tune_foundation.py "$OUT"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench.ceilings import measure
from bench.report import dtype_name, shape_string, write_rows
from bench.timing import gpu_missing, input_sets_for, time_each
from kernels import registry


def silu_variants():
    from kernels.silu_and_mul import silu_and_mul

    yield "auto", silu_and_mul
    for tile, warps in ((512, 2), (2048, 4), (4096, 8)):
        yield f"tile{tile}_w{warps}", lambda x, t=tile, w=warps: silu_and_mul(x, _tile=t, _num_warps=w)


def rope_variants():
    from kernels.rope import rotary_embedding

    yield "auto", rotary_embedding
    for heads in (4, 16):
        yield f"heads{heads}", lambda q, k, positions, cos_sin_cache, h=heads: rotary_embedding(
            q, k, positions, cos_sin_cache, _heads=h)


def rmsnorm_variants():
    from kernels.rmsnorm import rmsnorm

    yield "auto", rmsnorm
    for rows in (1, 2, 4):
        yield f"rows{rows}", lambda x, weight, eps=1e-6, residual=None, n=rows: rmsnorm(
            x, weight, eps, residual, _rows_per_program=n)


STUDIES = {
    "silu_and_mul": (silu_variants, [
        {"tokens": t, "d": d, "dtype": torch.bfloat16} for d in (4864, 18944) for t in (1, 16, 128, 1024, 4096, 16384)
    ] + [{"tokens": t, "d": 14336, "dtype": torch.float16} for t in (1, 4096)]),
    "rope": (rope_variants, [
        {"tokens": t, "q_heads": hq, "kv_heads": hk, "head_dim": 128, "dtype": torch.bfloat16, "fused": True}
        for hq, hk in ((28, 4), (64, 8)) for t in (1, 16, 256, 4096, 16384)
    ] + [{"tokens": t, "q_heads": 14, "kv_heads": 2, "head_dim": 64, "dtype": torch.float16, "fused": False}
         for t in (4096, 16384)]),
    "rmsnorm": (rmsnorm_variants, [
        {"tokens": t, "hidden": h, "dtype": torch.bfloat16, "residual": r}
        for h in (896, 2048, 4096, 8192) for t in (1, 4096, 16384) for r in (False, True)
    ]),
}


def study(name, variants, cases, ceilings, device):
    op = registry.get(name)
    rows = []
    for case in cases:
        gen = torch.Generator(device=device).manual_seed(0)
        n_sets = input_sets_for(op.bytes(case), ceilings.l2_bytes)
        sets = [op.make_inputs(case, device, gen) for _ in range(n_sets)]
        fns = [*variants(), ("baseline", op.baseline)]
        for label, fn in fns[:-1]:  # every variant must be right before it is timed
            inputs = op.make_inputs(case, device, gen)
            ref_inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            out, ref = fn(**inputs), op.torch(**ref_inputs)
            got = [out] if out is not None else [inputs[k] for k in op.mutates]
            want = [ref] if ref is not None else [ref_inputs[k] for k in op.mutates]
            for a, b in zip(got, want, strict=True):
                if isinstance(a, tuple):
                    a, b = a[0], b[0]
                torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2, msg=f"{name} {label}")
        ms, timing = time_each([fn for _, fn in fns], sets)
        times = dict(zip([label for label, _ in fns], ms, strict=True))
        floor_ms, _ = ceilings.roofline_ms(op.flops(case), op.bytes(case))
        for label, ms in times.items():
            rows.append({
                "op": name, "variant": label, "shape": shape_string(case), "dtype": dtype_name(case["dtype"]),
                "median_ms": ms, "gbps": op.bytes(case) / ms / 1e6, "pct_of_copy": 100 * floor_ms / ms,
                "speedup_vs_baseline": times["baseline"] / ms, "timing": timing, "gpu": ceilings.gpu,
                "copy_gbps": ceilings.copy_gbps,
            })
        del sets
        torch.cuda.empty_cache()
        best = min((ms, label) for label, ms in times.items() if label != "baseline")
        auto = times["auto"]
        print(f"{name:13s} {dtype_name(case['dtype'])} {shape_string(case):58s} auto {auto * 1e3:8.1f} us "
              f"{100 * floor_ms / auto:5.1f}%  best {best[1]:12s} {100 * floor_ms / best[0]:5.1f}%  "
              f"eager {times['baseline'] * 1e3:8.1f} us  x{times['baseline'] / auto:5.2f} [{timing}]", flush=True)
    return rows


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", nargs="?", default="bench/results/tune", help="folder for tune_foundation.csv")
    p.add_argument("studies", nargs="*", metavar="STUDY", help=f"any of {', '.join(STUDIES)} (default: all)")
    args = p.parse_args(argv)
    unknown = [s for s in args.studies if s not in STUDIES]
    if unknown:
        p.error(f"unknown study {unknown[0]!r}; choose from {', '.join(STUDIES)}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if gpu_missing("tune_foundation"):
        return 2
    out_dir = args.out_dir
    device = torch.device("cuda")
    ceilings = measure()
    print(f"{ceilings.gpu}: copy {ceilings.copy_gbps:.0f} GB/s, bf16 matmul {ceilings.matmul_tflops:.0f} TFLOP/s, "
          f"L2 {ceilings.l2_bytes >> 20} MiB", flush=True)
    names = args.studies or list(STUDIES)
    rows = []
    for name in names:
        variants, cases = STUDIES[name]
        rows += study(name, variants, cases, ceilings, device)
    path = write_rows(rows, Path(out_dir) / "tune_foundation.csv", float_format=".6g")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
