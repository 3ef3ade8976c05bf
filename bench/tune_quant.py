"""Tune and time the weight-only quantized linear kernels on one GPU, against cuBLAS bf16 and the card.

Run from the repository root on a GPU machine::

    PYTHONPATH=. python3 bench/tune_quant.py --out DIR [--explore [--programs-per-sm 2,4,8]] [--budget-s 200]

In one process, so every number comes from the same card:

1. the ceilings (``bench.ceilings``): device-to-device copy bandwidth (read + written) and cuBLAS bf16;
2. with ``--explore``: each config of each kernel pinned and timed alone at M = 1 on two Llama-3-8B
   shapes (``quant_configs.csv``), which is what the config lists are chosen from; with
   ``--programs-per-sm``, once per split-K aim (how many programs per SM the split count aims at);
3. the ops' benchmark cases from the registry (``linear_w8a16``, ``linear_w4a16``, ``gguf_linear``),
   autotuned kernel against its baseline, cuBLAS bf16 ``F.linear`` on the weight dequantized once
   (``quant_bench.csv``). The target cases (M = 1, N and K >= 4096; W4 group 128, W8, GGUF Q4_0 and
   Q4_K) come first, so a run cut short by ``--budget-s`` still has them.

Timing: decode launches take a few microseconds, so both sides are timed as CUDA-graph replays
(``triton.testing.do_bench_cudagraph``, median), rotating among enough input sets that the working set
exceeds twice L2 (``bench.timing``). A short table is printed last.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from bench.ceilings import measure
from bench.module_settings import module_settings
from bench.report import results_dir, write_rows
from bench.timing import gpu_missing, input_sets_for, time_rotating
from kernels.gguf_formats import Q4_0, Q4_K, qtype_name
from kernels.gguf_linear import GGUF_LINEAR_OP
from kernels.quant_linear import W4A16_OP, W8A16_OP

DEVICE = "cuda"
# The op records themselves, not a registry lookup, which would import every other kernel module too.
OPS = {op.name: op for op in (W4A16_OP, W8A16_OP, GGUF_LINEAR_OP)}
TARGETS = {"linear_w4a16": 2.5, "linear_w8a16": 1.6, ("gguf_linear", Q4_0): 2.0, ("gguf_linear", Q4_K): 2.0}


def label(case: dict, op_name: str) -> str:
    if op_name == "gguf_linear":
        return f"gguf {qtype_name(case['qtype'])}"
    return op_name.replace("linear_", "") + (f" g{case['group_size']}" if "group_size" in case else "")


def target_of(op_name: str, case: dict) -> float | None:
    key = (op_name, case["qtype"]) if op_name == "gguf_linear" else op_name
    big = case["M"] == 1 and case["N"] >= 4096 and case["K"] >= 4096
    return TARGETS.get(key) if big else None


def input_sets(op, case, l2_bytes, seed=0):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    # Enough sets that both the quantized and the baseline's dense bf16 weights rotate out of L2.
    n = input_sets_for(op.bytes(case), l2_bytes)
    return [op.make_inputs(case, torch.device(DEVICE), gen) for _ in range(n)]


def time_case(op, case, sets, impl=None) -> float:
    # time_rotating's graph timing first runs a call on the capture stream, where split-K counters must exist.
    return time_rotating(impl or op.impl("triton"), sets, graph=True)


def bench(ceil, rows, deadline, save) -> None:
    cases = []
    for op in OPS.values():
        cases += [(op, c) for c in op.bench_cases()]
    # Targets first, then the other M = 1 cases, then the rest.
    cases.sort(key=lambda oc: (target_of(oc[0].name, oc[1]) is None, oc[1]["M"] != 1))
    for op, case in cases:
        if time.time() > deadline:
            print("bench: out of time, remaining cases skipped", flush=True)
            break
        sets = input_sets(op, case, ceil.l2_bytes)
        for s in sets:  # builds (and caches) each baseline's dense weight outside the timing
            op.baseline(**s)
        t_kernel = time_case(op, case, sets)
        t_base = time_case(op, case, sets, op.baseline)
        nbytes = op.bytes(case)
        target = target_of(op.name, case)
        rows.append({
            "gpu": ceil.gpu, "kernel": label(case, op.name), "M": case["M"], "N": case["N"], "K": case["K"],
            "kernel_us": 1e3 * t_kernel, "cublas_bf16_us": 1e3 * t_base, "speedup": t_base / t_kernel,
            "target": target or "", "met": "" if target is None else t_base / t_kernel >= target,
            "kernel_gbs": nbytes / t_kernel / 1e6, "pct_copy_bw": 100 * nbytes / t_kernel / 1e6 / ceil.copy_gbps,
            "cublas_weight_gbs": 2 * case["N"] * case["K"] / t_base / 1e6,
        })
        save(rows)
        del sets


def programs_per_sm(value: int | None):
    """The decode split-K's aim in programs per SM for the block, for every quantized kernel (the W4 GEMV
    has its own, ``quant_linear.W4_GEMV_PROGRAMS_PER_SM``); None leaves the values in force."""
    aims = ("kernels._split_k.PROGRAMS_PER_SM", "kernels.quant_linear.W4_GEMV_PROGRAMS_PER_SM")
    return module_settings({} if value is None else dict.fromkeys(aims, value))


def explore(ceil, rows, save, deadline=None, split_aims=(None,)) -> None:
    """Each config pinned at M = 1 on two Llama-3-8B shapes, once per split aim in ``split_aims``."""
    from kernels import gguf_linear as gl
    from kernels import quant_linear as ql

    decode = lambda configs: [c for c in configs if c.get("BLOCK_M", 16) == 16]
    plans = [  # the GEMV kernels' configs (no BLOCK_M) first, then the tensor-core kernels' decode tiles
        ("linear_w4a16", {"group_size": 128}, ql.W4_GEMV_CONFIGS["cuda"] + decode(ql.W4_CONFIGS["cuda"])),
        ("linear_w8a16", {}, ql.W8_GEMV_CONFIGS["cuda"] + decode(ql.W8_CONFIGS["cuda"])),
        ("gguf_linear", {"qtype": Q4_0}, gl.Q4_0_GEMV_CONFIGS["cuda"] + gl.CONFIGS["cuda"]),
        ("gguf_linear", {"qtype": Q4_K}, gl.Q4_K_GEMV_CONFIGS["cuda"] + gl.CONFIGS["cuda"]),
    ]
    for name, extra, configs in plans:
        op = OPS[name]
        for n, k in ((4096, 4096), (4096, 14336)):
            case = {"M": 1, "N": n, "K": k, "dtype": torch.bfloat16, "bias": False, **extra}
            sets = input_sets(op, case, ceil.l2_bytes, seed=1)
            for s in sets:
                op.baseline(**s)
            base = time_case(op, case, sets, op.baseline)
            for aim in split_aims:
                with programs_per_sm(aim):
                    for cfg in configs:
                        if deadline is not None and time.time() > deadline:
                            break
                        fn = lambda cfg=cfg, launch=op.triton, **kw: launch(**kw, config=cfg)
                        try:
                            t = time_case(op, case, sets, fn)
                        except Exception as e:  # a config that cannot compile or run is reported, not fatal
                            print(f"  {name} {cfg}: {type(e).__name__}: {str(e)[:160]}", flush=True)
                            continue
                        rows.append({"kernel": label(case, name), "N": n, "K": k,
                                     "path": "tensor-core" if "BLOCK_M" in cfg else "gemv", "config": str(cfg),
                                     "programs_per_sm": aim or "shipped", "us": 1e3 * t, "speedup": base / t,
                                     "pct_copy_bw": 100 * op.bytes(case) / t / 1e6 / ceil.copy_gbps})
            save(rows)
            best = max((r for r in rows if r["kernel"] == label(case, name) and r["N"] == n and r["K"] == k),
                       key=lambda r: r["speedup"], default=None)
            if best:
                print(f"explored {label(case, name)} {n}x{k}: best {best['us']:.1f} us ({best['speedup']:.2f}x "
                      f"cuBLAS {1e3 * base:.1f} us) {best['config']}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="folder for the CSVs (default bench/results/<gpu name>)")
    p.add_argument("--explore", action="store_true", help="time each decode config alone first")
    p.add_argument("--budget-s", type=float, default=200, help="stop starting new cases after this")
    p.add_argument("--explore-s", type=float, default=120, help="stop exploring configs after this")
    p.add_argument("--programs-per-sm", default=None, metavar="N,N,...",
                   help="explore each config at these split-K aims too (e.g. 2,4,8; default: the shipped ones)")
    args = p.parse_args()
    aims = tuple(int(v) for v in args.programs_per_sm.split(",")) if args.programs_per_sm else (None,)
    if gpu_missing("tune_quant"):
        return 2
    ceil = measure()
    out = results_dir(ceil.gpu, args.out)
    write_rows([vars(ceil)], os.path.join(out, "quant_ceilings.csv"))
    print(f"{ceil.gpu}: copy {ceil.copy_gbps:.0f} GB/s, cuBLAS bf16 {ceil.matmul_tflops:.0f} TFLOP/s, "
          f"L2 {ceil.l2_bytes / 2**20:.0f} MiB", flush=True)
    if args.explore:
        cfg_rows: list = []
        explore(ceil, cfg_rows, lambda r: write_rows(r, os.path.join(out, "quant_configs.csv")),
                deadline=time.time() + args.explore_s, split_aims=aims)
    rows: list = []
    deadline = time.time() + args.budget_s  # after exploring: the budget is the benchmark's
    bench(ceil, rows, deadline, lambda r: write_rows(r, os.path.join(out, "quant_bench.csv")))
    print(f"\n{'kernel':<12}{'M':>4}{'N':>7}{'K':>7}{'kernel us':>11}{'cuBLAS us':>11}{'speedup':>9}"
          f"{'%copy':>7}  target")
    for r in rows:
        tgt = f"{r['target']}x {'met' if r['met'] else 'MISSED'}" if r["target"] else ""
        print(f"{r['kernel']:<12}{r['M']:>4}{r['N']:>7}{r['K']:>7}{r['kernel_us']:>11.1f}{r['cublas_bf16_us']:>11.1f}"
              f"{r['speedup']:>8.2f}x{r['pct_copy_bw']:>6.0f}%  {tgt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
