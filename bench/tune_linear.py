"""Tune and time the dense linear kernels on one GPU, against cuBLAS and the card's copy bandwidth.

Run from the repository root on a GPU machine::

    PYTHONPATH=. python3 bench/tune_linear.py [--out DIR] [--explore {all,prefill,decode}] [--skip-bench]

It measures, in one process so that every number comes from the same card:

1. the ceilings: device-to-device copy bandwidth (bytes read + written) and a cuBLAS bf16 8192^3 product;
2. with ``--explore``: every config of the chosen kernels (and, for decode, three split sizes), timed alone
   on a few representative shapes (``linear_configs_<which>.csv``): the config lists and the split rule in
   kernels/linear_*.py are chosen from these;
3. the op's benchmark cases (``registry.get("linear").bench_cases()``, one regime with ``--decode-only`` or
   ``--prefill-only``, other prefill token counts with ``--prefill-m``): cuBLAS (``F.linear``), the
   dispatching ``linear`` and each variant, autotuned, and for prefill the persistent kernel without its
   split tail (``whole_tail``) and with pointer loads instead of TMA (``pointer_loads``), for the A/Bs
   (``linear_bench.csv``). ``--repeats R`` times each of them R times, taking turns, and keeps the medians.

Timing: ``triton.testing.do_bench`` medians (it clears L2 before every call). Decode shapes rotate among
enough weight copies to exceed 3x L2, and are also timed as CUDA-graph replays (``graph_*`` columns),
which removes the host launch gaps as the engine's captured decode step does. A short table is printed last.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from triton.testing import do_bench, do_bench_cudagraph

from bench.ceilings import measure
from bench.report import results_dir, write_rows
from bench.timing import gpu_missing, warm_capture_stream
from kernels import registry
from kernels.linear import choose_linear_variant, linear
from kernels.linear_decode import DECODE_CONFIGS, decode_block_m, decode_chunk, linear_decode_2d
from kernels.linear_gemv import GEMV_MAX_M
from kernels.linear_persistent import PERSISTENT_CONFIGS, linear_persistent_2d
from kernels.linear_prefill import TILED_CONFIGS, linear_tiled_2d
from kernels.linear_streamk import STREAMK_CONFIGS, linear_streamk_2d

BF16 = torch.bfloat16
DEVICE = "cuda"


def ms(fn, graph: bool = False) -> float:
    if graph:
        warm_capture_stream(fn)  # split-K counters must exist on the capture stream before a capture
        # rep sets how many calls one captured graph unrolls (rep / estimated time, capped by capture
        # cost); 10 ms keeps captures short and still averages hundreds of decode launches.
        return do_bench_cudagraph(fn, rep=10, return_mode="median")
    return do_bench(fn, warmup=10, rep=60, return_mode="median")


def ceilings() -> dict:
    """The card's ceilings (bench.ceilings, as the sweep measures them) plus its SM count, as one CSV row."""
    c = measure()
    return {"gpu": c.gpu, "sms": torch.cuda.get_device_properties(0).multi_processor_count,
            "l2_mb": c.l2_bytes / 2**20, "copy_gbs": c.copy_gbps, "cublas_tflops": c.matmul_tflops}


def operands(M: int, N: int, K: int, l2_bytes: int, rotate: bool):
    x = torch.randn(M, K, device=DEVICE, dtype=BF16)
    w_bytes = N * K * 2
    copies = min(32, max(1, math.ceil(3 * l2_bytes / w_bytes))) if rotate else 1
    ws = [(torch.randn(N, K, device=DEVICE) / K**0.5).to(BF16) for _ in range(copies)]
    return x, ws


def rotating(fn, x, ws):
    it = itertools.cycle(ws)
    return lambda: fn(x, next(it))


DECODE_STUDY_SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (896, 4864)]  # N, K


def shape_list(text: str) -> list[tuple[int, int]]:
    """``NxK,NxK`` -> [(N, K), ...] (the decode exploration's weight shapes)."""
    try:
        shapes = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise argparse.ArgumentTypeError(f"expected shapes as NxK,NxK (e.g. 896x896,1152x896), got {text!r}")
    return shapes


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers as 1,16, got {text!r}")
    return values


def explore(ceil: dict, rows: list, save, which: str, decode_shapes=DECODE_STUDY_SHAPES,
            decode_ms=(1, 16)) -> None:
    l2 = int(ceil["l2_mb"] * 2**20)
    prefill_shapes = [(4096, 4096, 4096), (4096, 14336, 4096), (8192, 28672, 4096), (2048, 4608, 3584)]
    if which == "decode":
        prefill_shapes = []
    for M, N, K in prefill_shapes:
        x, ws = operands(M, N, K, l2, rotate=False)
        w = ws[0]
        base = ms(lambda: F.linear(x, w))  # noqa: B023  (timed before the loop variable moves on)
        flops = 2 * M * N * K
        for name, launch, configs in (("prefill", linear_tiled_2d, TILED_CONFIGS["cuda"]),
                                      ("persistent", linear_persistent_2d, PERSISTENT_CONFIGS["cuda"]),
                                      ("streamk", linear_streamk_2d, STREAMK_CONFIGS["cuda"])):
            for c in configs:
                try:
                    t = ms(lambda: launch(x, w, None, config=c))  # noqa: B023  (timed at once, inside this iteration)
                except Exception as e:  # a config that cannot compile or run here is reported, not fatal
                    print(f"  {name} {c}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                    continue
                rows.append({"kernel": name, "M": M, "N": N, "K": K, "config": str(c), "ms": t,
                             "tflops": flops / t / 1e9, "vs_cublas": base / t})
        print(f"explored prefill {M}x{N}x{K} (cuBLAS {flops / base / 1e9:.0f} TFLOP/s)", flush=True)
        save(rows)
    if which == "prefill":
        decode_shapes = []
    for (N, K), M in itertools.product(decode_shapes, decode_ms):
        x, ws = operands(M, N, K, l2, rotate=True)
        base = ms(rotating(F.linear, x, ws), graph=True)
        w_bytes = N * K * 2
        default = decode_chunk(N, K, decode_block_m(M), ceil["sms"])
        chunks = sorted({default, max(256, default // 2), max(256, default // 4), default * 2}
                        & set(range(256, 2 * K + 256, 256)))
        for c, chunk in itertools.product(DECODE_CONFIGS["cuda"], chunks):
            fn = lambda xx, ww, c=c, chunk=chunk: linear_decode_2d(xx, ww, None, config=c, k_chunk=chunk)
            try:
                t = ms(rotating(fn, x, ws), graph=True)
            except Exception as e:  # as above
                print(f"  decode {c}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            rows.append({"kernel": "decode", "M": M, "N": N, "K": K, "config": f"{c} chunk={chunk}"
                         + (" (default)" if chunk == default else ""), "ms": t,
                         "tflops": 2 * M * N * K / t / 1e9, "vs_cublas": base / t,
                         "weight_gbs": w_bytes / t / 1e6})
        print(f"explored decode M={M} {N}x{K} (cuBLAS {w_bytes / base / 1e6:.0f} GB/s of weight, graph replay)",
              flush=True)
        save(rows)


def bench_cases(regime: str = "all", prefill_m: list[int] | None = None,
                decode_m: list[int] | None = None) -> list[dict]:
    """The op's benchmark cases, decode first (quicker: a run out of time still covers both regimes'
    extremes); ``regime`` keeps one regime, ``prefill_m`` replaces the prefill cases' token counts,
    ``decode_m`` keeps the decode cases of those token counts."""
    cases = sorted(registry.get("linear").bench_cases(), key=lambda c: c["M"] > 64)
    decode = [c for c in cases if c["M"] <= 64 and (not decode_m or c["M"] in decode_m)]
    prefill = [c for c in cases if c["M"] > 64]
    if prefill_m:
        shapes = list(dict.fromkeys((c["N"], c["K"]) for c in prefill))
        prefill = [{**prefill[0], "M": m, "N": n, "K": k} for n, k in shapes for m in prefill_m]
    return {"all": decode + prefill, "decode": decode, "prefill": prefill}[regime]


def bench(ceil: dict, rows: list, deadline: float, save, regime: str = "all",
          prefill_m: list[int] | None = None, repeats: int = 1, graph_prefill: bool = False,
          decode_m: list[int] | None = None) -> None:
    l2 = int(ceil["l2_mb"] * 2**20)
    for case in bench_cases(regime, prefill_m, decode_m):
        if time.time() > deadline:
            print("bench: out of time, remaining cases skipped", flush=True)
            break
        M, N, K = case["M"], case["N"], case["K"]
        decode = M <= 64
        x, ws = operands(M, N, K, l2, rotate=decode)
        impls = {"cublas": F.linear}
        variants = ("prefill", "persistent", "streamk")
        if decode:
            variants = ("decode", "gemv") if M <= GEMV_MAX_M else ("decode",)
        impls.update({v: (lambda xx, ww, v=v: linear(xx, ww, variant=v)) for v in variants})
        if not decode:  # the persistent kernel without its split tail, and with pointer loads, for the A/Bs
            impls["whole_tail"] = lambda xx, ww: linear_persistent_2d(xx, ww, None, split_tail=False)
            impls["pointer_loads"] = lambda xx, ww: linear_persistent_2d(xx, ww, None, tma=False)
        row = {"M": M, "N": N, "K": K, "auto": choose_linear_variant(M, N, K, BF16)}
        # Each impl is timed `repeats` times, the impls taking turns, and keeps its median: a drift of the
        # card's clocks during the case then touches every impl alike.
        times: dict[str, list[float]] = {name: [] for name in impls}
        graph_times: dict[str, list[float]] = {name: [] for name in impls}
        graph = decode or graph_prefill
        for _ in range(repeats):
            for name, fn in impls.items():
                times[name].append(ms(rotating(fn, x, ws)))
                if graph:
                    graph_times[name].append(ms(rotating(fn, x, ws), graph=True))
        for name in impls:
            row[f"{name}_ms"] = statistics.median(times[name])
            if graph:
                row[f"graph_{name}_ms"] = statistics.median(graph_times[name])
        # the dispatching entry point runs the chosen variant: its time is that variant's
        row["auto_ms"] = row.get(f"{row['auto']}_ms", float("nan"))
        if graph:
            row["graph_auto_ms"] = row.get(f"graph_{row['auto']}_ms", float("nan"))
            row["graph_auto_vs_cublas"] = row["graph_cublas_ms"] / row["graph_auto_ms"]
        flops, w_bytes = 2 * M * N * K, N * K * 2
        row["tflops_cublas"] = flops / row["cublas_ms"] / 1e9
        row["tflops_auto"] = flops / row["auto_ms"] / 1e9
        row["auto_vs_cublas"] = row["cublas_ms"] / row["auto_ms"]
        if decode:
            if "graph_gemv_ms" in row:
                row["graph_gemv_vs_cublas"] = row["graph_cublas_ms"] / row["graph_gemv_ms"]
                row["graph_decode_vs_cublas"] = row["graph_cublas_ms"] / row["graph_decode_ms"]
            row["weight_gbs_auto"] = w_bytes / row["auto_ms"] / 1e6
            row["graph_weight_pct_copy"] = 100 * w_bytes / row["graph_auto_ms"] / 1e6 / ceil["copy_gbs"]
        else:
            for v in (*variants, "whole_tail", "pointer_loads"):
                row[f"{v}_vs_cublas"] = row["cublas_ms"] / row[f"{v}_ms"]
                if graph:
                    row[f"graph_{v}_vs_cublas"] = row["graph_cublas_ms"] / row[f"graph_{v}_ms"]
        rows.append(row)
        save(rows)
        del x, ws


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="folder for the CSVs (default bench/results/<gpu name>)")
    p.add_argument("--explore", choices=("all", "prefill", "decode"), default=None,
                   help="time every config alone on representative shapes")
    p.add_argument("--decode-shapes", type=shape_list, default=DECODE_STUDY_SHAPES, metavar="NxK,...",
                   help="weight shapes of the decode exploration (default: three Llama-3-8B layers and 896x4864)")
    p.add_argument("--decode-m", type=int_list, default=None, metavar="M,...",
                   help="token counts of the decode exploration (default: 1,16) and, if given, of the decode "
                        "bench cases (default: all of them)")
    p.add_argument("--skip-bench", action="store_true", help="skip the op's benchmark cases")
    p.add_argument("--decode-only", action="store_true", help="only the op's decode cases (M <= 64)")
    p.add_argument("--prefill-only", action="store_true", help="only the op's prefill cases (M > 64)")
    p.add_argument("--prefill-m", type=int_list, default=None, metavar="M,...",
                   help="token counts of the prefill cases (default: the op's, 2048,4096,8192)")
    p.add_argument("--graph", action="store_true",
                   help="time prefill cases as CUDA-graph replays too (the kernel without the host's launch time)")
    p.add_argument("--repeats", type=int, default=1, help="time each impl this many times, in turns (median)")
    p.add_argument("--budget-s", type=float, default=240, help="stop starting new bench cases after this")
    args = p.parse_args()
    if gpu_missing("tune_linear"):
        return 2
    deadline = time.time() + args.budget_s
    ceil = ceilings()
    out = results_dir(ceil["gpu"], args.out)
    write_rows([ceil], os.path.join(out, "linear_ceilings.csv"))
    print(f"{ceil['gpu']}: {ceil['sms']} SMs, L2 {ceil['l2_mb']:.0f} MB, copy {ceil['copy_gbs']:.0f} GB/s, "
          f"cuBLAS bf16 8192^3 {ceil['cublas_tflops']:.0f} TFLOP/s", flush=True)
    if args.explore:
        cfg_rows: list = []
        explore(ceil, cfg_rows, lambda r: write_rows(r, os.path.join(out, f"linear_configs_{args.explore}.csv")),
                args.explore, args.decode_shapes, args.decode_m or [1, 16])
        best: dict = {}
        for r in cfg_rows:
            k = (r["kernel"], r["M"], r["N"], r["K"])
            if k not in best or r["ms"] < best[k]["ms"]:
                best[k] = r
        print("\nbest config per kernel and shape (vs cuBLAS = cuBLAS time / kernel time):")
        for (kern, M, N, K), r in best.items():
            print(f"  {kern:10s} {M:5d}x{N:6d}x{K:5d} {r['ms'] * 1e3:9.1f} us  {r['vs_cublas']:5.2f}x  {r['config']}")
    rows: list = []
    if not args.skip_bench:
        regime = "decode" if args.decode_only else "prefill" if args.prefill_only else "all"
        bench(ceil, rows, deadline, lambda r: write_rows(r, os.path.join(out, "linear_bench.csv")),
              regime, args.prefill_m, args.repeats, args.graph, args.decode_m)
    print(f"\n{ceil['gpu']}  copy {ceil['copy_gbs']:.0f} GB/s  cuBLAS {ceil['cublas_tflops']:.0f} TFLOP/s"
          + ("  (variant columns: CUDA-graph replays where timed)" if args.graph else ""))
    print(f"{'M':>5} {'N':>6} {'K':>5} {'cuBLAS us':>10} {'auto us':>9} {'auto/cuB':>8} {'graph':>6} "
          f"{'%copy':>6} {'tiled':>6} {'persist':>7} {'whole':>6} {'ptrs':>6} {'streamk':>7} {'g:decode':>8} "
          f"{'g:gemv':>7}")
    for r in rows:
        graph = f"{r['graph_auto_vs_cublas']:6.2f}" if "graph_auto_vs_cublas" in r else " " * 6
        pct = f"{r['graph_weight_pct_copy']:6.0f}" if "graph_weight_pct_copy" in r else " " * 6
        g = "graph_" if "graph_persistent_vs_cublas" in r else ""  # prefill variants: replays where timed
        tiled = f"{r[g + 'prefill_vs_cublas']:6.2f}" if g + "prefill_vs_cublas" in r else " " * 6
        pers = f"{r[g + 'persistent_vs_cublas']:7.2f}" if g + "persistent_vs_cublas" in r else " " * 7
        streamk = f"{r[g + 'streamk_vs_cublas']:7.2f}" if g + "streamk_vs_cublas" in r else " " * 7
        whole = f"{r[g + 'whole_tail_vs_cublas']:6.2f}" if g + "whole_tail_vs_cublas" in r else " " * 6
        ptrs = f"{r[g + 'pointer_loads_vs_cublas']:6.2f}" if g + "pointer_loads_vs_cublas" in r else " " * 6
        dec = f"{r['graph_cublas_ms'] / r['graph_decode_ms']:8.2f}" if "graph_decode_ms" in r else ""
        gemv = f" {r['graph_gemv_vs_cublas']:7.2f}" if "graph_gemv_vs_cublas" in r else ""
        print(f"{r['M']:5d} {r['N']:6d} {r['K']:5d} {r['cublas_ms'] * 1e3:10.1f} {r['auto_ms'] * 1e3:9.1f} "
              f"{r['auto_vs_cublas']:8.2f} {graph} {pct} {tiled} {pers} {whole} {ptrs} {streamk} {dec}{gemv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
