"""Edited W4A16 GEMV kernels against the fp32 reference, every config, at the bench shapes."""
import importlib
import sys

import torch

from kernels import quant_linear as ql
from kernels.quant_pack import dequantize_w4, quantize_w4

torch.manual_seed(0)
mods = sys.argv[1:]
for N, K in [(4096, 4096), (14336, 4096), (4096, 14336), (1000, 3072)]:
    w = (0.05 * torch.randn(N, K)).to(torch.bfloat16)
    q, s, z = quantize_w4(w.float(), 128)
    q, s, z = q.cuda(), s.cuda().to(torch.bfloat16), z.cuda().to(torch.bfloat16)
    wd = dequantize_w4(q, s, z, 128).float()
    for M in (1, 3):
        x = torch.randn(M, K, device="cuda").to(torch.bfloat16)
        ref = x.float() @ wd.T
        for name in ["shipped", *mods]:
            saved = ql._w4a16_gemv.kernel
            if name != "shipped":
                ql._w4a16_gemv.kernel = importlib.import_module(name).w4a16_gemv_kernel
            try:
                errs = []
                for c in ql.W4_GEMV_CONFIGS["cuda"]:
                    y = ql.w4a16_linear(x, q, s, z, 128, config=c).float()
                    errs.append((y - ref).abs().max().item() / ref.abs().max().item())
                print(f"{name:14} {M}x{N}x{K} max rel err over configs {max(errs):.2e}", flush=True)
            finally:
                ql._w4a16_gemv.kernel = saved
