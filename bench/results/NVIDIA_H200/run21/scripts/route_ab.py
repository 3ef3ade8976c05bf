"""Ad-hoc: dense linear at M = 2-4, GEMV against split-K decode against cuBLAS, same process, same inputs."""
import csv
import sys

import torch

from bench.gguf_gemv_ab import _rotation
from bench.timing import time_each
from kernels.linear import linear

SHAPES = [(896, 896), (1152, 896), (2048, 896), (4864, 896), (896, 2048), (2048, 2048), (896, 4864), (3072, 2048)]
rows = []
for N, K in SHAPES:
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.05
    for M in (2, 3, 4, 8):
        sets = _rotation(M, K, w=w)
        fns = [lambda x, w: linear(x, w, variant="gemv"), lambda x, w: linear(x, w, variant="decode"),
               lambda x, w: linear(x, w), lambda x, w: x @ w.T]
        if M > 4:
            fns[0] = fns[1]
        for f in fns:  # tune (cold autotune) outside the timing
            f(**sets[0])
        ts, how = time_each(fns + fns, sets)
        t = [min(ts[i], ts[i + 4]) * 1e3 for i in range(4)]
        row = dict(M=M, N=N, K=K, gemv_us=round(t[0], 2), decode_us=round(t[1], 2), shipped_us=round(t[2], 2),
                   cublas_us=round(t[3], 2), gemv_x=round(t[3] / t[0], 3), decode_x=round(t[3] / t[1], 3),
                   shipped_x=round(t[3] / t[2], 3), timing=how)
        print(row, flush=True)
        rows.append(row)
with open(sys.argv[1], "w", newline="") as f:
    wr = csv.DictWriter(f, fieldnames=list(rows[0]))
    wr.writeheader()
    wr.writerows(rows)
