"""Compile the attention and KV-cache kernels for Hopper (sm_90) on any machine, no GPU needed.

Triton compiles ahead of time for a named target with the ptxas it ships, so the questions a compiler
answers (does the tile fit shared memory, does it spill, are the matrix instructions wgmma, are the loads
16 bytes wide) are settled here before a GPU minute is spent. For each kernel variant the engine
launches (the shipped tile from ``TILES``), prints registers per thread, stack (spill) bytes, shared
memory, the MMA kind in the SASS (HGMMA = wgmma, HMMA = mma.sync) and the count of 16-byte loads::

    python bench/compile_attention.py [prefill] [decode] [kv] [wide]

(``wide``: only the decode tiles that ``kernels._decode_tiles.WIDE_TILES`` promises four programs an SM.)

Integer arguments that are strides or sizes are compiled as divisible by 16, as Triton specialises them
at a real launch with such values.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tempfile

# Before any @triton.jit runs: with TRITON_INTERPRET=1 it would wrap the kernels for the interpreter.
os.environ["TRITON_INTERPRET"] = "0"

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels import _decode_splits, kv_cache, paged_decode, prefill_attention
from kernels._decode_combine import combine_steps, reduce_chunks
from kernels._decode_tiles import fits_wide

TARGET = GPUTarget("cuda", 90, 32)
SHARED_LIMIT = 232448  # bytes of shared memory one block may use on an H100/H200
SM_SHARED = 233472  # bytes of shared memory an SM has for its blocks (228 KB)
SIZES_DIV16 = {"split_size", "head_dim"}
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


def _tool(name: str) -> str:
    import triton.backends.nvidia as nvidia

    return os.path.join(os.path.dirname(nvidia.__file__), "bin", name)


def programs_per_sm(regs: int, warps: int, shared: int) -> int:
    """How many programs of a kernel one sm_90 SM holds at once: its 64K registers (allocated per warp in
    256-register units), 64 warps, and 228 KB of shared memory (1 KB of it reserved per block)."""
    per_warp = -(-regs * 32 // 256) * 256
    return min(65536 // (per_warp * warps), 64 // warps, SM_SHARED // (shared + 1024))


def compile_report(label: str, kernel, types: dict[str, str], consts: dict, options: dict,
                   min_programs: int = 1) -> str:
    """One line: registers, stack, shared memory, MMA kind, 16-byte loads and how many programs an SM holds.
    Flags a variant over the shared-memory limit, one that spills, and one that holds fewer than
    ``min_programs`` an SM (a tile table that promises more: ``kernels._decode_tiles.WIDE_TILES``)."""
    names = kernel.arg_names
    # Constexprs left out take their defaults, as at a launch (not run-time i32 arguments).
    defaults = {n: p.default for n, p in inspect.signature(kernel.fn).parameters.items()
                if p.default is not inspect.Parameter.empty}
    consts = defaults | consts
    signature = {n: "constexpr" if n in consts else types.get(n, "i32") for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names)
             if n not in consts and (signature[n].startswith("*") or n.startswith("stride") or n in SIZES_DIV16)}
    src = ASTSource(fn=kernel, signature=signature,
                    constexprs={(names.index(k),): v for k, v in consts.items()}, attrs=attrs)
    compiled = triton.compile(src, target=TARGET, options=options)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
    usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True)
    sass = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
    os.unlink(f.name)
    m = re.search(r"REG:(\d+).*?STACK:(\d+)", usage.stdout)
    regs, stack = m.groups() if m else ("?", "?")
    mma = "HGMMA" if "HGMMA" in sass else "HMMA" if "HMMA" in sass else "-"
    shared = compiled.metadata.shared
    fit = programs_per_sm(int(regs), options.get("num_warps", 4), shared) if regs != "?" else 0
    flag = " OVER SHARED LIMIT" if shared > SHARED_LIMIT else ""
    flag += " SPILLS" if stack not in ("0", "?") else ""
    flag += f" FITS {fit} AN SM, NOT {min_programs}" if fit < min_programs else ""
    return (f"{label:58s} regs {regs:>3s} stack {stack:>3s} shared {shared:>6d} {mma:5s} "
            f"ldg128 {len(re.findall(r'LDG[.A-Z0-9]*[.]128', sass)):3d} per SM {fit}{flag}")


def prefill_variants():
    # The shipped tiles by pointer loads (where TMA cannot run), then the TMA path (tensor-descriptor loads)
    # of the 16-bit power-of-two head dims.
    for dt, D, tma in (("bf16", 64, False), ("bf16", 80, False), ("bf16", 128, False), ("bf16", 256, False),
                       ("fp16", 128, False), ("fp32", 128, False), ("fp32", 256, False), ("bf16", 64, True),
                       ("bf16", 128, True)):
        d_pad = triton.next_power_of_2(D)
        tile = prefill_attention.TILES["cuda"][DTYPE_BYTES[dt]]
        tile = dict(tile[min((d for d in tile if d >= d_pad), default=max(tile))])
        options = {k: tile.pop(k) for k in ("num_warps", "num_stages")}
        types = {n: f"*{dt}" for n in ("q_ptr", "k_ptr", "v_ptr", "o_ptr", "k_cache_ptr", "v_cache_ptr")}
        types |= {"cu_ptr": "*i32", "bt_ptr": "*i32", "prefix_ptr": "*i32", "qk_scale": "fp32"}
        descs = dict(q_desc=None, k_desc=None, v_desc=None)  # a pointer launch passes None (a constexpr)
        tile["TMA"] = tma  # the table's tiles say TMA where the launcher uses it when it can; both are compiled
        if tma:
            types |= {f"{n}_desc": f"tensordesc<{dt}[{tile[block]}, {D}]>"
                      for n, block in (("q", "BLOCK_M"), ("k", "BLOCK_N"), ("v", "BLOCK_N"))}
            descs = {}
        for causal, prefix in ((True, False), (False, False), (True, True)):
            consts = dict(HEAD_DIM=D, D_PAD=d_pad, EVEN_D=d_pad == D, CAUSAL=causal, HAS_PREFIX=prefix, PAGE=16,
                          UPCAST=False, **descs, **tile)
            label = f"prefill {dt} D{D} causal={causal} prefix={prefix} {tile}"
            yield label, prefill_attention._prefill_kernel, types, consts, options


def decode_variants(only_wide: bool = False):
    for dt, D, group, direct in (("bf16", 128, 4, False), ("bf16", 128, 4, True), ("bf16", 128, 32, False),
                                 ("bf16", 64, 8, False), ("bf16", 64, 8, True), ("bf16", 256, 8, False),
                                 ("fp32", 128, 4, False), ("fp32", 128, 4, True), ("fp32", 256, 4, False)):
        d_pad = triton.next_power_of_2(D)
        # A one-split launch writes the output directly; a split one uses the split tiles and, with the
        # reduce folded in (paged_decode.REDUCE_IN_SPLIT), combines the partials in its last program. The
        # one-split tile also serves wide split launches where WIDE_TILES says four programs an SM fit it.
        wide = direct and fits_wide(d_pad, DTYPE_BYTES[dt], "cuda")
        if only_wide and not wide:
            continue
        tile = (paged_decode.TILES if direct else paged_decode.SPLIT_TILES)["cuda"][DTYPE_BYTES[dt]]
        tile = dict(tile[min((d for d in tile if d >= d_pad), default=max(tile))])
        options = {k: tile.pop(k) for k in ("num_warps", "num_stages")}
        types = {n: f"*{dt}" for n in ("q_ptr", "k_cache_ptr", "v_cache_ptr", "o_ptr")}
        types |= {"bt_ptr": "*i32", "ctx_ptr": "*i32", "part_o_ptr": "*fp32", "part_lse_ptr": "*fp32",
                  "count_ptr": "*i32", "qk_scale": "fp32"}
        g_pad = max(16, triton.next_power_of_2(group))
        combine = dict(G_COMB=triton.next_power_of_2(group), S_STEP=combine_steps(group, d_pad))
        consts = dict(HEAD_DIM=D, D_PAD=d_pad, EVEN_D=d_pad == D, G_PAD=g_pad, PAGE=16, DIRECT=direct, UPCAST=False,
                      FOLD=not direct and paged_decode.REDUCE_IN_SPLIT, FIT=True, ALIGN=_decode_splits.SPLIT_ALIGN,
                      PDL=1, **combine, **tile)
        for prefetch in (True, False):  # the early read of settled KV holds a peeled tile: more registers
            yield (f"decode {dt} D{D} group={group} direct={direct} prefetch={prefetch} {tile}",
                   paged_decode._decode_split_kernel, types, {**consts, "PREFETCH": prefetch}, options,
                   _decode_splits.WIDE_PROGRAMS_PER_SM if wide else 1)
    if only_wide:
        return
    types = {"part_o_ptr": "*fp32", "part_lse_ptr": "*fp32", "ctx_ptr": "*i32", "o_ptr": "*bf16"}
    dims, step = reduce_chunks(64, 256)
    consts = dict(HEAD_DIM=256, D_PAD=dims, FIT=True, ALIGN=_decode_splits.SPLIT_ALIGN, S_STEP=step, PDL=1)
    yield "decode reduce D256", paged_decode._decode_reduce_kernel, types, consts, {"num_warps": 4}


def kv_variants():
    types = {n: "*bf16" for n in ("key_ptr", "value_ptr", "k_cache_ptr", "v_cache_ptr")} | {"slot_ptr": "*i64"}
    for heads, D in ((8, 128), (2, 128), (4, 64)):
        block_t, block_h, block_d, warps = kv_cache.pick_tile(heads, D)
        consts = dict(BLOCK_SIZE=16, BLOCK_T=block_t, BLOCK_H=block_h, BLOCK_D=block_d, PDL=1)
        yield f"kv_cache_write bf16 heads={heads} D{D}", kv_cache._kv_cache_write_kernel, types, consts, \
            {"num_warps": warps}


def main(argv: list[str]) -> int:
    groups = {"prefill": prefill_variants, "decode": decode_variants, "kv": kv_variants,
              "wide": lambda: decode_variants(only_wide=True)}
    bad = 0
    for name in argv or list(groups):
        for variant in groups[name]():
            line = compile_report(*variant)
            bad += "OVER" in line or "SPILLS" in line or "FITS" in line
            print(line, flush=True)
    print(f"sm_90 compile report: {bad} variant(s) over the shared-memory limit, spilling or short of the "
          "programs an SM their table promises")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
