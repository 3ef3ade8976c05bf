"""Compile the tensor-core W4A16 GEMV for sm_90 here and dump its TTGIR / SASS (argv: module BLOCK_N warps)."""
import importlib
import os
import sys
import tempfile

import torch

from bench.aot_quant import capture, compile_sm90, inspect
from kernels.quant_pack import quantize_w4

mod = importlib.import_module(sys.argv[1])
c = dict(BLOCK_N=int(sys.argv[2]), num_warps=int(sys.argv[3]), num_stages=3)
M = int(sys.argv[4]) if len(sys.argv) > 4 else 1
q, s, z = quantize_w4(torch.randn(4096, 4096), 128)
x = torch.randn(M, 4096).bfloat16()
kernel, args, kwargs = capture(mod, c, lambda: mod.w4a16_mma_linear(x, q, s.bfloat16(), z.bfloat16(), 128, config=c))
comp = compile_sm90(kernel, args, dict(kwargs))
r = inspect(comp)
tag = os.path.join(tempfile.gettempdir(), f"{sys.argv[1].split('.')[-1]}_{c['BLOCK_N']}_{c['num_warps']}")
for ext in ("ttgir", "ptx"):
    with open(f"{tag}.{ext}", "w") as f:
        f.write(comp.asm[ext])
print(sys.argv[1:], "regs", r.registers, "stack", r.stack_bytes, "loop", r.loop_instructions,
      "instr/B", r.loop_instructions * c["num_warps"] / (c["BLOCK_N"] * 64), "bars", r.count("BAR"),
      "ldg", r.count("LDG"))
if len(sys.argv) > 5:
    print(sorted(r.loop_ops.items(), key=lambda kv: -kv[1]))
