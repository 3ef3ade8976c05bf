"""Attention's input at one token: RMSNorm, the q/k/v projection, RoPE and the KV-cache write in one launch.

Math, for a row x of width K, an optional residual r, the norm's weight g [K], the fused q/k/v weight
W [(Hq + 2 Hkv) D, K] (q's heads, then k's, then v's, D rows each) and a bias or none:

    qkv, h = rmsnorm_linear(x, g, W, bias, r, eps)          (kernels/rmsnorm_linear.py)
    q, k, v = qkv's heads;  q, k <- rotate(q, k, position)   (kernels/rope.py, half-rotation style)
    k_cache[slot], v_cache[slot] = k, v                      (kernels/kv_cache.py; slot -1 writes nothing)
    returns (qkv with q and k rotated, h)

i.e. ``rmsnorm_linear`` then ``rope_kv_write`` on views of its output, rounding for rounding: the two launches
a decode step runs before attention, for models without a per-head q/k norm (Qwen3 has one, between the
projection and RoPE, so it keeps the two launches).

Kernel: RoPE mixes element j of a head with element j + D/2, so the program that computes both can rotate
them where they are. The GEMV streams *pairs* of weight rows (``kernels._paired_gemv``): pair p is row
j of head p // (D/2), j = p mod D/2, and the row D/2 below it. The program that finishes a pair (the only
one, or the last split to arrive) adds the bias, rounds both to x's dtype as the GEMV stores them, rotates
q and k heads by the token's cos/sin (float32, then rounded, as ``rope`` does), stores the pair into the
qkv output and, for k and v heads, into the cache slot. The un-rotated q/k never go to memory.

Variants (:func:`choose_rmsnorm_qkv_rope_variant`): ``"fused"`` at one token with K <= MAX_FUSED_K, else
``"separate"``: ``rmsnorm_linear`` then ``rope_kv_write``. The engine uses the op through engine/ops.py
FUSIONS for a dense q/k/v matrix.
"""

from __future__ import annotations

import torch

from kernels import alloc, kv_cache, pdl, rope
from kernels._paired_gemv import PAIR_CONFIGS, finish_pairs, normed_pair_dots
from kernels._triton import tl, triton
from kernels.device import check_backend
from kernels.linear_prefill import cdiv
from kernels.registry import Op, register
from kernels.rmsnorm_linear import _check as _norm_linear_check
from kernels.rmsnorm_linear import (
    choose_rmsnorm_linear_variant,
    norm_gemv_launch,
    rmsnorm_linear,
    rmsnorm_linear_reference,
)
from kernels.rope_kv_write import rope_kv_write, rope_kv_write_reference
from kernels.tuning import Tuned, graph_bench


@triton.jit
def _rmsnorm_qkv_rope_kernel(
    x_ptr, r_ptr, g_ptr, w_ptr, b_ptr, y_ptr, h_ptr, part_ptr, count_ptr, P, K, stride_wn, eps, K_CHUNK, SPLITS,
    pos_ptr, cs_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, n_q_heads, n_kv_heads, half, stride_cs, max_position,
    stride_cb, stride_co, stride_ch,
    HAS_RESIDUAL: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PAGE: tl.constexpr, PDL: tl.constexpr,
    PREFETCH: tl.constexpr = False,
):
    """One token. A program: BLOCK_N pairs (rows j and j + D/2 of a head), K in [split * K_CHUNK, +K_CHUNK)."""
    pdl.start(PDL)
    offs_p = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    p = tl.minimum(offs_p, P - 1)
    head = p // half
    j = p % half
    rows = (head * 2 * half + j).to(tl.int64)
    s1, s2 = normed_pair_dots(x_ptr, r_ptr, g_ptr, w_ptr, h_ptr, rows, rows + half, K, stride_wn, eps, K_CHUNK,
                              HAS_RESIDUAL, EVEN, BLOCK_H, BLOCK_K, PDL, PREFETCH)
    dtype = y_ptr.dtype.element_ty
    last, x1, x2 = finish_pairs(s1, s2, part_ptr, count_ptr, offs_p, P, SPLITS, b_ptr, rows, rows + half, HAS_BIAS,
                                dtype)
    if last:  # x1, x2: q, k or v as the projection stores them
        ok = offs_p < P
        pos = tl.load(pos_ptr)
        tl.device_assert((pos >= 0) & (pos < max_position), "rope: position outside the cos/sin cache")
        cos = tl.load(cs_ptr + pos * stride_cs + j)
        sin = tl.load(cs_ptr + pos * stride_cs + half + j)
        rotate = head < n_q_heads + n_kv_heads  # q and k heads; v passes through
        r1 = tl.where(rotate, x1 * cos - x2 * sin, x1).to(dtype)
        r2 = tl.where(rotate, x2 * cos + x1 * sin, x2).to(dtype)
        tl.store(y_ptr + rows, r1, mask=ok)
        tl.store(y_ptr + rows + half, r2, mask=ok)
        # k heads to the k cache, v heads to the v cache, at the token's slot (-1: none). The slot test is a
        # full-tile comparison, as in kv_cache_write (a scalar operand of `&` breaks the interpreter's masks).
        slot = tl.load(slot_ptr).to(tl.int64)
        kv_head = head - n_q_heads
        is_k = ok & (kv_head >= 0) & (kv_head < n_kv_heads) & ((offs_p * 0 + slot) >= 0)
        is_v = ok & (kv_head >= n_kv_heads) & ((offs_p * 0 + slot) >= 0)
        g = tl.where(kv_head >= n_kv_heads, kv_head - n_kv_heads, kv_head)
        dst = (slot // PAGE) * stride_cb + (slot % PAGE) * stride_co + g.to(tl.int64) * stride_ch + j
        tl.store(k_cache_ptr + dst, r1.to(k_cache_ptr.dtype.element_ty), mask=is_k)
        tl.store(k_cache_ptr + dst + half, r2.to(k_cache_ptr.dtype.element_ty), mask=is_k)
        tl.store(v_cache_ptr + dst, r1.to(v_cache_ptr.dtype.element_ty), mask=is_v)
        tl.store(v_cache_ptr + dst + half, r2.to(v_cache_ptr.dtype.element_ty), mask=is_v)


_rmsnorm_qkv_rope = Tuned(_rmsnorm_qkv_rope_kernel, PAIR_CONFIGS, key=["P", "K"], do_bench=graph_bench,
                          cold_weight="w_ptr")


# --- launcher -------------------------------------------------------------------------------------

def choose_rmsnorm_qkv_rope_variant(M: int, N: int, K: int, dtype: torch.dtype) -> str:
    """``"fused"`` for one token whose width fits the kernel, else ``"separate"``: ``rmsnorm_linear``'s rule (a
    plain function a researcher can call or replace; ``variant=`` overrides it per call)."""
    return choose_rmsnorm_linear_variant(M, N, K, dtype)


def _head_dim(weight, num_heads, num_kv_heads) -> int:
    heads = num_heads + 2 * num_kv_heads
    if num_heads < 1 or num_kv_heads < 1 or weight.shape[0] % heads or (weight.shape[0] // heads) % 2:
        raise ValueError(f"rmsnorm_qkv_rope: weight's {weight.shape[0]} rows must be (num_heads + 2 num_kv_heads) "
                         f"= {heads} heads of an even head_dim (num_heads={num_heads}, num_kv_heads={num_kv_heads})")
    return weight.shape[0] // heads


def _views(qkv, num_heads, num_kv_heads, D):
    T = qkv.shape[0]
    q, k, v = qkv.split([num_heads * D, num_kv_heads * D, num_kv_heads * D], dim=-1)
    return q.view(T, num_heads, D), k.view(T, num_kv_heads, D), v.view(T, num_kv_heads, D)


def _check(x, norm_weight, weight, bias, residual, positions, cos_sin_cache, k_cache, v_cache, slot_mapping,
           num_heads, num_kv_heads, variant) -> int:
    _norm_linear_check(x, norm_weight, weight, bias, residual, variant, op="rmsnorm_qkv_rope")
    return _head_dim(weight, num_heads, num_kv_heads)


def rmsnorm_qkv_rope(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     residual: torch.Tensor | None, eps: float, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
                     k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor, num_heads: int,
                     num_kv_heads: int, variant: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(qkv, x + residual)``: the q/k/v projection of ``rmsnorm(x + residual) * norm_weight``, its q and k heads
    rotated by ``positions``, its k and v heads written to the caches at ``slot_mapping`` (module docstring)."""
    D = _check(x, norm_weight, weight, bias, residual, positions, cos_sin_cache, k_cache, v_cache, slot_mapping,
               num_heads, num_kv_heads, variant)
    if positions.device.type == "cpu" and positions.numel():  # free here (no device sync)
        rope._check_positions(positions, cos_sin_cache.shape[0])
    check_backend("triton", x.device)
    N, K = weight.shape
    T = x.numel() // K if K else 0
    chosen = variant or choose_rmsnorm_qkv_rope_variant(T, N, K, x.dtype)
    if chosen == "separate" or T == 0:
        qkv, h = rmsnorm_linear(x, norm_weight, weight, bias, residual, eps)
        rope_kv_write(*_views(qkv.reshape(T, N), num_heads, num_kv_heads, D), positions, cos_sin_cache,
                      k_cache, v_cache, slot_mapping)
        return qkv, h
    cache = cos_sin_cache if cos_sin_cache.stride(1) == 1 else cos_sin_cache.contiguous()
    y = alloc.empty(*x.shape[:-1], N, dtype=x.dtype, device=x.device)
    # RoPE's and the cache write's own checks, on the views of the output that they would be given.
    q, k, v = _views(y.reshape(T, N), num_heads, num_kv_heads, D)
    rope._check(q, k, positions, cos_sin_cache)
    kv_cache._check(k, v, k_cache, v_cache, slot_mapping)
    args, flags, splits, h = norm_gemv_launch(x, norm_weight, weight, bias, residual, eps, y, 2, "rmsnorm_qkv_rope")
    _rmsnorm_qkv_rope[lambda META: (cdiv(N // 2, META["BLOCK_N"]), splits)](
        *args, positions, cache, k_cache, v_cache, slot_mapping, num_heads, num_kv_heads, D // 2, cache.stride(0),
        cache.shape[0], k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), PAGE=k_cache.shape[1], **flags)
    return y, h


def rmsnorm_qkv_rope_reference(x, norm_weight, weight, bias, residual, eps, positions, cos_sin_cache, k_cache,
                               v_cache, slot_mapping, num_heads, num_kv_heads, variant=None):
    """Pure torch, same signature: the references of the parts in turn."""
    D = _head_dim(weight, num_heads, num_kv_heads)
    qkv, h = rmsnorm_linear_reference(x, norm_weight, weight, bias, residual, eps)
    T = qkv.numel() // weight.shape[0]
    rope_kv_write_reference(*_views(qkv.reshape(T, -1), num_heads, num_kv_heads, D), positions, cos_sin_cache,
                            k_cache, v_cache, slot_mapping)
    return qkv, h


def rmsnorm_qkv_rope_separate(x, norm_weight, weight, bias, residual, eps, positions, cos_sin_cache, k_cache,
                              v_cache, slot_mapping, num_heads, num_kv_heads, variant=None):
    """The baseline: the Triton ops it replaces, in turn (what the engine runs without the fusion)."""
    return rmsnorm_qkv_rope(x, norm_weight, weight, bias, residual, eps, positions, cos_sin_cache, k_cache,
                            v_cache, slot_mapping, num_heads, num_kv_heads, variant="separate")


# --- registration -------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MAX_POSITION = 4096
# (q heads, kv heads, head_dim, hidden): Qwen2.5-0.5B, Llama-3.2-1B, Llama-3-8B.
MODEL_SHAPES = [(14, 2, 64, 896), (32, 8, 64, 2048), (32, 8, 128, 4096)]


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        shapes = st.sampled_from([(1, 1, 8, 16), (3, 1, 16, 100), (2, 2, 32, 1100)])
        tokens = st.sampled_from([1, 1, 3])
    else:
        shapes = st.sampled_from([*MODEL_SHAPES, (7, 1, 96, 1000)])
        tokens = st.sampled_from([1, 1, 4])
    return st.builds(
        lambda t, s, bs, dt, bias, res, pad: {"tokens": t, "q_heads": s[0], "kv_heads": s[1], "head_dim": s[2],
                                              "K": s[3], "block_size": bs, "dtype": dt, "bias": bias,
                                              "residual": res, "pad": pad},
        tokens, shapes, st.sampled_from([16, 32]), st.sampled_from(DTYPES), st.booleans(), st.booleans(),
        st.booleans())


def _make_inputs(case, device, gen):
    T, hq, hk, D, K, bs, dt = (case[n] for n in ("tokens", "q_heads", "kv_heads", "head_dim", "K", "block_size",
                                                  "dtype"))
    N = (hq + 2 * hk) * D
    num_blocks = triton.cdiv(T, bs) + 3  # spare blocks: untouched slots must keep their values
    slots = torch.randperm(num_blocks * bs, generator=gen, device=device)[:T]
    if case.get("pad"):
        slots[0] = -1
    residual = torch.randn(T, K, generator=gen, device=device).to(dt) if case.get("residual") else None
    return {
        "x": (2 * torch.randn(T, K, generator=gen, device=device)).to(dt),
        "norm_weight": (1 + 0.1 * torch.randn(K, generator=gen, device=device)).to(dt),
        "weight": (torch.randn(N, K, generator=gen, device=device) / K ** 0.5).to(dt),
        "bias": torch.randn(N, generator=gen, device=device).to(dt) if case.get("bias") else None,
        "residual": residual, "eps": 1e-6,
        "positions": torch.randint(0, MAX_POSITION, (T,), generator=gen, device=device),
        "cos_sin_cache": rope.build_rope_cache(D, MAX_POSITION, theta=1e6, device=device),
        "k_cache": torch.randn(num_blocks, bs, hk, D, generator=gen, device=device).to(dt),
        "v_cache": torch.randn(num_blocks, bs, hk, D, generator=gen, device=device).to(dt),
        "slot_mapping": slots,
        "num_heads": hq, "num_kv_heads": hk,
    }


def _compare(out, ref, kernel_inputs, ref_inputs, case):
    """h as rmsnorm gives it; q/k/v and the caches against the references of the parts, within a bound carried
    through the rotation: each projected element may be off by the linear's tolerance t (kernels/testing.py,
    reduction over 2K, as for rmsnorm_linear), so a rotated one by t(x1) + t(x2), plus its own rounding. Every
    cache slot the token does not own must hold its old value exactly."""
    from kernels.rmsnorm import rmsnorm_reference
    from kernels.testing import assert_close, assert_within, tolerances

    (qkv, h), ins = out, kernel_inputs
    T, D, dt = case["tokens"], case["head_dim"], case["dtype"]
    if ins["residual"] is None:
        a, h_want = rmsnorm_reference(ins["x"], ins["norm_weight"], ins["eps"]), ins["x"]
    else:
        a, h_want = rmsnorm_reference(ins["x"], ins["norm_weight"], ins["eps"], ins["residual"])
    assert_close(h, h_want, dtype=dt, reduction_len=1, what=f"rmsnorm_qkv_rope residual sum {case}")
    wide = ref_inputs["weight"].dtype
    from kernels.linear import linear_reference

    projected = linear_reference(a.to(wide), ref_inputs["weight"], ref_inputs["bias"]).reshape(T, -1, D)
    rtol, atol = tolerances(dt, 2 * case["K"])
    r_out, a_out = tolerances(dt)
    t = atol + rtol * projected.abs()
    t_pair = t[..., : D // 2] + t[..., D // 2:]
    want = ref[0].reshape(T, -1, D)
    bound = torch.cat([t_pair, t_pair], dim=-1) + a_out + r_out * want.abs()
    assert_within(qkv.reshape(T, -1, D), want, bound, what=f"rmsnorm_qkv_rope q/k/v {case}")
    hq, hk = case["q_heads"], case["kv_heads"]
    for name, heads in (("k_cache", slice(hq, hq + hk)), ("v_cache", slice(hq + hk, hq + 2 * hk))):
        got, expected = ins[name], ref_inputs[name]
        slots = ins["slot_mapping"]
        written = torch.zeros(got.shape[0] * got.shape[1], dtype=torch.bool, device=got.device)
        written[slots[slots >= 0]] = True
        written = written.view(got.shape[0], got.shape[1])
        assert torch.equal(got[~written].to(expected.dtype), expected[~written]), f"{name}: a slot not written changed"
        slot_bound = bound[:, heads][slots >= 0]
        flat = got.flatten(0, 1)
        assert_within(flat[slots[slots >= 0]], expected.flatten(0, 1)[slots[slots >= 0]], slot_bound,
                      what=f"rmsnorm_qkv_rope {name} {case}")


def _bench_cases():
    return [{"tokens": 1, "q_heads": hq, "kv_heads": hk, "head_dim": D, "K": K, "block_size": 16,
             "dtype": torch.bfloat16, "bias": True, "residual": True, "pad": False} for hq, hk, D, K in MODEL_SHAPES]


def _bytes(c):
    N = (c["q_heads"] + 2 * c["kv_heads"]) * c["head_dim"]
    size = c["dtype"].itemsize
    return (N * c["K"] + c["tokens"] * (c["K"] * 4 + N + 2 * c["kv_heads"] * c["head_dim"]) + c["K"]) * size


register(Op(
    name="rmsnorm_qkv_rope",
    triton=rmsnorm_qkv_rope,
    torch=rmsnorm_qkv_rope_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [{"tokens": t, "q_heads": 3, "kv_heads": 1, "head_dim": 16, "K": 100, "block_size": 16,
                          "dtype": dt, "bias": True, "residual": res, "pad": False}
                         for dt in (torch.float32, torch.bfloat16) for t in (1, 3) for res in (False, True)],
    reduction_len=lambda c: 2 * c["K"],
    compare=_compare,
    flops=lambda c: c["tokens"] * (2.0 * (c["q_heads"] + 2 * c["kv_heads"]) * c["head_dim"] * c["K"] + 4.0 * c["K"]),
    bytes=_bytes,
    baseline=rmsnorm_qkv_rope_separate,
    baseline_name="rmsnorm_linear + rope_kv_write",
    mutates=("k_cache", "v_cache"),
))
