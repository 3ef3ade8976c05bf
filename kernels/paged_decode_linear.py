"""Paged decode attention and the linear layer after it (the attention's output projection), with the
split-KV combine moved into the projection's GEMV.

Math, for sequence b: y_b = o_b @ W^T (+ bias), o_b = paged_decode_attention(q_b, ...) flattened to
[Hq * D], W [N, Hq * D]. With the context cut into splits (flash-decoding, kernels/paged_decode.py) each
split s of query head h leaves a normalised partial o_hs and its base-2 log-sum-exp lse_hs, and

    o_h = sum_s w_hs o_hs / sum_s w_hs,   w_hs = exp2(lse_hs - max_s lse_hs)

Why fused: at batch 1 the decode layer is a chain of short launches, each waiting for the one before it to
finish on the whole card (a grid-wide dependency point). The unfused pair is three of them: split, reduce,
GEMV. Here the GEMV combines the partials of the K slice it is about to multiply, in place of loading that
slice of o: K index k is element k % D of head k // D, so a slice is BLOCK_K / D whole heads, and a
[S_STEP, heads, D] tile of partials (S_STEP splits of each) folds into a running max and sum per head, as the
reduce launch combines a head (kernels/_decode_combine.py); the result is rounded to o's dtype as the reduce
would store it, and laid out as the weight tile's K axis.
The weight tiles stay the GEMV's (kernels/linear_gemv.py), with its split-K and in-launch reduction. The
partials are read from L2 (a few KB per program), where the reduce launch costs a whole dependency point.

When: the fused GEMV serves ``FUSED_MAX_BATCH`` sequences at most (its programs re-read the weight once per
sequence) with a dense weight and a power-of-two head dim no wider than a K slice; a launch whose attention
needs one split (no partials), or any other, runs the two ops as they are. The split policy is
paged_decode's own, so the partials are the same bits.

Measured (H200, bench/results/NVIDIA_H200/run14_notes.md): in the Qwen2.5-0.5B decode graph the fusion took
689.5 us a step against 635.5 us for the split, reduce and GEMV launches, so the engine leaves it opt-in
(engine/ops.py FUSIONS). Its launch is shorter than the reduce and GEMV together (5.9 against about 7.1 us a
layer), but under PDL launches overlap and something on the step's critical path grows; the critical-path
shares of bench/decode_profile.py would say what. A first form, with a gather per element, took 952.5 us.
"""

from __future__ import annotations

import torch

from kernels import _decode_cases as cases
from kernels import _decode_splits, alloc, pdl
from kernels import linear as dense
from kernels._decode_splits import split_len
from kernels._split_k import finish_tile
from kernels._triton import tl, triton
from kernels.device import device_sms
from kernels.linear_gemv import first_weight_slice, gemv_chunk, gemv_split, weight_slice
from kernels.linear_prefill import cdiv
from kernels.paged_decode import decode_split, paged_decode_attention
from kernels.paged_decode import paged_decode_attention_reference as attention_reference
from kernels.registry import Op, register
from kernels.tuning import Tuned, graph_bench

FUSED_MAX_BATCH = 1  # sequences the fused GEMV takes; more run the two ops (read at each call)
# True: a launch given ``fresh_tokens`` reads the context length before its PDL wait (the promise covers it: the
# context lengths come from host copies, as in kernels/paged_decode.py), so the partials' loads follow the wait
# at once. Read at launch.
CTX_BEFORE_WAIT = True
# An index into COMBINE_GEMV_CONFIGS for this vendor to launch with instead of autotuning (-1: autotune); for
# benchmarks comparing tiles in the engine. Read at launch.
PINNED_CONFIG = -1
MAX_STEP = 8  # splits combined per step: [8, BLOCK_K <= 512] partials


@triton.jit
def _combined_slice(o_base, lse_base, k, n_splits, max_splits, num_q_heads, HEAD_DIM: tl.constexpr,
                    BLOCK_K: tl.constexpr, S_STEP: tl.constexpr, OUT_TY: tl.constexpr):
    """o[k : k + BLOCK_K] of one sequence (whole heads: k and BLOCK_K are multiples of HEAD_DIM), combined from
    its first ``n_splits`` partials in split order, rounded to OUT_TY, as fp32. ``o_base``/``lse_base``
    point at the sequence's partials; heads past the last (a K chunk that ends inside the tile) give zeros."""
    HEADS: tl.constexpr = BLOCK_K // HEAD_DIM
    h = k // HEAD_DIM + tl.arange(0, HEADS)
    h_ok = h < num_q_heads
    d = tl.arange(0, HEAD_DIM)
    top = tl.full([HEADS], float("-inf"), tl.float32)
    den = tl.zeros([HEADS], tl.float32)
    acc = tl.zeros([HEADS, HEAD_DIM], tl.float32)
    for s0 in range(0, n_splits, S_STEP):
        s = s0 + tl.arange(0, S_STEP)
        ok = (s < n_splits)[:, None] & h_ok[None, :]  # [S, HEADS]
        row = h[None, :] * max_splits + s[:, None]
        lse = tl.load(lse_base + row, mask=ok, other=float("-inf"))
        new_top = tl.maximum(top, tl.max(lse, 0))
        safe = tl.where(new_top == float("-inf"), 0.0, new_top)  # a head past the last: no split at all
        w = tl.where(ok, tl.math.exp2(lse - safe[None, :]), 0.0)
        o = tl.load(o_base + row[:, :, None] * HEAD_DIM + d[None, None, :], mask=ok[:, :, None], other=0.0)
        rescale = tl.math.exp2(top - safe)
        acc = acc * rescale[:, None] + tl.sum(w[:, :, None] * o, 0)
        den = den * rescale + tl.sum(w, 0)
        top = new_top
    x = (acc / tl.maximum(den, 1e-30)[:, None]).to(OUT_TY).to(tl.float32)
    return tl.reshape(x, [BLOCK_K])


@triton.jit(do_not_specialize=["ctx_ptr", "M", "split_size", "max_splits", "ctx_cap"])  # per-step values
def _combine_gemv_kernel(
    part_o_ptr, part_lse_ptr, ctx_ptr, w_ptr, b_ptr, y_ptr, part_ptr, count_ptr, M, N, K, stride_wn, stride_ym,
    K_CHUNK, SPLITS, num_q_heads, split_size, max_splits, ctx_cap,
    HEAD_DIM: tl.constexpr, FIT: tl.constexpr, ALIGN: tl.constexpr, S_STEP: tl.constexpr, HAS_BIAS: tl.constexpr,
    EVEN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr,
    CTX_EARLY: tl.constexpr,
):
    pdl.start(PDL)
    pid_n, split, seq = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    k_start = split * K_CHUNK
    k_end = tl.minimum(k_start + K_CHUNK, K)
    w_rows = w_ptr + tl.minimum(offs_n, N - 1).to(tl.int64)[:, None] * stride_wn + offs_k[None, :]
    if CTX_EARLY:
        ctx = tl.load(ctx_ptr + seq)  # a host copy, promised settled (CTX_BEFORE_WAIT)
    w, _ = first_weight_slice(w_rows, k_start, offs_k, k_end, EVEN, PDL, PREFETCH)
    if not CTX_EARLY:
        ctx = tl.load(ctx_ptr + seq)
    # After the wait: the split launch wrote the partials.
    ctx = tl.minimum(ctx, ctx_cap)
    n_splits = tl.cdiv(ctx, split_len(ctx, split_size, max_splits, FIT, ALIGN))
    lse_base = part_lse_ptr + seq.to(tl.int64) * num_q_heads * max_splits
    o_base = part_o_ptr + seq.to(tl.int64) * num_q_heads * max_splits * HEAD_DIM
    out_ty: tl.constexpr = y_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    x = _combined_slice(o_base, lse_base, k_start, n_splits, max_splits, num_q_heads, HEAD_DIM, BLOCK_K, S_STEP,
                        out_ty)
    acc += w * x[None, :]
    for k in range(k_start + BLOCK_K, k_end, BLOCK_K):
        w, _ = weight_slice(w_rows, k, offs_k, k_end, EVEN)
        x = _combined_slice(o_base, lse_base, k, n_splits, max_splits, num_q_heads, HEAD_DIM, BLOCK_K, S_STEP,
                            out_ty)
        acc += w * x[None, :]
    y = tl.sum(acc, axis=1)[None, :]  # [1, BLOCK_N]: one row, this program's sequence
    finish_tile(y, y_ptr, b_ptr, part_ptr, count_ptr, seq + tl.arange(0, 1), offs_n, M, N, stride_ym,
                split, SPLITS, HAS_BIAS)


# --- configs as data ----------------------------------------------------------------------------
# The plain GEMV's tiles; a [S_STEP, BLOCK_K] tile of partials is at most 4096 fp32 (32 a thread at 4 warps).
# First: the interpreter's choice.
COMBINE_GEMV_CONFIGS = {
    "cuda": [
        dict(BLOCK_N=16, BLOCK_K=128, num_warps=4, num_stages=1),
        dict(BLOCK_N=16, BLOCK_K=256, num_warps=4, num_stages=3),
        dict(BLOCK_N=8, BLOCK_K=256, num_warps=2, num_stages=3),
        dict(BLOCK_N=32, BLOCK_K=256, num_warps=4, num_stages=3),
        dict(BLOCK_N=64, BLOCK_K=128, num_warps=8, num_stages=3),
        # A whole 512-wide K chunk per tile: the partials of the chunk's heads in one round of loads.
        dict(BLOCK_N=8, BLOCK_K=512, num_warps=4, num_stages=1),
        dict(BLOCK_N=16, BLOCK_K=512, num_warps=8, num_stages=1),
    ],
    "hip": [
        dict(BLOCK_N=16, BLOCK_K=128, num_warps=4, num_stages=1),
        dict(BLOCK_N=16, BLOCK_K=256, num_warps=4, num_stages=2),
    ],
}
_MIN_BLOCK_K = min(c["BLOCK_K"] for t in COMBINE_GEMV_CONFIGS.values() for c in t)
_combine_gemv = Tuned(_combine_gemv_kernel, COMBINE_GEMV_CONFIGS, key=["N", "K", "S_STEP"], do_bench=graph_bench,
                      cold_weight="w_ptr")


# --- launcher -------------------------------------------------------------------------------------

def paged_decode_attention_linear(q, k_cache, v_cache, block_tables, context_lens, weight, bias=None, scale=None,
                                  max_context_len=None, num_splits=None, split_size=None, fresh_tokens=None):
    """``paged_decode_attention(q, ...)`` flattened to [B, Hq * D], times ``weight [N, Hq * D]`` (+ bias);
    returns [B, N]. The attention arguments mean what they mean to paged_decode_attention."""
    _check(q, weight, bias)
    batch, q_heads, D = q.shape
    # Whole heads per K slice: a power-of-two head dim no wider than the narrowest slice.
    whole_heads = D & (D - 1) == 0 and D <= _MIN_BLOCK_K
    fuse = 0 < batch <= FUSED_MAX_BATCH and weight.dtype == q.dtype and whole_heads
    attention = (q, k_cache, v_cache, block_tables, context_lens, scale, max_context_len, num_splits, split_size,
                 fresh_tokens)
    split = decode_split(*attention) if fuse else None
    if split is None or split.part_o is None:  # unfused, or one split: o is there already
        o = split.o if split is not None else paged_decode_attention(*attention)
        return dense.linear(o.reshape(batch, q_heads * D), weight, bias)
    N, K = weight.shape
    weight = weight if weight.stride(-1) == 1 else weight.contiguous()
    y = alloc.empty(batch, N, dtype=q.dtype, device=q.device)
    sms = device_sms(q.device)
    chunk, splits, partials, counters, even = gemv_split(q, batch, N, K, 1, y, gemv_chunk(N, K, sms))
    s_step = min(triton.next_power_of_2(split.max_splits), MAX_STEP)
    launch = pdl.launch_options(q.device, "paged_decode_linear")
    args = (split.part_o, split.part_lse, context_lens, weight, bias if bias is not None else y, y, partials,
            counters, batch, N, K, weight.stride(0), y.stride(0), chunk, splits, q_heads, split.size,
            split.max_splits, split.max_context)
    flags = dict(HEAD_DIM=D, FIT=split.fit, ALIGN=_decode_splits.SPLIT_ALIGN, S_STEP=s_step,
                 HAS_BIAS=bias is not None, EVEN=even, PREFETCH=bool(launch["PDL"]) and pdl.is_static(weight),
                 CTX_EARLY=CTX_BEFORE_WAIT and fresh_tokens is not None and bool(launch["PDL"]), **launch)
    if PINNED_CONFIG >= 0:
        config = _combine_gemv.candidates()[PINNED_CONFIG]
        _combine_gemv_kernel[(cdiv(N, config["BLOCK_N"]), splits, batch)](*args, **flags, **config)
    else:
        _combine_gemv[lambda META: (cdiv(N, META["BLOCK_N"]), splits, batch)](*args, **flags)
    return y


def _check(q, weight, bias) -> None:
    name = "paged_decode_attention_linear"
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"{name}: weight must be a 2-D tensor [N, Hq * D]")
    if q.dim() == 3 and weight.shape[1] != q.shape[1] * q.shape[2]:
        raise ValueError(f"{name}: weight [N, K] needs K = q heads * head dim = {q.shape[1] * q.shape[2]}, "
                         f"got weight shape {tuple(weight.shape)}")
    if weight.dtype != q.dtype or (bias is not None and bias.dtype != q.dtype):
        raise TypeError(f"{name}: weight and bias must have q's dtype {q.dtype}; got {weight.dtype}"
                        + ("" if bias is None else f" and {bias.dtype}"))


def paged_decode_attention_linear_reference(q, k_cache, v_cache, block_tables, context_lens, weight, bias=None,
                                            scale=None, max_context_len=None, num_splits=None, split_size=None,
                                            fresh_tokens=None):
    """Pure torch, same signature: the two references in turn."""
    o = attention_reference(q, k_cache, v_cache, block_tables, context_lens, scale)
    return dense.linear_reference(o.reshape(q.shape[0], -1), weight, bias)


def paged_decode_attention_linear_separate(q, k_cache, v_cache, block_tables, context_lens, weight, bias=None,
                                           scale=None, max_context_len=None, num_splits=None, split_size=None,
                                           fresh_tokens=None):
    """The baseline: the two Triton ops, three launches (what the engine runs without the fusion)."""
    o = paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale, max_context_len, num_splits,
                               split_size, fresh_tokens)
    return dense.linear(o.reshape(q.shape[0], -1), weight, bias)


# --- registration -------------------------------------------------------------------------------

def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    def with_projection(case, n, bias, batch):
        return dict(case, context_lens=case["context_lens"][:batch], out_features=n, bias=bias)

    ns = st.sampled_from([1, 33, 64] if profile == "cpu" else [896, 1000, 4096])
    return st.builds(with_projection, cases.cases(profile), ns, st.booleans(), st.sampled_from([1, 1, 2]))


def _make_inputs(case, device, gen):
    inputs = cases.make_inputs(case, device, gen)
    q = inputs["q"]
    K = q.shape[1] * q.shape[2]
    w = torch.randn(case["out_features"], K, generator=gen, device=device) / K ** 0.5
    b = torch.randn(case["out_features"], generator=gen, device=device) if case.get("bias") else None
    return dict(inputs, weight=w.to(q.dtype), bias=None if b is None else b.to(q.dtype))


def _compare(out, ref, kernel_inputs, ref_inputs, case):
    """Against the reference fed the attention rounded to q's dtype, as the kernel (and the unfused pair) uses
    it: the upcast reference would skip that rounding, which the sum over Hq * D then magnifies."""
    from kernels.testing import assert_close

    ins = kernel_inputs
    o = attention_reference(ins["q"], ins["k_cache"], ins["v_cache"], ins["block_tables"], ins["context_lens"])
    wide = ref_inputs["weight"].dtype
    expected = dense.linear_reference(o.reshape(o.shape[0], -1).to(wide), ref_inputs["weight"], ref_inputs["bias"])
    assert_close(out, expected, dtype=case["dtype"], reduction_len=2 * ins["weight"].shape[1], tf32=True,
                 what=f"paged_decode_attention_linear {case}")


def _bench_cases():
    """Batch 1 at the engine's shapes: Qwen2.5-0.5B (14 q / 2 kv heads of 64, o_proj 896 x 896) and
    Llama-3.2-1B (32 / 8 of 64, 2048 x 2048), short and long contexts."""
    return [{"batch": 1, "context": ctx, "q_heads": hq, "kv_heads": hkv, "head_dim": 64, "block_size": 16,
             "dtype": torch.bfloat16, "num_splits": None, "pass_max": True, "layout": "contiguous",
             "out_features": hq * 64, "bias": False}
            for hq, hkv in ((14, 2), (32, 8)) for ctx in (384, 4096)]


def _bytes(c):
    n, k = c["out_features"], c["q_heads"] * c["head_dim"]
    return cases.bytes_moved(c) + (n * k + n * len(cases.context_lens_of(c))) * c["dtype"].itemsize


register(Op(
    name="paged_decode_attention_linear",
    triton=paged_decode_attention_linear,
    torch=paged_decode_attention_linear_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [dict(c, context_lens=c["context_lens"][1:2], out_features=33, bias=True)
                         for c in cases.smoke_cases()],
    reduction_len=lambda c: 2 * c["q_heads"] * c["head_dim"],
    compare=_compare,
    flops=lambda c: cases.flops(c) + 2.0 * len(cases.context_lens_of(c)) * c["out_features"] * c["q_heads"]
    * c["head_dim"],
    bytes=_bytes,
    baseline=paged_decode_attention_linear_separate,
    baseline_name="paged decode + linear",
    tf32=True,
))
