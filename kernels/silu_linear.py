"""A SwiGLU MLP's down projection with its gate fused in: ``y = (silu(gate) * up) @ W^T (+ bias)``.

Math, for x = [gate | up] of width 2K per row (the fused gate_up projection's output) and W [N, K]:

    h[m, k] = silu(x[m, k]) * x[m, K + k]          rounded to x's dtype, as ``silu_and_mul`` stores it
    y[m, n] = sum_k h[m, k] * W[n, k] + bias[n]     accumulated in float32

so the result equals ``linear(silu_and_mul(x), W, bias)``.

Why fuse: in a decode step (M = 1..64 rows) ``silu_and_mul`` is a tiny kernel paid once per layer for its
launch and latency, and its output is read straight back by the down projection. The decode kernel
(kernels/linear_decode.py, ``SILU_INPUT``; at one row the GEMV's ``SILU``) instead loads each
[rows, BLOCK_K] tile of gate and up and forms h in registers before the dot: one launch fewer per layer,
h never written. Each column tile re-reads its K-chunk of x (twice the bytes of h), a few percent of the
weight bytes at decode sizes.

Variants: :func:`choose_silu_linear_variant` picks ``"fused"`` (the decode kernel with the gate applied on
load) up to :data:`FUSED_MAX_M` rows, else ``"separate"`` (``silu_and_mul`` then ``linear``: at prefill
sizes the matmul is compute-bound and the extra pass over h is small).

The engine calls this op only when it is named (``--op silu_mul_linear=triton``; engine/ops.py FUSIONS),
and only for dense down projections. Measured in the batch-1 decode graph on an H200
(bench/results/NVIDIA_H200/run6/decode_profile.csv), the fused down projections took 7.6 us more each
than the plain ones, against 1.2 us saved per silu_and_mul launch: the gate's exp and the second input
load sit in the weight-streaming loop. Timed alone by the sweep (fused_ops_sweep.log) the op looked 1.5-2x
faster than the pair, so the two measurements disagree; the engine's is the one that counts here.
At one row the fused op now takes the CUDA-core GEMV (kernels/linear_gemv.py, ``SILU``), as ``linear``
does; in the Llama-3.2-1B graph with PDL it was still slower, 976.7 against 960.7 us
(bench/results/NVIDIA_H200/run9_notes.md).
"""

from __future__ import annotations

import torch

from kernels import linear as dense
from kernels.device import check_backend
from kernels.linear_decode import linear_decode_2d
from kernels.linear_gemv import linear_gemv_2d
from kernels.registry import Op, register
from kernels.silu_and_mul import silu_and_mul, silu_and_mul_reference

VARIANTS = ("fused", "separate")
FUSED_MAX_M = dense.DECODE_MAX_M


def choose_silu_linear_variant(M: int, N: int, K: int, dtype: torch.dtype) -> str:
    """``"fused"`` for decode-sized M (the weight-streaming kernel with the gate applied on load), else
    ``"separate"``. A plain function a researcher can call or replace; ``variant=`` overrides it per call."""
    return "fused" if M <= FUSED_MAX_M else "separate"


def _check(x, weight, bias, variant) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] % 2:
        raise ValueError(f"silu_mul_linear: x must be a tensor [..., 2*K] (gate and up halves), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if isinstance(weight, torch.Tensor) and weight.dim() == 2 and x.shape[-1] != 2 * weight.shape[1]:
        raise ValueError(f"silu_mul_linear: x's last dimension {x.shape[-1]} must be twice weight's K = "
                         f"{weight.shape[1]} (weight [N, K] shape {tuple(weight.shape)})")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"silu_mul_linear: unknown variant {variant!r}; choose one of {VARIANTS} or None")
    # The remaining checks (dtypes, devices, bias shape) are linear's, on the gate-applied shape.
    dense._check(x[..., : x.shape[-1] // 2], weight, bias, None)


def silu_mul_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    variant: str | None = None) -> torch.Tensor:
    """``linear(silu_and_mul(x), weight, bias)``, fused into one kernel for decode-sized batches."""
    _check(x, weight, bias, variant)
    check_backend("triton", x.device)
    N, K = weight.shape
    x2 = x.reshape(-1, 2 * K)
    chosen = variant or choose_silu_linear_variant(x2.shape[0], N, K, x.dtype)
    if chosen == "separate":
        return dense.linear(silu_and_mul(x), weight, bias)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    if weight.stride(-1) != 1:
        weight = weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    # One row: the CUDA-core GEMV (as linear picks at M = 1); more: the split-K decode kernel.
    product = linear_gemv_2d if x2.shape[0] == 1 else linear_decode_2d
    y = product(x2, weight, bias, silu_input=True)
    return y.reshape(*x.shape[:-1], N)


def silu_mul_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                              variant: str | None = None) -> torch.Tensor:
    """Pure torch, same signature: the two references in turn."""
    return dense.linear_reference(silu_and_mul_reference(x), weight, bias)


def silu_mul_linear_separate(x, weight, bias=None, variant=None):
    """The baseline: the two Triton ops, two launches (what the engine runs without the fusion)."""
    return dense.linear(silu_and_mul(x), weight, bias)


# --- registration -------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (hidden, intermediate): Qwen2.5-0.5B, Llama-3.2-1B, Llama-3-8B.
MODEL_MLPS = [(896, 4864), (2048, 8192), (4096, 14336)]


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        m, n, k = st.sampled_from([1, 3, 17]), st.sampled_from([1, 33, 64]), st.sampled_from([16, 100, 1100])
    else:
        m, n, k = st.sampled_from([1, 4, 16, 64, 200]), st.sampled_from([896, 2048, 33]), \
            st.sampled_from([4864, 8192, 1000])
    return st.fixed_dictionaries({"M": m, "N": n, "K": k, "dtype": st.sampled_from(DTYPES),
                                  "bias": st.booleans()})


def _make_inputs(case, device, gen):
    M, N, K, dt = case["M"], case["N"], case["K"], case["dtype"]
    x = 2 * torch.randn(M, 2 * K, generator=gen, device=device)
    w = torch.randn(N, K, generator=gen, device=device) / K ** 0.5
    b = torch.randn(N, generator=gen, device=device) if case.get("bias") else None
    return {"x": x.to(dt), "weight": w.to(dt), "bias": None if b is None else b.to(dt)}


def _compare(out, ref, kernel_inputs, ref_inputs, case):
    """Against the reference with h rounded to x's dtype first, as the kernel (and the unfused pair) stores
    it: the upcast reference would skip that rounding, whose error the sum over K then magnifies."""
    from kernels.testing import assert_close

    wide = ref_inputs["weight"].dtype
    h = silu_and_mul_reference(kernel_inputs["x"]).to(wide)
    expected = dense.linear_reference(h, ref_inputs["weight"], ref_inputs["bias"])
    assert_close(out, expected, dtype=case["dtype"], reduction_len=case["K"],
                 what=f"silu_mul_linear for case {case}")


def _bench_cases():
    return [{"M": m, "N": h, "K": i, "dtype": torch.bfloat16, "bias": False}
            for h, i in MODEL_MLPS for m in (1, 4, 16, 64)]


def _bytes(c):
    size = c["dtype"].itemsize
    return (c["N"] * c["K"] + 2 * c["M"] * c["K"] + c["M"] * c["N"]) * size


register(Op(
    name="silu_mul_linear",
    triton=silu_mul_linear,
    torch=silu_mul_linear_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [{"M": m, "N": 33, "K": 100, "dtype": dt, "bias": True}
                         for dt in (torch.float32, torch.float16) for m in (1, 70)],
    reduction_len=lambda c: c["K"],
    compare=_compare,
    flops=lambda c: 2.0 * c["M"] * c["N"] * c["K"] + 4.0 * c["M"] * c["K"],
    bytes=_bytes,
    baseline=silu_mul_linear_separate,
    baseline_name="silu_and_mul + linear",
))
