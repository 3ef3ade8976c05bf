"""Host time per launch of the persistent linear, TMA vs pointer loads; and do_bench's eager time at a short
prefill product with and without its L2 flush, to see whether the eager timing is the host's."""
import sys
import time

import torch
from triton.testing import do_bench

from kernels.linear_prefill import linear_persistent_2d

out = sys.argv[1]
lines = []
for M, N, K in [(256, 1024, 1024), (2048, 3584, 3584), (2048, 4096, 4096), (128, 3584, 3584)]:
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(N, K, device="cuda") / K**0.5).to(torch.bfloat16)
    for tma in (False, True, False, True):
        f = lambda x=x, w=w, tma=tma: linear_persistent_2d(x, w, None, tma=tma)
        for _ in range(20):
            f()
        torch.cuda.synchronize()
        n = 200
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        flush = do_bench(f, warmup=10, rep=60, return_mode="median")
        g = torch.cuda.CUDAGraph()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            f()
        torch.cuda.current_stream().wait_stream(s)
        with torch.cuda.graph(g):
            f()
        g.replay()
        torch.cuda.synchronize()
        t3 = time.perf_counter()
        for _ in range(n):
            g.replay()
        torch.cuda.synchronize()
        t4 = time.perf_counter()
        lines.append(f"{M}x{N}x{K} tma={tma}: host {1e6 * (t1 - t0) / n:.1f} us/launch, back to back "
                     f"{1e6 * (t2 - t0) / n:.1f} us/launch, graph replays {1e6 * (t4 - t3) / n:.1f} us, "
                     f"do_bench eager (L2 flushed) {flush * 1e3:.1f} us")
        print(lines[-1], flush=True)
with open(out, "w") as fh:
    fh.write("\n".join(lines) + "\n")
