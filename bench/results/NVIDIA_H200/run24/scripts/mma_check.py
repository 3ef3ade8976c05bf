"""Edited tensor-core W4A16 GEMV variants against the fp32 reference, every config, bench shapes, M = 1, 5, 16."""
import importlib
import sys

import torch

from kernels.quant_pack import dequantize_w4, quantize_w4

torch.manual_seed(0)
mods = ["kernels.w4a16_mma_gemv", *sys.argv[1:]]
for N, K in [(4096, 4096), (14336, 4096), (4096, 14336), (1000, 3072)]:
    w = (0.05 * torch.randn(N, K)).to(torch.bfloat16)
    q, s, z = quantize_w4(w.float(), 128)
    q, s, z = q.cuda(), s.cuda().to(torch.bfloat16), z.cuda().to(torch.bfloat16)
    z = z + 0.25 * torch.rand_like(z.float()).to(z.dtype)  # not integral: the folded zero point's rounding
    wd = dequantize_w4(q, s.double(), z.double(), 128).float()
    for M in (1, 5, 16):
        x = torch.randn(M, K, device="cuda").to(torch.bfloat16)
        ref = x.float() @ wd.T
        for name in mods:
            mod = importlib.import_module(name)
            errs = []
            for c in mod.CONFIGS["cuda"]:
                y = mod.w4a16_mma_linear(x, q, s, z, 128, config=c).float()
                errs.append((y - ref).abs().max().item() / ref.abs().max().item())
            print(f"{name:24} {M:2}x{N}x{K} max rel err over configs {max(errs):.2e}", flush=True)
