"""Compile the tensor-core W8A16 GEMV for sm_90 and count its loop (argv: BLOCK_N warps M [v])."""
import sys

import torch

from bench.aot_quant import capture, compile_sm90, inspect
from kernels import w8a16_mma_gemv as mod
from kernels.quant_pack import quantize_w8

c = dict(BLOCK_N=int(sys.argv[1]), num_warps=int(sys.argv[2]), num_stages=3)
M = int(sys.argv[3])
q, s = quantize_w8(torch.randn(4096, 4096))
x = torch.randn(M, 4096).bfloat16()
kernel, args, kwargs = capture(mod, c, lambda: mod.w8a16_mma_linear(x, q, s.bfloat16(), config=c))
r = inspect(compile_sm90(kernel, args, dict(kwargs)))
print(sys.argv[1:4], "regs", r.registers, "stack", r.stack_bytes, "loop", r.loop_instructions,
      "instr/B", r.loop_instructions * c["num_warps"] / (c["BLOCK_N"] * 128), "bars", r.count("BAR"))
if len(sys.argv) > 4:
    print(sorted(r.loop_ops.items(), key=lambda kv: -kv[1]))
