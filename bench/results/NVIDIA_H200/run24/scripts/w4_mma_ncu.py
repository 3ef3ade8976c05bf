"""The tensor-core W4A16 GEMV variant at two configs, launched for ncu to profile (M = 1)."""
import importlib
import sys

import torch

from kernels.quant_pack import quantize_w4

w4a16_mma_linear = importlib.import_module(sys.argv[1]).w4a16_mma_linear

torch.manual_seed(0)
for (N, K), c in [((14336, 4096), dict(BLOCK_N=128, num_warps=8, num_stages=3)),
                  ((4096, 14336), dict(BLOCK_N=256, num_warps=8, num_stages=3))]:
    w = 0.05 * torch.randn(N, K)
    q, s, z = quantize_w4(w, 128)
    q, s, z = q.cuda(), s.cuda().to(torch.bfloat16), z.cuda().to(torch.bfloat16)
    x = torch.randn(1, K, device="cuda").to(torch.bfloat16)
    for _ in range(3):
        w4a16_mma_linear(x, q, s, z, 128, config=c)
    torch.cuda.synchronize()
    print(N, K, c, flush=True)
