"""Ad-hoc: dense decode linear (as dispatched) at the 60 decode shapes, cuBLAS beside, with the process's PDL
signal as set by TRITONFORGE_PDL (tuned under it) and, in the same process, with PDL off."""
import csv
import os
import sys
import time

import torch

from bench.gguf_gemv_ab import _rotation
from bench.timing import time_each
from kernels import linear as lin
from kernels import pdl

DEADLINE = time.time() + float(sys.argv[2])
label = os.environ.get("TRITONFORGE_PDL", "") or "shipped"


def off(fn):
    def run(x, w):
        pdl.ENABLED = False
        try:
            return fn(x, w)
        finally:
            pdl.ENABLED = True
    return run


rows = []
for mname, model in (("qwen2.5-0.5b", lin.QWEN25_05B), ("llama-3.2-1b", lin.LLAMA32_1B), ("llama-3-8b", lin.LLAMA3_8B)):
    for layer, (N, K) in model.items():
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.05
        for M in (1, 4, 16, 64):
            if time.time() > DEADLINE:
                print("deadline", mname, layer, M, flush=True)
                break
            sets = _rotation(M, K, w=w)
            fns = [lambda x, w: x @ w.T, lambda x, w: lin.linear(x, w), off(lambda x, w: lin.linear(x, w))]
            ref = sets[0]["x"].float() @ sets[0]["w"].float().T
            for f in fns[1:]:
                err = (f(**sets[0]).float() - ref).abs().max().item()
                assert err < 0.1, (layer, M, err)
            ts, how = time_each(fns, sets)
            us = [t * 1e3 for t in ts]
            row = dict(model=mname, layer=layer, M=M, N=N, K=K, pdl=label,
                       route=lin.choose_linear_variant(M, N, K, torch.bfloat16), cublas_us=round(us[0], 2),
                       ours_us=round(us[1], 2), ours_x=round(us[0] / us[1], 3), nopdl_us=round(us[2], 2),
                       nopdl_x=round(us[0] / us[2], 3), timing=how)
            rows.append(row)
            print(row, flush=True)
            del sets
        del w
        torch.cuda.empty_cache()
with open(sys.argv[1], "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(rows[0]))
    wr.writeheader()
    wr.writerows(rows)
