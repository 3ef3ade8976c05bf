"""Greedy decoding: each row's argmax, the step a batch of plain greedy requests needs instead of a sampler.

Math, for one row x of logits over the vocabulary (length V):

    token = min { i : x_i = max_j x_j }        (the lowest index on ties, as torch.argmax and ``sample``)
    token = -1  when the row holds NaN or +inf, or no finite value at all (``sample`` raises there; the
                engine turns -1 into the same error)

``sample`` with temperature 0 returns the same tokens; this op exists because a batch whose rows are all
plain greedy (no penalties, bias or logprobs) needs nothing else, and this fits in the decode step's CUDA
graph: the engine reads the step's tokens back with one copy instead of building sampling tensors and
launching a sampler each step.

Layout: logits [B, V] with a unit stride on V (rows may be strided), float32, float16 or bfloat16; the
result is a fresh int64 [B].

Kernel: program (row, c) reduces chunk c of the row (CHUNK elements, read as unrolled BLOCK-wide loads so
all are in flight) to its best value and that value's lowest index (per lane, a strictly greater value
replaces the best, so each lane keeps its first maximum; then the lanes), a NaN/+inf flag and whether it
saw a finite value. Each program publishes its four numbers; the last of the row to arrive (an atomic
counter, as kernels/_split_k.py does for split-K) combines them in chunk order and writes the token. One
launch, and a 152k-token row spread over 19 programs instead of streamed by one: a single program
looping over the row took tens of microseconds at batch 1 (one SM's bandwidth), longer than the launch
this op exists to save. Memory-bound: B*V elements read once.
"""

from __future__ import annotations

import torch

from kernels import alloc, pdl
from kernels._split_k import arrival_counters
from kernels._triton import tl, triton
from kernels.device import check_backend, vendor
from kernels.registry import Op, register


@triton.jit
def _chunk_best(logits_ptr, row, chunk, V, stride_row, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """(best value, its lowest index, any NaN/+inf, any finite) over elements [chunk*CHUNK, +CHUNK) of a row."""
    base = logits_ptr + row * stride_row
    lanes = tl.arange(0, BLOCK)
    best = tl.full([BLOCK], float("-inf"), tl.float32)
    best_i = tl.full([BLOCK], 2147483647, tl.int32)
    bad = tl.zeros([BLOCK], tl.int32)
    finite = tl.zeros([BLOCK], tl.int32)
    for start in tl.static_range(0, CHUNK, BLOCK):  # unrolled: every load of the chunk in flight at once
        offs = chunk * CHUNK + start + lanes
        ok = offs < V
        x = tl.load(base + offs, mask=ok, other=float("-inf")).to(tl.float32)
        bad |= ((x != x) | (x == float("inf"))).to(tl.int32)
        finite |= (x > float("-inf")).to(tl.int32)
        take = x > best  # strictly greater: each lane keeps its first maximum
        best = tl.where(take, x, best)
        best_i = tl.where(take, offs, best_i)
    m = tl.max(best, 0)
    return m, tl.min(tl.where(best == m, best_i, 2147483647), 0), tl.max(bad, 0), tl.max(finite, 0)


@triton.jit(do_not_specialize=["V", "stride_row"])
def _greedy_kernel(logits_ptr, out_ptr, part_ptr, count_ptr, V, stride_row, CHUNKS,
                   CHUNK: tl.constexpr, BLOCK: tl.constexpr, P_BLOCK: tl.constexpr, PDL: tl.constexpr):
    pdl.start(PDL)
    pdl.enter(PDL)  # reads what earlier kernels wrote (kernels/pdl.py)
    row = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    m, idx, bad, finite = _chunk_best(logits_ptr, row, chunk, V, stride_row, CHUNK, BLOCK)
    if CHUNKS == 1:
        tl.store(out_ptr + row, tl.where((bad > 0) | (finite == 0), -1, idx).to(tl.int64))
    else:
        # Publish this chunk's (value, index, flags); the row's last program to arrive combines them in
        # chunk order and re-arms the row's counter (the split-K pattern of kernels/_split_k.py).
        slot = part_ptr + (row * CHUNKS + chunk) * 4
        tl.store(slot, m.to(tl.int32, bitcast=True))
        tl.store(slot + 1, idx)
        tl.store(slot + 2, bad)
        tl.store(slot + 3, finite)
        tl.debug_barrier()
        arrived = tl.atomic_add(count_ptr + row, 1, sem="acq_rel")
        if arrived == CHUNKS - 1:
            c = tl.arange(0, P_BLOCK)
            have = c < CHUNKS
            slots = part_ptr + (row * CHUNKS + c) * 4
            vals = tl.load(slots, mask=have, other=0, cache_modifier=".cg").to(tl.float32, bitcast=True)
            vals = tl.where(have, vals, float("-inf"))
            idxs = tl.load(slots + 1, mask=have, other=2147483647, cache_modifier=".cg")
            bads = tl.load(slots + 2, mask=have, other=0, cache_modifier=".cg")
            finites = tl.load(slots + 3, mask=have, other=0, cache_modifier=".cg")
            best = tl.max(vals, 0)
            token = tl.min(tl.where(vals == best, idxs, 2147483647), 0)
            invalid = (tl.max(bads, 0) > 0) | (tl.max(finites, 0) == 0)
            tl.store(out_ptr + row, tl.where(invalid, -1, token).to(tl.int64))
            tl.store(count_ptr + row, 0)


# --- configs as data ------------------------------------------------------------------------------
# CHUNK elements per program, read as unrolled BLOCK-wide loads over num_warps warps: 8192 over 8 warps is
# 32 fp32 per lane, all in flight; a 152k vocabulary is 19 programs per row.
CONFIGS = {
    "cuda": dict(CHUNK=8192, BLOCK=2048, num_warps=8),
    "hip": dict(CHUNK=8192, BLOCK=4096, num_warps=8),   # 64-lane wavefronts: the same elements per lane
}
# Rows at most this many chunks long are combined in one step by the last program.
MAX_CHUNKS = 64


KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check(logits: torch.Tensor, dtypes: tuple = KERNEL_DTYPES) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"greedy: logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in dtypes:
        raise TypeError(f"greedy: logits must be one of {', '.join(str(d).removeprefix('torch.') for d in dtypes)}, "
                        f"got {logits.dtype}")
    if logits.dim() != 2 or logits.shape[1] == 0:
        raise ValueError(f"greedy: logits must be [batch, vocab] with vocab >= 1, got shape {tuple(logits.shape)}")


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """Each row's argmax (lowest index on ties) as int64 [B]; -1 for a row with NaN, +inf or no finite value."""
    _check(logits)
    check_backend("triton", logits.device)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    B, V = logits.shape
    out = alloc.empty(B, dtype=torch.int64, device=logits.device)
    if B > 0:
        cfg = CONFIGS["cuda" if vendor() == "cpu" else vendor()]
        chunk = max(cfg["CHUNK"], triton.next_power_of_2(triton.cdiv(V, MAX_CHUNKS)))
        block = min(cfg["BLOCK"], triton.next_power_of_2(V))
        chunk = min(chunk, triton.cdiv(V, block) * block)  # a short row: one chunk of whole blocks
        chunks = triton.cdiv(V, chunk)
        parts = torch.empty(B * chunks * 4 if chunks > 1 else 1, dtype=torch.int32, device=logits.device)
        counters = arrival_counters(logits.device, B)
        _greedy_kernel[(B, chunks)](logits, out, parts, counters, V, logits.stride(0), chunks,
                                    CHUNK=chunk, BLOCK=block, P_BLOCK=triton.next_power_of_2(chunks),
                                    num_warps=cfg["num_warps"], **pdl.launch_options(logits.device, "greedy"))
    return out


def invalid_rows_error(op: str, bad: list[int]) -> ValueError:
    """The error for rows whose logits hold NaN or +inf, or no finite value (token -1 from the kernels of
    ``greedy`` and ``sample``)."""
    return ValueError(f"{op}: rows {bad[:16]}{'...' if len(bad) > 16 else ''} hold NaN or +inf logits or no "
                      "finite logit; check the model's output for these requests")


def raise_for_invalid(op: str, host_tokens: list[int]) -> None:
    """Raise :func:`invalid_rows_error` if any token read back from ``op`` is -1."""
    if -1 in host_tokens:
        raise invalid_rows_error(op, [row for row, t in enumerate(host_tokens) if t == -1])


def greedy_reference(logits: torch.Tensor) -> torch.Tensor:
    """Pure torch, same signature (float64 accepted too)."""
    _check(logits, (*KERNEL_DTYPES, torch.float64))
    x = logits.double()
    token = torch.argmax(x, dim=1)  # torch.argmax returns the first maximal index
    invalid = torch.isnan(x).any(1) | torch.isposinf(x).any(1) | ~torch.isfinite(x).any(1)
    return torch.where(invalid, torch.full_like(token, -1), token)


def greedy_eager(logits: torch.Tensor) -> torch.Tensor:
    """The baseline: torch.argmax alone (no validity check)."""
    return torch.argmax(logits, dim=1)


# --- registration -------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
VOCABS = [151936, 128256, 32000]


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        batch, vocab = st.sampled_from([1, 3, 8]), st.sampled_from([1, 7, 455, 5000])
    else:
        batch, vocab = st.sampled_from([1, 7, 64, 256]), st.sampled_from([*VOCABS, 4096 + 17])
    ties = st.sampled_from(["none", "ties", "bad"])
    return st.fixed_dictionaries({"batch": batch, "vocab": vocab, "dtype": st.sampled_from(DTYPES), "mode": ties})


def _make_inputs(case, device, gen):
    B, V = case["batch"], case["vocab"]
    x = 4 * torch.randn(B, V, generator=gen, device=device)
    if case.get("mode") == "ties" and V > 1:
        # The maximum repeated at a few random places per row: the lowest of them must win.
        cols = torch.randint(0, V, (B, 3), generator=gen, device=device)
        x.scatter_(1, cols, x.max(dim=1, keepdim=True).values.expand(B, 3) + 1.0)
    elif case.get("mode") == "bad" and B > 1:
        x[0, V // 2] = float("nan")
        x[B - 1] = float("-inf")
    return {"logits": x.to(case["dtype"])}


def _compare(out, ref, kernel_inputs, ref_inputs, case):
    """Token ids must match exactly (a tolerance would pass a neighbouring token)."""
    if out.dtype != torch.int64 or out.shape != ref.shape:
        raise AssertionError(f"greedy: got {out.dtype} {tuple(out.shape)}, expected int64 {tuple(ref.shape)}")
    wrong = (out.cpu() != ref.cpu()).nonzero().flatten().tolist()
    if wrong:
        raise AssertionError(f"greedy: rows {wrong[:8]} differ for case {case}: got {out[wrong[:8]].tolist()}, "
                             f"expected {ref[wrong[:8]].tolist()}")


def _bench_cases():
    return [{"batch": b, "vocab": v, "dtype": torch.float32, "mode": "none"} for v in VOCABS for b in (1, 8, 64, 256)]


register(Op(
    name="greedy",
    triton=greedy,
    torch=greedy_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [{"batch": 3, "vocab": 455, "dtype": dt, "mode": m} for dt in DTYPES
                         for m in ("ties", "bad")],
    flops=lambda c: float(c["batch"] * c["vocab"]),
    bytes=lambda c: float(c["batch"] * c["vocab"] * c["dtype"].itemsize),
    compare=_compare,
    baseline=greedy_eager,
    baseline_name="torch.argmax",
))
