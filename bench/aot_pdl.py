"""Check the PDL rule of kernels/pdl.py in the compiled code, on a machine without a GPU.

A kernel launched with programmatic dependent launch runs beside the kernel before it until it passes
``griddepcontrol.wait``. Before that point it must store nothing, and (except for the GEMVs' weight tile)
read nothing, that an earlier kernel may write. The GPU tests compare results with PDL on and off, but a
race need not show in one run, so this module also compiles every decode kernel for sm_90, as the
launchers configure it, in each signal mode, and reads the PTX:

- ``griddepcontrol.wait`` is there, and no global store or atomic comes before it;
- no global load comes before it either, except in the dense GEMVs given a static weight, which must
  load (their first tile) there, and in the paged decode split kernel given ``fresh_tokens``, which must
  load its first tile's settled tokens there (the combining o_proj GEMV: its weight tile and context length);
- ``griddepcontrol.launch_dependents`` is there; in the "after_wait" mode, or in a kernel that signals
  late, only after the wait.

``python -m bench.aot_pdl`` prints one line per kernel and mode and exits nonzero on a breach (the test
suite runs it in a subprocess, since its own process interprets).
"""

from __future__ import annotations

import re
import sys

from kernels import pdl

GLOBAL_WRITE = re.compile(r"^\s*(?:@!?%p\d+\s+)?(?:st\.global|atom\.|red\.)")
GLOBAL_READ = re.compile(r"^\s*(?:@!?%p\d+\s+)?ld\.global")

# kernel -> (pointer arg -> element type; all other *_ptr args are bf16), constexprs, scalar fp32 args.
PTRS_I32 = ("count_ptr", "bt_ptr", "ctx_ptr", "cu_ptr")


def _cases():
    from kernels import (
        _quant_gemv,
        greedy,
        kv_cache,
        linear_decode,
        linear_gemv,
        paged_decode,
        paged_decode_linear,
        rmsnorm,
        rmsnorm_linear,
        rmsnorm_qkv_rope,
        rmsnorm_swiglu,
        rope_kv_write,
        silu_and_mul,
    )

    # The dense GEMVs read a weight tile before the wait only for a weight marked static (PREFETCH).
    for prefetch in (False, True):
        gemv = dict(HAS_BIAS=False, ROWS=1, EVEN=True, BLOCK_N=16, BLOCK_K=512, PREFETCH=prefetch)
        yield f"linear_gemv PREFETCH={prefetch}", linear_gemv._gemv_kernel, {}, gemv, prefetch, False
        yield (f"rmsnorm_linear PREFETCH={prefetch}", rmsnorm_linear._rmsnorm_gemv_kernel, {}, dict(
            HAS_RESIDUAL=True, HAS_BIAS=False, EVEN=True, BLOCK_H=1024, BLOCK_N=16, BLOCK_K=512, PREFETCH=prefetch),
            prefetch, False)
        yield (f"rmsnorm_swiglu PREFETCH={prefetch}", rmsnorm_swiglu._rmsnorm_swiglu_kernel, {}, dict(
            HAS_RESIDUAL=True, HAS_BIAS=False, EVEN=True, BLOCK_H=1024, BLOCK_N=16, BLOCK_K=512, PREFETCH=prefetch),
            prefetch, False)
        yield (f"rmsnorm_qkv_rope PREFETCH={prefetch}", rmsnorm_qkv_rope._rmsnorm_qkv_rope_kernel,
               {"pos_ptr": "*i64", "cs_ptr": "*fp32", "slot_ptr": "*i64"}, dict(
            HAS_RESIDUAL=True, HAS_BIAS=True, EVEN=True, BLOCK_H=1024, BLOCK_N=16, BLOCK_K=512, PAGE=16,
            PREFETCH=prefetch), prefetch, False)
    for after_wait in (False, True):
        yield (f"linear_decode SIGNAL_AFTER_WAIT={after_wait}", linear_decode._linear_decode_kernel, {}, dict(
            HAS_BIAS=False, UPCAST=False, PRECISION="ieee", BLOCK_M=16, BLOCK_N=64, BLOCK_K=128,
            SIGNAL_AFTER_WAIT=after_wait), False, after_wait)
    yield ("rope_kv_write", rope_kv_write._rope_kv_write_kernel, {"pos_ptr": "*i64", "cache_ptr": "*fp32",
                                                                  "slot_ptr": "*i64"},
           dict(BLOCK_SIZE=16, HEADS=4, HALF=64), False, False)
    yield ("kv_cache_write", kv_cache._kv_cache_write_kernel, {"slot_ptr": "*i64"},
           dict(BLOCK_SIZE=16, BLOCK_T=4, BLOCK_H=8, BLOCK_D=128), False, True)
    yield "silu_and_mul", silu_and_mul._silu_and_mul_kernel, {}, dict(ROWS=1, BLOCK=1024), False, False
    yield "rmsnorm", rmsnorm._rmsnorm_kernel, {}, dict(HAS_RESIDUAL=True, ROWS=1, BLOCK=1024), False, False
    yield ("greedy", greedy._greedy_kernel, {"out_ptr": "*i64", "part_ptr": "*i32"},
           dict(CHUNK=8192, BLOCK=1024, P_BLOCK=32), False, False)
    split = dict(HEAD_DIM=128, D_PAD=128, G_PAD=16, PAGE=16, DIRECT=False, FOLD=False, FIT=True, ALIGN=64,
                 G_COMB=4, S_STEP=16, UPCAST=False, EVEN_D=True, BLOCK_N=64)
    for prefetch in (False, True):  # given fresh_tokens, the settled part of the first tile is read before the wait
        yield (f"paged_decode split PREFETCH={prefetch}", paged_decode._decode_split_kernel,
               {"part_o_ptr": "*fp32", "part_lse_ptr": "*fp32"}, {**split, "PREFETCH": prefetch}, prefetch, True)
    combine = dict(HEAD_DIM=64, FIT=True, ALIGN=64, S_STEP=8, HAS_BIAS=False, EVEN=False, BLOCK_N=16, BLOCK_K=256)
    for early in (False, True):  # the weight tile (static) and, promised settled, the context length
        yield (f"paged_decode_linear PREFETCH={early} CTX_EARLY={early}", paged_decode_linear._combine_gemv_kernel,
               {"part_o_ptr": "*fp32", "part_lse_ptr": "*fp32", "part_ptr": "*fp32"},
               {**combine, "PREFETCH": early, "CTX_EARLY": early}, early, False)
    for late in (False, True):
        yield (f"paged_decode reduce SIGNAL_LATE={late}", paged_decode._decode_reduce_kernel,
               {"part_o_ptr": "*fp32", "part_lse_ptr": "*fp32"},
               dict(HEAD_DIM=128, D_PAD=128, FIT=True, ALIGN=64, S_STEP=16, SIGNAL_LATE=late), False, late)
    yield ("w8a16 gemv", _quant_gemv.w8a16_gemv_kernel, {"w_ptr": "*i32"},
           dict(HAS_BIAS=False, ROWS=1, EVEN=True, BLOCK_N=32, BLOCK_W=64, X_QUADS=True), False, True)
    yield ("w4a16 gemv", _quant_gemv.w4a16_gemv_kernel, {"w_ptr": "*i32"},
           dict(GROUP=128, HAS_BIAS=False, ROWS=1, EVEN=True, BLOCK_N=16, GROUPS_PER_ITER=2, X_QUADS=True), False,
           True)


def compile_ptx(kernel, ptr_types: dict, consts: dict) -> str:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names
    signature = {}
    for n in names:
        if n in consts:
            signature[n] = "constexpr"
        elif n.endswith("_ptr"):
            signature[n] = ptr_types.get(n, "*i32" if n in PTRS_I32 else "*fp32" if n == "part_ptr" else "*bf16")
        elif n in ("eps", "qk_scale"):
            signature[n] = "fp32"
        else:
            signature[n] = "i32"
    src = ASTSource(fn=kernel, signature=signature, constexprs={(names.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, launch_pdl=True)).asm["ptx"]


def breaches(ptx: str, may_load_first: bool, signal_after_wait: bool) -> list[str]:
    """What in ``ptx`` breaks the rule (empty: none); ``may_load_first``: a GEMV given a static weight."""
    lines = ptx.splitlines()
    waits = [i for i, ln in enumerate(lines) if "griddepcontrol.wait" in ln]
    signals = [i for i, ln in enumerate(lines) if "griddepcontrol.launch_dependents" in ln]
    if not waits:
        return ["no griddepcontrol.wait"]
    if not signals:
        return ["no griddepcontrol.launch_dependents"]
    first_wait, found = waits[0], []
    before = lines[:first_wait]
    if any(GLOBAL_WRITE.match(ln) for ln in before):
        found.append("a global store or atomic before the wait")
    loads_first = any(GLOBAL_READ.match(ln) for ln in before)
    if not may_load_first and loads_first:
        found.append("a global load before the wait")
    if may_load_first and not loads_first:
        found.append("no weight load before the wait: the static weight's prefetch is gone")
    if signal_after_wait and signals[0] < first_wait:
        found.append("launch_dependents before the wait")
    return found


def main() -> int:
    failures = 0
    for label, kernel, ptrs, consts, may_load_first, signals_late in _cases():
        for mode_name, mode in pdl.MODES.items():
            try:
                ptx = compile_ptx(kernel, ptrs, {**consts, "PDL": mode})
            except Exception as e:  # every kernel is tried; each failure is reported with its cause
                failures += 1
                print(f"FAILED {label} [{mode_name}]: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}")
                continue
            found = breaches(ptx, may_load_first, signals_late or mode_name == "after_wait")
            failures += bool(found)
            print(f"{'FAILED' if found else 'ok'} {label} [{mode_name}]{': ' + '; '.join(found) if found else ''}",
                  flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
