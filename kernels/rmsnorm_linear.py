"""RMSNorm (with the residual add before it) fused into the linear layer that reads its output.

Math, for a row x of width K, an optional residual r, the norm's weight g [K] and a linear W [N, K]:

    h = x + r                                   rounded to x's dtype (h = x without a residual)
    a = h / sqrt(mean(h^2) + eps) * g           rounded to x's dtype, as ``rmsnorm`` stores it
    y = a @ W^T (+ bias)                        accumulated in float32;   returns (y, h)

so ``rmsnorm_linear(x, g, W, b, r, eps) == (linear(rmsnorm(x, g, eps, r)[0], W, b), x + r)``: the pair
a decoder layer runs twice (the input norm before q/k/v, the post-attention norm before gate/up).

Why fuse: at one token per step a norm is a launch of under two microseconds that moves a few KB, and
the product after it is a latency-bound GEMV of a few microseconds. In the fused kernel every program of
the GEMV (``kernels.linear_gemv``'s tiles, chunks and configs) first reads the whole row of x and r (a
few KB from L2), forms h and its inverse RMS, and then normalises each [BLOCK_K] slice of x as it loads
it; the program that owns the first tile and split also stores h, the next residual. One launch fewer
per norm, and a never goes to memory.

Variants (:func:`choose_rmsnorm_linear_variant`): ``"fused"`` at M = 1 with K <= MAX_FUSED_K (the row
lives in registers), else ``"separate"``: ``rmsnorm`` then ``linear``, the two launches it replaces.
The engine uses the op through ``engine/ops.py`` FUSIONS for dense single-matrix projections.
"""

from __future__ import annotations

import torch

from kernels import alloc, pdl
from kernels import linear as dense
from kernels._split_k import finish_tile
from kernels._triton import tl, triton
from kernels.device import check_backend, device_sms
from kernels.linear_gemv import GEMV_CONFIGS, first_weight_slice, gemv_chunk, gemv_split, weight_slice
from kernels.linear_prefill import cdiv
from kernels.registry import Op, register
from kernels.rmsnorm import _check as _norm_check
from kernels.rmsnorm import rmsnorm, rmsnorm_reference
from kernels.tuning import Tuned, graph_bench

VARIANTS = ("fused", "separate")
MAX_FUSED_K = 16384  # each program holds the whole row: BLOCK_H = next_power_of_2(K) elements


@triton.jit
def _rounded(v, dtype: tl.constexpr):
    """float32 ``v`` to ``dtype``, rounding to nearest even as torch does. For bf16 the rounding is done on
    the bits (what the GPU's conversion does anyway): the interpreter would truncate."""
    if dtype == tl.bfloat16:
        b = v.to(tl.int32, bitcast=True)
        b = (b + 0x7FFF + ((b >> 16) & 1)) & -65536
        return b.to(tl.float32, bitcast=True).to(dtype)
    return v.to(dtype)


@triton.jit
def _normed(x_ptr, r_ptr, g_ptr, ks, k_ok, inv_rms, HAS_RESIDUAL: tl.constexpr, EVEN: tl.constexpr):
    """a[ks] in float32, rounded through x's dtype as the two-launch path stores it."""
    if EVEN:
        x = tl.load(x_ptr + ks)
        g = tl.load(g_ptr + ks)
    else:
        x = tl.load(x_ptr + ks, mask=k_ok, other=0.0)
        g = tl.load(g_ptr + ks, mask=k_ok, other=0.0)
    if HAS_RESIDUAL:
        if EVEN:  # noqa: SIM108  (a compile-time branch)
            r = tl.load(r_ptr + ks)
        else:
            r = tl.load(r_ptr + ks, mask=k_ok, other=0.0)
        x = _rounded(x.to(tl.float32) + r.to(tl.float32), x.dtype)
    return _rounded(x.to(tl.float32) * inv_rms * g.to(tl.float32), x.dtype).to(tl.float32)


@triton.jit
def row_inv_rms(x_ptr, r_ptr, h_ptr, K, eps, store_h, HAS_RESIDUAL: tl.constexpr, BLOCK_H: tl.constexpr):
    """The whole row: h = x + r, its inverse RMS (as kernels/rmsnorm.py computes it); h stored where ``store_h``
    (one program of the launch)."""
    cols = tl.arange(0, BLOCK_H)
    row_ok = cols < K
    h = tl.load(x_ptr + cols, mask=row_ok, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + cols, mask=row_ok, other=0.0)
        h = _rounded(h.to(tl.float32) + r.to(tl.float32), h.dtype)
        if store_h:
            tl.store(h_ptr + cols, h, mask=row_ok)
    hf = h.to(tl.float32)
    return tl.math.rsqrt(tl.sum(hf * hf, axis=0) / K + eps)


@triton.jit
def _rmsnorm_gemv_kernel(
    x_ptr, r_ptr, g_ptr, w_ptr, b_ptr, y_ptr, h_ptr, part_ptr, count_ptr,
    N, K, stride_wn, eps, K_CHUNK, SPLITS,
    HAS_RESIDUAL: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr = False,
):
    """One row (M = 1). A program: BLOCK_N weight rows, K elements [split * K_CHUNK, +K_CHUNK)."""
    pdl.start(PDL)
    pid_n, split = tl.program_id(0), tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    k_start = split * K_CHUNK
    k_end = tl.minimum(k_start + K_CHUNK, K)
    w_rows = w_ptr + tl.minimum(offs_n, N - 1).to(tl.int64)[:, None] * stride_wn + offs_k[None, :]
    w, k_ok = first_weight_slice(w_rows, k_start, offs_k, k_end, EVEN, PDL, PREFETCH)
    inv_rms = row_inv_rms(x_ptr, r_ptr, h_ptr, K, eps, (pid_n == 0) & (split == 0), HAS_RESIDUAL, BLOCK_H)
    # The GEMV of kernels/linear_gemv.py with x normalised as each slice is loaded.
    a = _normed(x_ptr, r_ptr, g_ptr, k_start + offs_k, k_ok, inv_rms, HAS_RESIDUAL, EVEN)
    acc = w * a[None, :]
    for k in range(k_start + BLOCK_K, k_end, BLOCK_K):
        w, k_ok = weight_slice(w_rows, k, offs_k, k_end, EVEN)
        a = _normed(x_ptr, r_ptr, g_ptr, k + offs_k, k_ok, inv_rms, HAS_RESIDUAL, EVEN)
        acc += w * a[None, :]
    offs_m = tl.arange(0, 1)
    y = tl.sum(acc, axis=1)[None, :]
    finish_tile(y, y_ptr, b_ptr, part_ptr, count_ptr, offs_m, offs_n, 1, N, N, split, SPLITS, HAS_BIAS)


_rmsnorm_gemv = Tuned(_rmsnorm_gemv_kernel, GEMV_CONFIGS, key=["N", "K"], do_bench=graph_bench,
                      cold_weight="w_ptr")


# --- launcher -------------------------------------------------------------------------------------

def choose_rmsnorm_linear_variant(M: int, N: int, K: int, dtype: torch.dtype) -> str:
    """``"fused"`` for one row whose width fits the kernel, else ``"separate"`` (a plain function a
    researcher can call or replace; ``variant=`` overrides it per call)."""
    return "fused" if M == 1 and K <= MAX_FUSED_K else "separate"


def _check(x, norm_weight, weight, bias, residual, variant, op: str = "rmsnorm_linear") -> None:
    """The checks of this op and of the ops built on its GEMV (``op`` names the one called, for the messages)."""
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"{op}: unknown variant {variant!r}; choose one of {VARIANTS} or None")
    if variant == "fused" and (x.numel() // max(x.shape[-1], 1) != 1 or x.shape[-1] > MAX_FUSED_K):
        raise ValueError(f"{op}: the fused variant takes one row of at most {MAX_FUSED_K} elements, "
                         f"got x of shape {tuple(x.shape)}; use variant='separate' or None")
    # The norm's checks (x, its weight, the residual), then the linear's on the normalised shape.
    _norm_check(x, norm_weight, residual)
    dense._check(x, weight, bias, None)


def _separate(x, norm_weight, weight, bias, residual, eps):
    if residual is None:
        return dense.linear(rmsnorm(x, norm_weight, eps), weight, bias), x
    a, h = rmsnorm(x, norm_weight, eps, residual)
    return dense.linear(a, weight, bias), h


def rmsnorm_linear(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None = None, residual: torch.Tensor | None = None, eps: float = 1e-6,
                   variant: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(linear(rmsnorm(x + residual) * norm_weight, weight, bias), x + residual)``; without a residual
    the second output is x itself. One launch at M = 1 (see the module docstring)."""
    _check(x, norm_weight, weight, bias, residual, variant)
    check_backend("triton", x.device)
    N, K = weight.shape
    M = x.numel() // K if K else 0
    chosen = variant or choose_rmsnorm_linear_variant(M, N, K, x.dtype)
    if chosen == "separate" or M == 0 or N == 0:
        return _separate(x, norm_weight, weight, bias, residual, eps)
    y = alloc.empty(*x.shape[:-1], N, dtype=x.dtype, device=x.device)
    args, flags, splits, h = norm_gemv_launch(x, norm_weight, weight, bias, residual, eps, y, 1, "rmsnorm_linear")
    _rmsnorm_gemv[lambda META: (cdiv(N, META["BLOCK_N"]), splits)](*args, **flags)
    return y, h


def norm_gemv_launch(x, norm_weight, weight, bias, residual, eps, y, rows: int, kernel: str):
    """(leading arguments, flags, split count, h) of a one-row norm-GEMV launch writing ``y``: this op's kernel
    (``rows`` = 1) or a paired-row one (``rows`` = 2, kernels/_paired_gemv.py: y's columns index pairs of weight
    rows); ``kernel`` names the launch for ``kernels.pdl.KERNEL_SIGNAL``. Every such kernel starts with ``x, r,
    g, w, b, y, h, partials, counters, columns, K, stride_wn, eps, K_CHUNK, SPLITS``. K is split by the plain
    GEMV's rule for the whole weight, as the unfused product splits it."""
    N, K = weight.shape
    x1 = x.reshape(K).contiguous()
    r1 = residual.reshape(K).contiguous() if residual is not None else x1
    weight = weight if weight.stride(-1) == 1 else weight.contiguous()
    h = alloc.empty_like(x) if residual is not None else x
    sms = device_sms(x.device)
    chunk, splits, partials, counters, even = gemv_split(x1, rows, N // rows, K, rows, y, gemv_chunk(N, K, sms))
    launch = pdl.launch_options(x.device, kernel)
    args = (x1, r1, norm_weight, weight, bias if bias is not None else y, y, h, partials, counters,
            N // rows, K, weight.stride(0), eps, chunk, splits)
    flags = dict(HAS_RESIDUAL=residual is not None, HAS_BIAS=bias is not None, EVEN=even,
                 BLOCK_H=triton.next_power_of_2(K), PREFETCH=bool(launch["PDL"]) and pdl.is_static(weight), **launch)
    return args, flags, splits, h


def rmsnorm_linear_reference(x, norm_weight, weight, bias=None, residual=None, eps=1e-6, variant=None):
    """Pure torch, same signature: the two references in turn."""
    if residual is None:
        a, h = rmsnorm_reference(x, norm_weight, eps), x
    else:
        a, h = rmsnorm_reference(x, norm_weight, eps, residual)
    return dense.linear_reference(a, weight, bias), h


def rmsnorm_linear_separate(x, norm_weight, weight, bias=None, residual=None, eps=1e-6, variant=None):
    """The baseline: the two Triton ops, two launches (what the engine runs without the fusion)."""
    return _separate(x, norm_weight, weight, bias, residual, eps)


# --- registration -------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (N, K) of the projections after a norm: qkv and gate_up of Qwen2.5-0.5B, Llama-3.2-1B, Llama-3-8B.
MODEL_PROJECTIONS = [(1152, 896), (9728, 896), (3072, 2048), (16384, 2048), (6144, 4096), (28672, 4096)]


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        m, n, k = st.sampled_from([1, 1, 3]), st.sampled_from([1, 33, 64]), st.sampled_from([16, 100, 1100])
    else:
        m, n, k = st.sampled_from([1, 1, 4, 64]), st.sampled_from([1152, 9728, 33]), \
            st.sampled_from([896, 2048, 4096, 1000])
    return st.fixed_dictionaries({"M": m, "N": n, "K": k, "dtype": st.sampled_from(DTYPES),
                                  "bias": st.booleans(), "residual": st.booleans()})


def _make_inputs(case, device, gen):
    M, N, K, dt = case["M"], case["N"], case["K"], case["dtype"]
    x = 2 * torch.randn(M, K, generator=gen, device=device)
    g = 1 + 0.1 * torch.randn(K, generator=gen, device=device)
    w = torch.randn(N, K, generator=gen, device=device) / K ** 0.5
    b = torch.randn(N, generator=gen, device=device) if case.get("bias") else None
    r = torch.randn(M, K, generator=gen, device=device) if case.get("residual") else None
    return {"x": x.to(dt), "norm_weight": g.to(dt), "weight": w.to(dt), "bias": None if b is None else b.to(dt),
            "residual": None if r is None else r.to(dt), "eps": 1e-6}


def _compare(out, ref, kernel_inputs, ref_inputs, case):
    """h as rmsnorm gives it; y against the reference fed a rounded to x's dtype, as the kernel (and the two-launch
    path) uses it: the upcast reference would skip that rounding, which the sum over K then magnifies."""
    from kernels.testing import assert_close

    y, h = out
    ins = kernel_inputs
    if ins["residual"] is None:
        a, h_want = rmsnorm_reference(ins["x"], ins["norm_weight"], ins["eps"]), ins["x"]
    else:
        a, h_want = rmsnorm_reference(ins["x"], ins["norm_weight"], ins["eps"], ins["residual"])
    # The interpreter's rmsnorm (the separate variant) truncates bf16 where a GPU rounds: one unit apart.
    assert_close(h, h_want, dtype=case["dtype"], reduction_len=1, what=f"rmsnorm_linear residual sum {case}")
    wide = ref_inputs["weight"].dtype
    expected = dense.linear_reference(a.to(wide), ref_inputs["weight"], ref_inputs["bias"])
    # The rounding of a may land one unit apart where the kernel's inverse RMS differs in its last bits.
    assert_close(y, expected, dtype=case["dtype"], reduction_len=2 * case["K"], what=f"rmsnorm_linear {case}")


def _bench_cases():
    return [{"M": 1, "N": n, "K": k, "dtype": torch.bfloat16, "bias": False, "residual": True}
            for n, k in MODEL_PROJECTIONS]


def _bytes(c):
    size = c["dtype"].itemsize
    return (c["N"] * c["K"] + c["M"] * c["K"] * (4 if c.get("residual") else 1) + c["K"] + c["M"] * c["N"]) * size


register(Op(
    name="rmsnorm_linear",
    triton=rmsnorm_linear,
    torch=rmsnorm_linear_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [{"M": m, "N": 33, "K": 100, "dtype": dt, "bias": True, "residual": res}
                         for dt in (torch.float32, torch.bfloat16) for m in (1, 3) for res in (False, True)],
    reduction_len=lambda c: 2 * c["K"],
    compare=_compare,
    flops=lambda c: 2.0 * c["M"] * c["N"] * c["K"] + 4.0 * c["M"] * c["K"],
    bytes=_bytes,
    baseline=rmsnorm_linear_separate,
    baseline_name="rmsnorm + linear",
))
