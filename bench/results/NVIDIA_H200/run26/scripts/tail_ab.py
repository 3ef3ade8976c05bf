"""Run 26, call 4 (tree d0ea4f8, whose ``linear_persistent_2d`` still took ``tail_costs=(half, quarter)``).

A/B of the persistent kernel's split tail: whole / forced halves / forced quarters / the rule, per pinned
config, on five shapes; then every prefill case autotuned, with and without the split tail, and stream-K.
Usage: ``python3 tail_ab.py OUT.csv [BUDGET_S]``.
"""
import csv
import sys
import time

import torch
import torch.nn.functional as F
from triton.testing import do_bench

from kernels.linear import LLAMA3_8B, QWEN25_7B
from kernels.linear_prefill import PERSISTENT_CONFIGS, linear_persistent_2d
from kernels.linear_streamk import linear_streamk_2d

FORCED = (("whole", dict(split_tail=False)), ("half", dict(tail_costs=(0, 100))),
          ("quarter", dict(tail_costs=(100, 0))), ("rule", {}))


def ms(fn):
    return do_bench(fn, warmup=10, rep=60, return_mode="median")


def operands(M, N, K):
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / K**0.5
    return x, w


def pinned(rows):
    configs = [c for c in PERSISTENT_CONFIGS["cuda"] if c["BLOCK_M"] >= 64]
    for M, N, K in [(4096, 4608, 3584), (2048, 4608, 3584), (4096, 3584, 3584), (2048, 6144, 4096),
                    (4096, 4096, 4096)]:
        x, w = operands(M, N, K)
        ref = F.linear(x, w)
        cub = ms(lambda x=x, w=w: F.linear(x, w))
        for c in configs:
            name = f'{c["BLOCK_M"]}x{c["BLOCK_N"]}w{c["num_warps"]}s{c["num_stages"]}'
            r = dict(kind="pinned", M=M, N=N, K=K, cfg=name, cublas_us=cub * 1e3)
            for label, kw in FORCED:
                def fn(x=x, w=w, c=c, kw=kw):
                    return linear_persistent_2d(x, w, None, config=c, **kw)
                r[f"{label}_err"] = (fn().float() - ref.float()).abs().max().item()
                r[f"{label}_us"] = ms(fn) * 1e3
            rows.append(r)
            print(r, flush=True)


def tuned(rows, budget, t0, save):
    shapes = [(n, k) for model in (LLAMA3_8B, QWEN25_7B) for name, (n, k) in model.items() if name != "lm_head"]
    for M in (2048, 4096, 8192):
        for N, K in shapes:
            if time.time() - t0 > budget:
                return
            x, w = operands(M, N, K)
            cub = ms(lambda x=x, w=w: F.linear(x, w))
            r = dict(kind="tuned", M=M, N=N, K=K, cublas_us=cub * 1e3)
            impls = (("split", lambda x=x, w=w: linear_persistent_2d(x, w, None)),
                     ("nosplit", lambda x=x, w=w: linear_persistent_2d(x, w, None, split_tail=False)),
                     ("streamk", lambda x=x, w=w: linear_streamk_2d(x, w, None)))
            for name, fn in impls:
                fn()
                r[f"{name}_us"] = ms(fn) * 1e3
                r[f"{name}_vs_cublas"] = cub / ms(fn)
            rows.append(r)
            print(r, flush=True)
            save()


def main():
    out = sys.argv[1]
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else 200
    t0 = time.time()
    rows = []

    def save():
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("M", "N", "K", "kind"), k))
        with open(out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    pinned(rows)
    save()
    tuned(rows, budget, t0, save)
    save()
    print("\n M     N     K   cuBLAS   split  nosplit streamk")
    for r in rows:
        if r["kind"] == "tuned":
            print(f'{r["M"]:5d} {r["N"]:5d} {r["K"]:5d} {r["cublas_us"]:7.1f} {r["split_vs_cublas"]:6.2f} '
                  f'{r["nosplit_vs_cublas"]:6.2f} {r["streamk_vs_cublas"]:6.2f}')


if __name__ == "__main__":
    main()
