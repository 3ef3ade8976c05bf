"""Compile the quantized-linear kernels for a Hopper GPU on a machine without one, and read the result.

The Triton interpreter runs the kernels' Python, not the compiler: an error that only the GPU compiler
raises (a constexpr reassigned in a loop, a bitcast between types of different widths after integer
promotion) passes every CPU test. Triton compiles ahead of time without a driver, with the ``ptxas``
its CUDA backend ships, so this module compiles each launch exactly as the launcher would issue it --
the launcher runs on CPU tensors, and its kernel call is captured instead of executed -- for sm_90.

From the cubin it reads what the compiler's report says (registers, stack bytes, i.e. spills) and
counts the SASS of the hottest loop, per weight byte streamed: the instruction-issue cost that decides
whether a decode kernel can keep up with memory; and, per loop trip, its global loads and its barriers (a
layout conversion through shared memory costs two, and stalls every warp of the program).
``python -m bench.aot_quant`` prints a table for the decode configs; ``--check`` compiles every variant at
small shapes and fails on an error (the test suite runs it in a subprocess, since its own process
interprets).
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import importlib
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import torch

TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.uint8: "u8",
         torch.int8: "i8", torch.int32: "i32"}


class _Capture:
    """Stands in for a tuned kernel: records the launch (and which kernel it was for) instead of running it."""

    def __init__(self, config: dict):
        self.kernel, self.config, self.calls = None, config, []

    def bind(self, tuned):
        self.kernel = tuned.kernel
        return self

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((args, {**kwargs, **self.config}))


def capture(module, config: dict, launch: Callable[[], object]):
    """(kernel, positional args, keyword args) of the launch ``launch()`` makes through ``module.launcher``.

    ``launch`` should pin ``config`` itself (``config=``): a launcher picks its kernel (GEMV or tensor-core)
    by the pinned config.
    """
    cap = _Capture(config)
    original = module.launcher
    module.launcher = lambda tuned, cfg: cap.bind(tuned)
    try:
        launch()
    finally:
        module.launcher = original
    if not cap.calls:
        raise RuntimeError(f"{module.__name__}: the launch made no kernel call to capture")
    args, kwargs = cap.calls[0]
    return cap.kernel, args, kwargs


def available() -> str | None:
    """None if sm_90 code can be compiled here, else why not."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "TRITON_INTERPRET is set: Triton would interpret instead of compiling"
    try:
        from triton.backends import backends
    except ImportError as e:
        return f"triton has no backends module ({e})"
    if "nvidia" not in backends:
        return "this Triton build has no CUDA backend"
    if not os.path.exists(_tool("cuobjdump")):
        return "this Triton build ships no cuobjdump to read the compiled code with"
    return None


def compile_sm90(kernel, args: tuple, kwargs: dict):
    """Compile one captured launch for sm_90, specialised as the JIT would specialise it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constants, attrs = {}, {}, {}
    for i, (name, value) in enumerate(zip(kernel.arg_names, args, strict=False)):
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + TYPES[value.dtype]
            if value.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            signature[name], constants[name] = "constexpr", value
        elif isinstance(value, int):
            if value == 1:  # the JIT turns integer arguments equal to 1 into constants
                signature[name], constants[name] = "constexpr", 1
            else:
                signature[name] = "i32"
                if value % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "fp32"
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
    for name in kernel.arg_names[len(args):]:
        signature[name], constants[name] = "constexpr", kwargs[name]
    return triton.compile(ASTSource(kernel, signature, constants, attrs), target=GPUTarget("cuda", 90, 32),
                          options=options)


@dataclass
class Report:
    registers: int
    stack_bytes: int
    loop_instructions: int
    loop_ops: collections.Counter

    def count(self, prefix: str) -> int:
        """How many of the loop's instructions have an opcode starting with ``prefix`` (``LDG``, ``BAR``)."""
        return sum(n for op, n in self.loop_ops.items() if op.startswith(prefix))


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def inspect(compiled) -> Report:
    """Registers and stack from ``cuobjdump -res-usage``; the largest backward-branch loop of the SASS."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
    regs, stack = (int(v) for v in re.search(r"REG:(\d+)\s+STACK:(\d+)", usage).groups())
    lines = [ln for ln in sass.splitlines() if re.search(r"/\*[0-9a-f]{4,}\*/\s+\S", ln)]
    addrs = [int(re.search(r"/\*([0-9a-f]{4,})\*/", ln).group(1), 16) for ln in lines]
    start, end = 0, -1
    for i, ln in enumerate(lines):
        target = re.search(r"BRA\s+(?:`\(\.L_x_\d+\)\s*)?0x([0-9a-f]+)", ln)
        if target and int(target.group(1), 16) in addrs:
            j = addrs.index(int(target.group(1), 16))
            if j < i and i - j > end - start:
                start, end = j, i
    ops = collections.Counter(
        m.group(1) for ln in lines[start:end + 1]
        if (m := re.search(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", ln)))
    return Report(regs, stack, max(0, end - start + 1), ops)


def decode_launches():
    """(label, module, config, launch, weight bytes per loop trip) for the M = 1 decode kernels."""
    from kernels import gguf_linear as gl
    from kernels import quant_linear as ql
    from kernels import w4a16_mma_gemv as mma
    from kernels import w8a16_mma_gemv as mma8
    from kernels.gguf_formats import FORMATS, random_blocks
    from kernels.quant_pack import quantize_w4, quantize_w8

    N, K = 4096, 4096
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, K, generator=gen).to(torch.bfloat16)
    w = (0.05 * torch.randn(N, K, generator=gen)).to(torch.bfloat16)
    q4, s4, z4 = quantize_w4(w, 128)
    q8, s8 = quantize_w8(w)
    for c in ql.W4_GEMV_CONFIGS["cuda"] + [c for c in ql.W4_CONFIGS["cuda"] if c["BLOCK_M"] == 16]:
        yield (f"w4a16 g128 {c}", ql, c, lambda c=c: ql.w4a16_linear(x, q4, s4, z4, 128, config=c),
               c["BLOCK_N"] * 64 * c["GROUPS_PER_ITER"])
    for c in mma.CONFIGS["cuda"]:
        yield (f"w4a16 g128 tensor-core GEMV {c}", mma, c,
               lambda c=c: mma.w4a16_mma_linear(x, q4, s4, z4, 128, config=c), c["BLOCK_N"] * 64)
    for c in ql.W8_GEMV_CONFIGS["cuda"] + [c for c in ql.W8_CONFIGS["cuda"] if c["BLOCK_M"] == 16]:
        yield (f"w8a16 {c}", ql, c, lambda c=c: ql.w8a16_linear(x, q8, s8, config=c),
               c["BLOCK_N"] * (4 * c["BLOCK_W"] if "BLOCK_W" in c else c["BLOCK_K"]))
    for c in mma8.CONFIGS["cuda"]:
        yield (f"w8a16 tensor-core GEMV {c}", mma8, c, lambda c=c: mma8.w8a16_mma_linear(x, q8, s8, config=c),
               c["BLOCK_N"] * mma8.KB)
    gemv = {gl.Q4_0: gl.Q4_0_GROUP_GEMV_CONFIGS["cuda"] + gl.Q4_0_GEMV_CONFIGS["cuda"],
            gl.Q4_K: gl.Q4_K_GROUP_GEMV_CONFIGS["cuda"] + gl.Q4_K_GEMV_CONFIGS["cuda"]}
    for q in sorted(FORMATS):
        fmt, data = FORMATS[q], random_blocks(q, N, K, generator=gen)
        group_blocks = 8 if fmt.block_size == 32 else 1  # a group kernel's 144-byte unit
        for c in gemv.get(q, []) + gl.CONFIGS["cuda"]:
            if "BLOCK_M" not in c or fmt.block_size != 256 or (c["BLOCKS_PER_ITER"] == 1 and c["BLOCK_N"] >= 32):
                per_iter = c.get("BLOCKS_PER_ITER", group_blocks * c.get("GROUPS_PER_ITER", 1))
                yield (f"gguf {fmt.name} {c}", gl, c, lambda data=data, q=q, c=c: gl.gguf_linear(x, data, q, config=c),
                       c["BLOCK_N"] * fmt.type_size * per_iter)


def check_launches():
    """One config of each kernel variant at small shapes: what the CPU tests only interpret."""
    from kernels import gguf_dequant as gd
    from kernels import gguf_linear as gl
    from kernels import quant_linear as ql
    from kernels import w4a16_mma_gemv as mma
    from kernels import w8a16_mma_gemv as mma8
    from kernels.gguf_formats import FORMATS, Q4_0, Q4_K, random_blocks
    from kernels.quant_pack import quantize_w4, quantize_w8

    gen = torch.Generator().manual_seed(0)
    q4, s4, z4 = quantize_w4(torch.randn(64, 512, generator=gen), 128)
    q8, s8 = quantize_w8(torch.randn(64, 512, generator=gen))
    for dtype, m in ((torch.bfloat16, 1), (torch.bfloat16, 64), (torch.float16, 1)):
        x = torch.randn(m, 512, generator=gen).to(dtype)
        s, z, bias = s4.to(dtype), z4.to(dtype), x[0, :64]
        w4s = [next(c for c in ql.W4_CONFIGS["cuda"] if (c["BLOCK_M"] == 16) == (m <= 16))]
        w8s = [next(c for c in ql.W8_CONFIGS["cuda"] if (c["BLOCK_M"] == 16) == (m <= 16))]
        if m == 1:  # and the GEMV kernels: the first config at one row, every config at four (M = 3), the
            # most registers a config must fit in without spilling (one config serves every M of the bucket), in bf16
            every = dtype == torch.bfloat16
            w4s += ql.W4_GEMV_CONFIGS["cuda"] if every else ql.W4_GEMV_CONFIGS["cuda"][:1]
            w8s += ql.W8_GEMV_CONFIGS["cuda"] if every else ql.W8_GEMV_CONFIGS["cuda"][:1]
        for rows in ((m,) if m > 1 else (1, 3)):
            xr = torch.randn(rows, 512, generator=gen).to(dtype)
            gemv_first = (ql.W4_GEMV_CONFIGS["cuda"][0], ql.W8_GEMV_CONFIGS["cuda"][0])
            for w4 in w4s:
                if (rows > 1 and "BLOCK_M" in w4) or (rows == 1 and "BLOCK_M" not in w4 and w4 not in gemv_first):
                    continue
                yield (f"w4a16 {dtype} M={rows} {w4}", ql, w4,
                       lambda x=xr, s=s, z=z, bias=bias, w4=w4: ql.w4a16_linear(x, q4, s, z, 128, bias, config=w4))
            for w8 in w8s:
                if (rows > 1 and "BLOCK_M" in w8) or (rows == 1 and "BLOCK_M" not in w8 and w8 not in gemv_first):
                    continue
                yield f"w8a16 {dtype} M={rows} {w8}", ql, w8, lambda x=xr, w8=w8: ql.w8a16_linear(x, q8, s8, config=w8)
        if m == 1:  # the tensor-core GEMV variant: every config at 16 rows (its most), the first at one
            for c, rows in [(mma.CONFIGS["cuda"][0], 1)] + [(c, 16) for c in mma.CONFIGS["cuda"]]:
                if dtype == torch.bfloat16 or rows == 1:
                    xr = torch.randn(rows, 512, generator=gen).to(dtype)
                    yield (f"w4a16 tensor-core GEMV {dtype} M={rows} {c}", mma, c,
                           lambda x=xr, s=s, z=z, b=bias, c=c: mma.w4a16_mma_linear(x, q4, s, z, 128, b, config=c))
            if dtype == torch.bfloat16:  # scales and zeros of another dtype than x's (fp32 and fp16)
                c, x4 = mma.CONFIGS["cuda"][0], torch.randn(4, 512, generator=gen).to(dtype)
                yield (f"w4a16 tensor-core GEMV {dtype} M=4 fp32 scales, fp16 zeros {c}", mma, c,
                       lambda x=x4, c=c: mma.w4a16_mma_linear(x, q4, s4.float(), z4.half(), 128, config=c))
            for c, rows in [(mma8.CONFIGS["cuda"][0], 1)] + [(c, 16) for c in mma8.CONFIGS["cuda"]]:
                if dtype == torch.bfloat16 or rows == 1:
                    xr = torch.randn(rows, 512, generator=gen).to(dtype)
                    yield (f"w8a16 tensor-core GEMV {dtype} M={rows} {c}", mma8, c,
                           lambda x=xr, b=bias, c=c: mma8.w8a16_mma_linear(x, q8, s8.to(x.dtype), b, config=c))
    for dtype, qtypes in ((torch.bfloat16, sorted(FORMATS)), (torch.float16, [Q4_0, Q4_K]),
                          (torch.float32, [Q4_0])):
        x = torch.randn(1, 512, generator=gen).to(dtype)
        for q in qtypes:
            data = random_blocks(q, 64, 512, generator=gen)
            # The configs the autotuner would try first for this format.
            cs = [next(c for c in gl.CONFIGS["cuda"] if FORMATS[q].block_size != 256
                       or (c["BLOCKS_PER_ITER"] == 1 and c["BLOCK_N"] >= 32))]
            cs += {gl.Q4_0: gl.Q4_0_GEMV_CONFIGS["cuda"][:1], gl.Q4_K: gl.Q4_K_GEMV_CONFIGS["cuda"][:1]}.get(q, [])
            for c in cs:
                yield (f"gguf {FORMATS[q].name} {dtype} {c}", gl, c,
                       lambda x=x, data=data, q=q, c=c: gl.gguf_linear(x, data, q, config=c))
            gemv = {gl.Q4_0: gl.Q4_0_GEMV_CONFIGS["cuda"], gl.Q4_K: gl.Q4_K_GEMV_CONFIGS["cuda"]}.get(q, [])
            if dtype == torch.bfloat16:  # every GEMV config at four rows (M = 3), as for W4 and W8 above
                x3 = torch.randn(3, 512, generator=gen).to(dtype)
                for c in gemv:
                    yield (f"gguf {FORMATS[q].name} {dtype} M=3 {c}", gl, c,
                           lambda x=x3, data=data, q=q, c=c: gl.gguf_linear(x, data, q, config=c))
            if q == Q4_0 and dtype == torch.bfloat16:  # rows of 17 blocks: the 2-byte Q4_0 kernel's configs
                odd, x3 = random_blocks(q, 64, 544, generator=gen), torch.randn(3, 544, generator=gen).to(dtype)
                for c in gl.Q4_0_HALFWORD_GEMV_CONFIGS["cuda"]:
                    yield (f"gguf Q4_0 2-byte words {dtype} M=3 {c}", gl, c,
                           lambda x=x3, data=odd, c=c: gl.gguf_linear(x, data, Q4_0, config=c))
            group = {Q4_0: "_q4_0_group_gemv", Q4_K: "_q4_k_group_gemv"}.get(q)
            if group and dtype != torch.float32:  # the 16-byte group kernels, each tile at its most rows
                tiles = importlib.import_module(f"kernels.{group}").TILES
                groups = tiles.configs["cuda"]
                for c in groups if dtype == torch.bfloat16 else groups[:1]:
                    rows = min(tiles.most_rows(c), 3 if dtype == torch.bfloat16 else tiles.fp16_most_rows)
                    xm = torch.randn(rows, 512, generator=gen).to(dtype)
                    yield (f"gguf {FORMATS[q].name} 16-byte groups {dtype} M={xm.shape[0]} {c}", gl, c,
                           lambda x=xm, data=data, q=q, c=c: gl.gguf_linear(x, data, q, config=c))
            if dtype == torch.bfloat16:
                yield (f"gguf_dequantize {FORMATS[q].name}", gd, gd.CONFIGS["cuda"][0],
                       lambda data=data, q=q: gd.gguf_dequantize(data, q, torch.bfloat16))


@functools.cache
def _launches() -> list:
    """``check_launches`` listed once per process (a worker compiles several of them)."""
    return list(check_launches())


def _check_one(index: int) -> tuple[str, bool]:
    """Compile variant ``index`` of ``check_launches``: (its report line, whether it failed)."""
    label, module, config, launch = _launches()[index]
    kernel, args, kwargs = capture(module, config, launch)
    try:
        report = inspect(compile_sm90(kernel, args, dict(kwargs)))
    except Exception as e:  # every variant is tried; each failure is reported with its cause
        return f"FAILED {label}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}", True
    spill = f"  SPILLS {report.stack_bytes} bytes" if report.stack_bytes else ""
    return f"ok {label}: {report.registers} registers{spill}", bool(report.stack_bytes)


def check(jobs: int | None = None) -> int:
    """Compile every ``check_launches`` variant, ``jobs`` at a time (default: one per CPU, at most 8); nonzero
    exit on a compile error or a register spill. Each variant compiles in its own worker process (the
    compiler is single-threaded Python and ptxas): on the 2-core CI machine that halves the check's time."""
    count = len(_launches())
    jobs = max(1, min(jobs or os.cpu_count() or 1, 8, count))
    failures = 0
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for line, failed in pool.map(_check_one, range(count)):
            failures += failed
            print(line, flush=True)
    return 1 if failures else 0


def main() -> int:
    why = available()
    if why:
        print(f"aot_quant: cannot compile for sm_90 here: {why}", file=sys.stderr)
        return 2
    if "--check" in sys.argv[1:]:
        return check()
    print(f"{'kernel and config':<100}{'regs':>5}{'stack':>6}{'loop':>6}{'instr/B':>8}{'loads':>6}{'bars':>5}")
    for label, module, config, launch, bytes_per_trip in decode_launches():
        kernel, args, kwargs = capture(module, config, launch)
        report = inspect(compile_sm90(kernel, args, dict(kwargs)))
        per_byte = report.loop_instructions * config["num_warps"] / bytes_per_trip
        print(f"{label:<100}{report.registers:>5}{report.stack_bytes:>6}{report.loop_instructions:>6}"
              f"{per_byte:>8.3f}{report.count('LDG'):>6}{report.count('BAR'):>5}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
