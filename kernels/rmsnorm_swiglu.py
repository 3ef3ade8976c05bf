"""The first half of a SwiGLU MLP at one token: RMSNorm, the gate/up projection and the SiLU gate in one launch.

Math, for a row x of width K, an optional residual r, the norm's weight g [K], and the fused gate/up
weight W [2I, K] (gate rows 0..I-1, then up rows I..2I-1, as the engine concatenates them):

    h = x + r                                  rounded to x's dtype (h = x without a residual)
    a = h / sqrt(mean(h^2) + eps) * g          rounded to x's dtype, as ``rmsnorm`` stores it
    u = a @ W^T (+ bias)                       accumulated in float32, rounded to x's dtype
    y = silu(u[:I]) * u[I:]                    in float32, rounded to x's dtype;     returns (y, h)

so ``rmsnorm_swiglu(x, g, W, b, r, eps) == (silu_and_mul(rmsnorm_linear(x, g, W, b, r, eps)[0]), x + r)``,
rounding for rounding: the three launches a decode step runs between attention and the down projection.

Kernel: the paired-row GEMV of ``kernels._paired_gemv`` (x normalised as each K slice is loaded): a program
owns BLOCK_N gate rows *and* the BLOCK_N up rows I further down, with one accumulator each. Gate j and up j
then meet in the program that finishes output column j (the only one, or the last split to arrive), which
applies the gate and writes y. The [T, 2I] gate/up output never goes to
memory, and the ``silu_and_mul`` launch is gone. K is split as the unfused [2I, K] GEMV splits it.

Variants (:func:`choose_rmsnorm_swiglu_variant`): ``"fused"`` at M = 1 with K <= MAX_FUSED_K, else
``"separate"``: ``rmsnorm_linear`` then ``silu_and_mul``. The engine uses the op through engine/ops.py
FUSIONS for a dense gate/up matrix.
"""

from __future__ import annotations

import torch

from kernels import alloc, pdl
from kernels import linear as dense
from kernels._paired_gemv import PAIR_CONFIGS, finish_pairs, normed_pair_dots
from kernels._triton import tl, triton
from kernels.device import check_backend
from kernels.linear_prefill import cdiv
from kernels.registry import Op, register
from kernels.rmsnorm import rmsnorm_reference
from kernels.rmsnorm_linear import _check as _norm_linear_check
from kernels.rmsnorm_linear import (
    choose_rmsnorm_linear_variant,
    norm_gemv_launch,
    rmsnorm_linear,
    rmsnorm_linear_reference,
)
from kernels.silu_and_mul import silu_and_mul, silu_and_mul_reference
from kernels.tuning import Tuned, graph_bench


@triton.jit
def _rmsnorm_swiglu_kernel(
    x_ptr, r_ptr, g_ptr, w_ptr, b_ptr, y_ptr, h_ptr, part_ptr, count_ptr,
    I, K, stride_wn, eps, K_CHUNK, SPLITS,
    HAS_RESIDUAL: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr = False,
):
    """One row. A program: gate rows [n0, n0 + BLOCK_N), the up rows I below them, K in [split * K_CHUNK, +K_CHUNK)."""
    pdl.start(PDL)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = tl.minimum(offs_n, I - 1).to(tl.int64)
    gate, up = normed_pair_dots(x_ptr, r_ptr, g_ptr, w_ptr, h_ptr, rows, rows + I, K, stride_wn, eps, K_CHUNK,
                                HAS_RESIDUAL, EVEN, BLOCK_H, BLOCK_K, PDL, PREFETCH)
    last, gate, up = finish_pairs(gate, up, part_ptr, count_ptr, offs_n, I, SPLITS, b_ptr, rows, rows + I, HAS_BIAS,
                                  y_ptr.dtype.element_ty)
    if last:  # gate and up as the gate/up GEMV stores them; the gate exactly as kernels/silu_and_mul.py applies it
        y = gate / (1.0 + tl.exp(-gate)) * up
        tl.store(y_ptr + offs_n, y.to(y_ptr.dtype.element_ty), mask=offs_n < I)


_rmsnorm_swiglu = Tuned(_rmsnorm_swiglu_kernel, PAIR_CONFIGS, key=["I", "K"], do_bench=graph_bench,
                        cold_weight="w_ptr")


# --- launcher -------------------------------------------------------------------------------------

def choose_rmsnorm_swiglu_variant(M: int, I: int, K: int, dtype: torch.dtype) -> str:
    """``"fused"`` for one row whose width fits the kernel, else ``"separate"``: ``rmsnorm_linear``'s rule (a
    plain function a researcher can call or replace; ``variant=`` overrides it per call)."""
    return choose_rmsnorm_linear_variant(M, 2 * I, K, dtype)


def _check(x, norm_weight, weight, bias, residual, variant) -> None:
    if isinstance(weight, torch.Tensor) and (weight.dim() != 2 or weight.shape[0] % 2):
        raise ValueError(f"rmsnorm_swiglu: weight must be [2I, K], the gate rows then the up rows, got shape "
                         f"{tuple(weight.shape)} (an odd row count cannot split into gate and up)")
    _norm_linear_check(x, norm_weight, weight, bias, residual, variant, op="rmsnorm_swiglu")


def _separate(x, norm_weight, weight, bias, residual, eps):
    gate_up, h = rmsnorm_linear(x, norm_weight, weight, bias, residual, eps, variant="separate")
    return silu_and_mul(gate_up), h


def rmsnorm_swiglu(x: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None = None, residual: torch.Tensor | None = None, eps: float = 1e-6,
                   variant: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(silu(gate) * up, x + residual)`` with ``[gate | up] = rmsnorm(x + residual) * norm_weight @ weight^T
    + bias``; without a residual the second output is x itself. One launch at M = 1 (module docstring)."""
    _check(x, norm_weight, weight, bias, residual, variant)
    check_backend("triton", x.device)
    N, K = weight.shape
    I = N // 2  # the intermediate size, as the models' configs name it
    M = x.numel() // K if K else 0
    chosen = variant or choose_rmsnorm_swiglu_variant(M, I, K, x.dtype)
    if chosen == "separate" or M == 0 or I == 0:
        return _separate(x, norm_weight, weight, bias, residual, eps)
    y = alloc.empty(*x.shape[:-1], I, dtype=x.dtype, device=x.device)
    args, flags, splits, h = norm_gemv_launch(x, norm_weight, weight, bias, residual, eps, y, 2, "rmsnorm_swiglu")
    _rmsnorm_swiglu[lambda META: (cdiv(I, META["BLOCK_N"]), splits)](*args, **flags)
    return y, h


def rmsnorm_swiglu_reference(x, norm_weight, weight, bias=None, residual=None, eps=1e-6, variant=None):
    """Pure torch, same signature: the references of the parts in turn."""
    gate_up, h = rmsnorm_linear_reference(x, norm_weight, weight, bias, residual, eps)
    return silu_and_mul_reference(gate_up), h


def rmsnorm_swiglu_separate(x, norm_weight, weight, bias=None, residual=None, eps=1e-6, variant=None):
    """The baseline: the Triton ops it replaces, in turn (what the engine runs without the fusion)."""
    return _separate(x, norm_weight, weight, bias, residual, eps)


# --- registration -------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (2I, K) of the gate/up projections of Qwen2.5-0.5B, Llama-3.2-1B and Llama-3-8B.
MODEL_PROJECTIONS = [(9728, 896), (16384, 2048), (28672, 4096)]


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        m, n, k = st.sampled_from([1, 1, 3]), st.sampled_from([2, 66, 128]), st.sampled_from([16, 100, 1100])
    else:
        m, n, k = st.sampled_from([1, 1, 4]), st.sampled_from([9728, 66]), st.sampled_from([896, 2048, 1000])
    return st.fixed_dictionaries({"M": m, "N": n, "K": k, "dtype": st.sampled_from(DTYPES),
                                  "bias": st.booleans(), "residual": st.booleans()})


def _make_inputs(case, device, gen):
    from kernels.rmsnorm_linear import _make_inputs as norm_linear_inputs

    return norm_linear_inputs(case, device, gen)


def _compare(out, ref, kernel_inputs, ref_inputs, case):
    """h as rmsnorm gives it; y against the references of the parts, within a bound carried through the gate.

    The gate/up products are each allowed the linear's tolerance t (kernels/testing.py, reduction over 2K: a is
    rounded to x's dtype first, one unit of which the sum magnifies). Through y = silu(g) u that becomes
    |silu'| (|u| + t_u) t_g + |silu(g)| t_u, with |silu'| <= 1.1 everywhere, plus y's own rounding."""
    from kernels.testing import assert_close, assert_within, tolerances

    y, h = out
    ins = kernel_inputs
    if ins["residual"] is None:
        a, h_want = rmsnorm_reference(ins["x"], ins["norm_weight"], ins["eps"]), ins["x"]
    else:
        a, h_want = rmsnorm_reference(ins["x"], ins["norm_weight"], ins["eps"], ins["residual"])
    assert_close(h, h_want, dtype=case["dtype"], reduction_len=1, what=f"rmsnorm_swiglu residual sum {case}")
    wide = ref_inputs["weight"].dtype
    gate, up = dense.linear_reference(a.to(wide), ref_inputs["weight"], ref_inputs["bias"]).chunk(2, dim=-1)
    expected = torch.nn.functional.silu(gate) * up
    rtol, atol = tolerances(case["dtype"], 2 * case["K"])
    t_gate, t_up = atol + rtol * gate.abs(), atol + rtol * up.abs()
    r_out, a_out = tolerances(case["dtype"])
    bound = 1.1 * (up.abs() + t_up) * t_gate + torch.nn.functional.silu(gate).abs() * t_up \
        + a_out + r_out * expected.abs()
    assert_within(y, expected, bound, what=f"rmsnorm_swiglu {case}")


def _bench_cases():
    return [{"M": 1, "N": n, "K": k, "dtype": torch.bfloat16, "bias": False, "residual": True}
            for n, k in MODEL_PROJECTIONS]


def _bytes(c):
    size = c["dtype"].itemsize
    return (c["N"] * c["K"] + c["M"] * c["K"] * (4 if c.get("residual") else 1) + c["K"]
            + c["M"] * c["N"] // 2) * size

register(Op(
    name="rmsnorm_swiglu",
    triton=rmsnorm_swiglu,
    torch=rmsnorm_swiglu_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [{"M": m, "N": 66, "K": 100, "dtype": dt, "bias": True, "residual": res}
                         for dt in (torch.float32, torch.bfloat16) for m in (1, 3) for res in (False, True)],
    reduction_len=lambda c: 2 * c["K"],
    compare=_compare,
    flops=lambda c: 2.0 * c["M"] * c["N"] * c["K"] + 4.0 * c["M"] * c["K"] + 4.0 * c["M"] * c["N"],
    bytes=_bytes,
    baseline=rmsnorm_swiglu_separate,
    baseline_name="rmsnorm_linear + silu_and_mul",
))
