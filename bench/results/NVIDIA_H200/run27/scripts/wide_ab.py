"""Each persistent config pinned (TMA and pointer loads), cuBLAS beside, at the shapes wide tiles target."""
import csv
import sys

import torch
import torch.nn.functional as F

from bench.tune_linear import ms
from kernels.linear_prefill import PERSISTENT_CONFIGS, linear_persistent_2d

out = sys.argv[1]
rows = []
for M, N, K in [(2048, 4608, 3584), (4096, 4608, 3584), (2048, 6144, 4096), (8192, 4608, 3584)]:
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(N, K, device="cuda") / K**0.5).to(torch.bfloat16)
    ref = F.linear(x.float(), w.float())
    base_e = ms(lambda x=x, w=w: F.linear(x, w))
    base_g = ms(lambda x=x, w=w: F.linear(x, w), graph=True)
    for c in PERSISTENT_CONFIGS["cuda"][1:]:
        for tma in (True, False):
            if c.get("BLOCK_N_EXTRA") and not tma:
                continue
            f = lambda x=x, w=w, c=c, tma=tma: linear_persistent_2d(x, w, None, config=c, tma=tma)
            err = (f().float() - ref).abs().max().item()
            te, tg = ms(f), ms(f, graph=True)
            r = dict(M=M, N=N, K=K, config=str(c), tma=tma, eager_us=te * 1e3, graph_us=tg * 1e3,
                     eager_vs_cublas=base_e / te, graph_vs_cublas=base_g / tg, cublas_graph_us=base_g * 1e3,
                     max_err=err)
            rows.append(r)
            print(f"{M}x{N}x{K} {c['BLOCK_M']}x{c['BLOCK_N']}+{c.get('BLOCK_N_EXTRA', 0)} s{c['num_stages']} "
                  f"w{c['num_warps']} tma={tma}: eager {te * 1e3:.1f} ({base_e / te:.2f}x) graph {tg * 1e3:.1f} "
                  f"({base_g / tg:.2f}x) err {err:.3g}", flush=True)
    with open(out, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
