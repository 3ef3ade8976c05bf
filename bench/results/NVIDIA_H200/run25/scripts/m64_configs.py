"""Every dense decode config, pinned, at the given M on the shapes below 1.0x cuBLAS, plus candidates.
    python3 scratch/m64_configs.py OUT.csv"""
import csv
import sys

import torch
import torch.nn.functional as F

from bench.timing import input_sets_for, time_rotating
from kernels import linear_decode as ld
from kernels.linear import linear
from kernels.tuning import tuning

CANDIDATES = [
    dict(BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=4),
    dict(BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=6),
    dict(BLOCK_N=32, BLOCK_K=128, num_warps=4, num_stages=5),
    dict(BLOCK_N=256, BLOCK_K=64, num_warps=8, num_stages=3),
    dict(BLOCK_N=128, BLOCK_K=128, num_warps=8, num_stages=3),
    dict(BLOCK_N=64, BLOCK_K=256, num_warps=8, num_stages=3),
    dict(BLOCK_N=32, BLOCK_K=256, num_warps=4, num_stages=3),
    dict(BLOCK_N=64, BLOCK_K=128, num_warps=4, num_stages=3),
]
CASES = [(64, 6144, 4096), (64, 3072, 2048), (64, 9728, 896), (64, 4096, 4096), (64, 2048, 2048),
         (64, 151936, 896), (16, 28672, 4096), (4, 3072, 2048)]


def main(out) -> None:
    wr = csv.writer(out)
    wr.writerow(["M", "N", "K", "code", "config", "us", "cublas_us", "speedup"])
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    gen = torch.Generator().manual_seed(0)
    for M, N, K in CASES:
        w = (torch.randn(N, K, generator=gen) / K**0.5).to("cuda", torch.bfloat16)
        n = input_sets_for(2 * (N * K + M * K), l2)
        sets = [{"x": torch.randn(M, K, device="cuda", dtype=torch.bfloat16), "w": w.clone()} for _ in range(n)]
        cub = 1e3 * time_rotating(lambda x, w: F.linear(x, w), sets, graph=True)
        ld._decode._built = None
        ld._decode._cold = None
        with tuning("autotune"):
            linear(sets[0]["x"], sets[0]["w"])
            t = 1e3 * time_rotating(lambda x, w: linear(x, w), sets, graph=True)
        wr.writerow([M, N, K, "shipped", "tuned", f"{t:.3f}", f"{cub:.3f}", f"{cub / t:.3f}"])
        print(M, N, K, "shipped", f"{t:.2f}", f"cublas {cub:.2f}", flush=True)
        for code, cfgs in (("list", ld.DECODE_CONFIGS["cuda"]), ("new", CANDIDATES)):
            for cfg in cfgs:
                if ld.SPLIT_UNIT % cfg["BLOCK_K"]:
                    continue
                try:
                    pinned = lambda x, w, c=cfg: ld.linear_decode_2d(x, w, None, config=c)
                    t = 1e3 * time_rotating(pinned, sets, graph=True)
                except Exception as e:  # an out-of-resources config is a row, not a stop
                    print(M, N, K, code, cfg, "failed", type(e).__name__, str(e)[:100], flush=True)
                    continue
                wr.writerow([M, N, K, code, str(cfg), f"{t:.3f}", f"{cub:.3f}", f"{cub / t:.3f}"])
                out.flush()
                print(M, N, K, code, cfg, f"{t:.2f}", f"{cub / t:.3f}x", flush=True)
        del sets


if __name__ == "__main__":
    with open(sys.argv[1], "w", newline="") as f:
        main(f)
