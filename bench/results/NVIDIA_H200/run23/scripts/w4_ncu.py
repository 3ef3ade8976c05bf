"""The shipped W4A16 GEMV at its best configs (H200, run 23 call 2), launched for ncu to profile."""
import torch

from kernels import quant_linear as ql
from kernels.quant_pack import quantize_w4

torch.manual_seed(0)
for (N, K), c in [((14336, 4096), dict(BLOCK_N=32, GROUPS_PER_ITER=1, num_warps=1, num_stages=3)),
                  ((4096, 14336), dict(BLOCK_N=64, GROUPS_PER_ITER=1, num_warps=2, num_stages=3))]:
    w = 0.05 * torch.randn(N, K)
    q, s, z = quantize_w4(w, 128)
    q, s, z = q.cuda(), s.cuda().to(torch.bfloat16), z.cuda().to(torch.bfloat16)
    x = torch.randn(1, K, device="cuda").to(torch.bfloat16)
    for _ in range(3):
        ql.w4a16_linear(x, q, s, z, 128, config=c)
    torch.cuda.synchronize()
    print(N, K, c, flush=True)
