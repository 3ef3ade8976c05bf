"""Ad-hoc: dense decode at M = 2-64 on the decode shapes with the signal a tuned choice (SIGNAL_AFTER_WAIT
configs): linear as dispatched, the split-K decode forced, the GEMV forced where M <= 4; cuBLAS beside."""
import csv
import sys
import time

import torch

from bench.gguf_gemv_ab import _rotation
from bench.timing import time_each
from kernels import linear as lin
from kernels import linear_decode as ld

DEADLINE = time.time() + float(sys.argv[2])
plan = []
for mname, model in (("qwen2.5-0.5b", lin.QWEN25_05B), ("llama-3.2-1b", lin.LLAMA32_1B), ("llama-3-8b", lin.LLAMA3_8B)):
    for layer, (N, K) in model.items():
        ms = (2, 3, 4, 8, 16, 64) if mname == "qwen2.5-0.5b" and layer in ("qkv", "o") else (4, 16, 64)
        plan += [(mname, layer, N, K, M) for M in ms]
rows = []
for mname, layer, N, K, M in plan:
    if time.time() > DEADLINE:
        print("deadline", mname, layer, M, flush=True)
        break
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.05
    sets = _rotation(M, K, w=w)
    labels = ["cublas", "shipped", "decode"] + (["gemv"] if M <= 4 else [])
    fns = [lambda x, w: x @ w.T, lambda x, w: lin.linear(x, w), lambda x, w: lin.linear(x, w, variant="decode"),
           lambda x, w: lin.linear(x, w, variant="gemv")][:len(labels)]
    ref = sets[0]["x"].float() @ sets[0]["w"].float().T
    for f in fns[1:]:
        err = (f(**sets[0]).float() - ref).abs().max().item()
        assert err < 0.1, (layer, M, err)
    ts, how = time_each(fns, sets)
    us = dict(zip(labels, (t * 1e3 for t in ts), strict=True))
    cold = ld._decode._cold
    picked = str(cold.choices.get(next(reversed(cold.choices)))) if cold is not None and cold.choices else "-"
    row = dict(model=mname, layer=layer, M=M, N=N, K=K, route=lin.choose_linear_variant(M, N, K, torch.bfloat16),
               **{f"{k}_us": round(v, 2) for k, v in us.items()},
               **{f"{k}_x": round(us["cublas"] / v, 3) for k, v in us.items() if k != "cublas"},
               decode_config=picked, timing=how)
    rows.append(row)
    print(row, flush=True)
    del sets, w
    torch.cuda.empty_cache()
fields = []
for r in rows:
    fields += [k for k in r if k not in fields]
with open(sys.argv[1], "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=fields)
    wr.writeheader()
    wr.writerows(rows)
