"""Ad-hoc: is the split-K decode's slow "start" signal at 896 x 896 (M = 16) a chain of its own launches?
Back-to-back launches, against the same with a small torch kernel (no PDL) between launches."""
import sys

import torch

from bench.gguf_gemv_ab import _rotation
from bench.timing import time_each
from kernels import pdl
from kernels.linear_decode import linear_decode_2d

C16 = dict(BLOCK_N=16, BLOCK_K=128, num_warps=2, num_stages=5)
small = torch.ones(256, device="cuda")


def signal(mode, between):
    def run(x, w):
        old = pdl.SIGNAL
        pdl.SIGNAL = mode
        try:
            y = linear_decode_2d(x, w, None, config=C16, k_chunk=1024)
        finally:
            pdl.SIGNAL = old
        if between:
            small.mul_(1.0)
        return y
    return run


with open(sys.argv[1], "w") as out:
    for N in (896, 1152, 2048):
        sets = _rotation(16, 896, w=torch.randn(N, 896, device="cuda", dtype=torch.bfloat16) * 0.05)
        labels = ["torch mul alone", "start", "start+mul", "after_wait", "after_wait+mul"]
        fns = [lambda x, w: small.mul_(1.0), signal("start", False), signal("start", True), signal("after_wait", False),
               signal("after_wait", True)]
        ts, how = time_each(fns, sets)
        timed = " | ".join(f"{a} {t * 1e3:.2f}" for a, t in zip(labels, ts, strict=True))
        line = f"N={N} K=896 M=16 16/128/2w/5s: {timed}"
        print(line, flush=True)
        out.write(line + "\n")
