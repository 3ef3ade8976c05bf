"""A/B of the two ways to autotune the dense decode linear: the weight warm in L2, or cold (rotated).

    python -m bench.cold_tune_ab --csv OUT.csv [--m 1 4 16 64] [--models qwen2.5-0.5b llama-3.2-1b llama-3-8b]
        [--budget-s 400]

For every decode case of the ``linear`` op's benchmark (M = 1, 4, 16, 64 against the Qwen2.5-0.5B,
Llama-3.2-1B and Llama-3-8B projections and lm_heads), in one process, so that every figure of a row comes
from the same card:

1. cuBLAS (``F.linear``), timed as CUDA-graph replays rotating through weight copies that defeat L2
   (``bench.timing``, as the sweep times it);
2. ``linear`` (the variant ``choose_linear_variant`` picks) after autotuning with ``TRITONFORGE_TUNE=
   autotune-warm``: Triton's autotuner, replays of one weight, which then sits in L2;
3. the same after autotuning with ``autotune``: each config timed with its weight rotated
   (``kernels.cold_autotune``).

The tuned kernels forget their choices before each mode (Triton's compiled kernels stay), so each row's
two picks are made on the same inputs. Written as measured (a run cut by ``--budget-s`` keeps its rows):
``M, N, K, variant, cublas_us, warm_us, cold_us, warm_vs_cublas, cold_vs_cublas, warm_config, cold_config``.

``--variants`` adds, tuned cold, each kernel the dispatcher could pick for the row: ``decode_us`` (split-K,
the shipped split rule), ``decode_1split_us`` (the same kernel with K in one chunk) and, for M <= 4,
``gemv_us``: the data behind ``choose_linear_variant`` and ``decode_chunk``. ``--splits 1 2 4 8`` adds the
split-K kernel with K cut into that many chunks of whole SPLIT_UNITs (``decode_s1_us`` ...), to test the
split rule per bucket. ``--no-warm`` skips the warm-L2 tuning (its columns read nan).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from bench.timing import gpu_missing
from kernels.linear import LLAMA3_8B, LLAMA32_1B, QWEN25_05B

SHAPES = {"qwen2.5-0.5b": QWEN25_05B, "llama-3.2-1b": LLAMA32_1B, "llama-3-8b": LLAMA3_8B}  # name -> {layer: (N, K)}


def _tuned(variant: str):
    from kernels import linear_decode, linear_gemv

    return {"decode": linear_decode._decode, "gemv": linear_gemv._gemv}.get(variant)


def _forget(tuned) -> None:
    """Drop a Tuned's choices (both tuners), so the next launch tunes again."""
    tuned._built = None
    tuned._cold = None


def _choice(tuned, mode: str) -> str:
    """The config the last tuning picked, as text (the only key tuned since ``_forget``)."""
    if mode == "autotune" and tuned._cold is not None and tuned._cold.choices:
        return str(next(iter(tuned._cold.choices.values())))
    cache = getattr(tuned._built, "cache", None) or {}
    return str(next(iter(cache.values()))) if cache else "-"


def _variant_fns(M: int, K: int, variants: bool, splits: list[int]) -> dict:
    """label -> (the Tuned it launches, callable(x, w)) for ``--variants`` and ``--splits``."""
    from kernels.linear_decode import SPLIT_UNIT, linear_decode_2d
    from kernels.linear_gemv import GEMV_MAX_M, linear_gemv_2d
    from kernels.linear_prefill import cdiv

    fns = {}
    if variants:
        fns["decode"] = (_tuned("decode"), lambda x, w: linear_decode_2d(x, w, None))
        fns["decode_1split"] = (_tuned("decode"), lambda x, w: linear_decode_2d(x, w, None, k_chunk=K))
        if M <= GEMV_MAX_M:
            fns["gemv"] = (_tuned("gemv"), lambda x, w: linear_gemv_2d(x, w, None))
    for n in splits:
        chunk = cdiv(cdiv(K, n), SPLIT_UNIT) * SPLIT_UNIT
        if cdiv(K, chunk) == n:  # K too short for n whole units: no such row
            fns[f"decode_s{n}"] = (_tuned("decode"), lambda x, w, c=chunk: linear_decode_2d(x, w, None, k_chunk=c))
    return fns


def run(models: list[str], ms: list[int], budget_s: float, sink, variants: bool = False,
        splits: tuple[int, ...] = (), warm: bool = True) -> None:
    import torch.nn.functional as F

    from bench.ceilings import copy_bandwidth_gbps
    from bench.timing import input_sets_for, time_rotating
    from kernels.linear import choose_linear_variant, linear
    from kernels.tuning import tuning

    gpu, copy = torch.cuda.get_device_name(0), copy_bandwidth_gbps()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    print(f"{gpu}: copy {copy:.0f} GB/s, L2 {l2 >> 20} MB", flush=True)
    deadline = time.time() + budget_s
    gen = torch.Generator().manual_seed(0)
    for model in models:
        for N, K in SHAPES[model].values():
            w = (torch.randn(N, K, generator=gen) / K**0.5).to("cuda", torch.bfloat16)
            for M in ms:
                if time.time() > deadline:
                    print("cold_tune_ab: out of time, the remaining cases skipped", flush=True)
                    return
                n = input_sets_for(2 * (N * K + M * K), l2)
                sets = [{"x": torch.randn(M, K, device="cuda", dtype=torch.bfloat16), "w": w.clone()}
                        for _ in range(n)]
                variant = choose_linear_variant(M, N, K, torch.bfloat16)
                tuned = _tuned(variant)
                row = {"gpu": gpu, "M": M, "N": N, "K": K, "variant": variant,
                       "cublas_us": 1e3 * time_rotating(lambda x, w: F.linear(x, w), sets, graph=True)}
                for mode, label in (("autotune-warm", "warm"), ("autotune", "cold")):
                    if label == "warm" and not warm:
                        row.update(warm_us=float("nan"), warm_config="-", warm_vs_cublas=float("nan"))
                        continue
                    if tuned is not None:
                        _forget(tuned)
                    with tuning(mode):
                        linear(sets[0]["x"], sets[0]["w"])  # tunes on this launch's operands
                        row[f"{label}_us"] = 1e3 * time_rotating(lambda x, w: linear(x, w), sets, graph=True)
                    row[f"{label}_config"] = _choice(tuned, mode) if tuned is not None else "-"
                    row[f"{label}_vs_cublas"] = row["cublas_us"] / row[f"{label}_us"]
                for label, (t, fn) in _variant_fns(M, K, variants, list(splits)).items():
                    _forget(t)
                    with tuning("autotune"):
                        fn(sets[0]["x"], sets[0]["w"])
                        row[f"{label}_us"] = 1e3 * time_rotating(fn, sets, graph=True)
                row["pct_copy_cold"] = 100 * 2 * (N * K + M * K + M * N) / (row["cold_us"] * 1e-6) / 1e9 / copy
                sink(row)
                print(f"M={M:3d} {N:6d}x{K:6d} {variant:8s} cuBLAS {row['cublas_us']:7.2f} us  warm "
                      f"{row['warm_us']:7.2f} ({row['warm_vs_cublas']:.2f}x)  cold {row['cold_us']:7.2f} "
                      f"({row['cold_vs_cublas']:.2f}x)", flush=True)
                del sets


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", required=True, help="where the rows go, written as measured")
    p.add_argument("--m", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--variants", action="store_true", help="also time each kernel the dispatcher could pick")
    p.add_argument("--splits", type=int, nargs="*", default=[], help="also time the split-K kernel in N chunks")
    p.add_argument("--no-warm", action="store_true", help="skip the warm-L2 tuning mode")
    p.add_argument("--budget-s", type=float, default=400, help="start no case after this many seconds")
    args = p.parse_args()
    if gpu_missing("cold_tune_ab"):
        return 2
    from bench.report import write_rows

    rows: list[dict] = []

    def sink(row):  # the whole file rewritten after each case: a run cut short keeps every row it measured
        rows.append(row)
        write_rows(rows, args.csv, float_format=".4g")

    run(args.models, args.m, args.budget_s, sink, args.variants, tuple(args.splits), not args.no_warm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
