"""Ad-hoc: the split-K decode kernel's every config, pinned, on K = 896 shapes; cuBLAS beside."""
import csv
import sys

import torch

from bench.gguf_gemv_ab import _rotation
from bench.timing import time_each
from kernels.linear_decode import DECODE_CONFIGS, linear_decode_2d

rows = []
for N in (896, 1152, 2048, 4864, 9728):
    K = 896
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.05
    for M in (4, 16, 64):
        sets = _rotation(M, K, w=w)
        labels, fns = ["cublas", "tuned"], [lambda x, w: x @ w.T, lambda x, w: linear_decode_2d(x, w, None)]
        for c in DECODE_CONFIGS["cuda"]:
            for chunk in (None, 512):
                labels.append(f"{c['BLOCK_N']}/{c['BLOCK_K']}/{c['num_warps']}w/{c['num_stages']}s chunk={chunk}")
                fns.append(lambda x, w, c=c, chunk=chunk: linear_decode_2d(x, w, None, config=c, k_chunk=chunk))
        ref = sets[0]["x"].float() @ sets[0]["w"].float().T
        for f in fns[1:]:
            err = (f(**sets[0]).float() - ref).abs().max().item()
            assert err < 0.05, err
        ts, how = time_each(fns, sets)
        cub = ts[0]
        best = min(range(2, len(ts)), key=lambda i: ts[i])
        print(f"M={M} {N}x{K}: cublas {cub * 1e3:.2f} tuned {ts[1] * 1e3:.2f} best {labels[best]} "
              f"{ts[best] * 1e3:.2f}", flush=True)
        for lab, t in zip(labels, ts, strict=True):
            rows.append(dict(M=M, N=N, K=K, variant=lab, us=round(t * 1e3, 3), vs_cublas=round(cub / t, 3)))
with open(sys.argv[1], "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(rows[0]))
    wr.writeheader()
    wr.writerows(rows)
