"""Ad-hoc: the dense split-K decode at M = 4-16 in its own row bucket (shipped) and in the 64-row bucket."""
import sys

import torch

from bench.gguf_gemv_ab import _rotation
from bench.report import csv_sink
from bench.timing import time_each
from kernels import linear as lin
from kernels import linear_decode as ld

shipped_bucket = ld.decode_block_m


def bm64(fn):
    def run(x, w):
        ld.decode_block_m = lambda M: 64
        try:
            return fn(x, w)
        finally:
            ld.decode_block_m = shipped_bucket
    return run


FIELDS = ["M", "N", "K", "layer", "route", "shipped_us", "decode_us", "decode64_us", "cublas_us", "shipped_x",
          "decode_x", "decode64_x"]
with csv_sink(sys.argv[1], FIELDS) as sink:
    for model in (lin.QWEN25_05B, lin.LLAMA32_1B, lin.LLAMA3_8B):
        for layer, (N, K) in model.items():
            w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.05
            for M in (4, 8, 16):
                sets = _rotation(M, K, w=w)
                fns = [lambda x, w: lin.linear(x, w), lambda x, w: lin.linear(x, w, variant="decode"),
                       bm64(lambda x, w: lin.linear(x, w, variant="decode")), lambda x, w: x @ w.T]
                ref = sets[0]["x"].float() @ sets[0]["w"].float().T
                for f in fns[:3]:
                    err = (f(**sets[0]).float() - ref).abs().max().item()
                    assert err < 0.1, (layer, M, err)
                ts, how = time_each(fns, sets)
                us = [t * 1e3 for t in ts]
                row = dict(M=M, N=N, K=K, layer=layer, route=lin.choose_linear_variant(M, N, K, torch.bfloat16),
                           shipped_us=round(us[0], 2), decode_us=round(us[1], 2), decode64_us=round(us[2], 2),
                           cublas_us=round(us[3], 2), shipped_x=round(us[3] / us[0], 3),
                           decode_x=round(us[3] / us[1], 3), decode64_x=round(us[3] / us[2], 3))
                sink(row)
                print(row, flush=True)
            del w, sets
            torch.cuda.empty_cache()
