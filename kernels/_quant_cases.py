"""Registration data for the weight-only quantized linears (kernels/quant_linear.py).

Test cases for the cpu and gpu profiles, input generators (weights quantized by this project's own
quantizers), the benchmark shapes (Llama-3-8B and Qwen2.5-0.5B projections at decode batch sizes) and the
cuBLAS baselines, which multiply by a weight dequantized once and cached so that dequantization is not timed.
"""

from __future__ import annotations

import torch

from kernels._dense_cache import dense_weight
from kernels.quant_pack import GROUP_SIZES, dequantize_w4, quantize_w4, quantize_w8

DTYPES = [torch.float16, torch.bfloat16]
# (N, K) of the projections of Llama-3-8B (q/o, gate/up, down) and Qwen2.5-0.5B (q/o, k/v, gate/up, down).
MODEL_SHAPES = [(4096, 4096), (14336, 4096), (4096, 14336), (896, 896), (128, 896), (4864, 896), (896, 4864)]
DECODE_M = (1, 4, 16)


def shape_cases(profile: str, groups: bool):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        m, n = st.sampled_from([1, 3, 17]), st.sampled_from([1, 17, 40])
        k = st.sampled_from([16, 100, 300]) if not groups else st.sampled_from([1, 3])
    else:
        m, n = st.sampled_from([1, 4, 16, 77, 512]), st.sampled_from([896, 4096, 4113])
        k = st.sampled_from([896, 4096, 4864]) if not groups else st.sampled_from([7, 38])
    case = {"M": m, "N": n, "K": k, "dtype": st.sampled_from(DTYPES), "bias": st.booleans()}
    if not groups:
        return st.fixed_dictionaries(case)
    # K drawn as a number of 128-wide spans, so it is a multiple of every group size.
    return st.fixed_dictionaries({**case, "group_size": st.sampled_from(GROUP_SIZES)}).map(
        lambda c: {**c, "K": c["K"] * 128 if profile != "cpu" else c["K"] * c["group_size"]})


def _weight_and_x(case, device, gen):
    M, N, K, dt = case["M"], case["N"], case["K"], case["dtype"]
    weight = (0.05 * torch.randn(N, K, generator=gen, device=device)).to(dt)
    x = torch.randn(M, K, generator=gen, device=device).to(dt)
    bias = (0.1 * torch.randn(N, generator=gen, device=device)).to(dt) if case.get("bias") else None
    return weight, x, bias


def w8_inputs(case, device, gen):
    weight, x, bias = _weight_and_x(case, device, gen)
    qweight, scales = quantize_w8(weight)
    return {"x": x, "qweight": qweight, "scales": scales, "bias": bias}


def w4_inputs(case, device, gen):
    weight, x, bias = _weight_and_x(case, device, gen)
    qweight, scales, zeros = quantize_w4(weight, case["group_size"])
    sd = case.get("scale_dtype")  # scales and zeros in another dtype than x (fp32, say), where a case asks
    if sd is not None:
        scales, zeros = scales.to(sd), zeros.to(sd)
    return {"x": x, "qweight": qweight, "scales": scales, "zeros": zeros, "group_size": case["group_size"],
            "bias": bias}


def w8a16_cublas(x, qweight, scales, bias=None):
    """Baseline: x's-dtype cuBLAS matmul on the weight dequantized once (cached, not timed)."""
    w = dense_weight(qweight, x.dtype, lambda: qweight.float() * scales.float()[:, None])
    return torch.nn.functional.linear(x, w, bias)


def w4a16_cublas(x, qweight, scales, zeros, group_size, bias=None):
    """Baseline: x's-dtype cuBLAS matmul on the weight dequantized once (cached, not timed)."""
    w = dense_weight(qweight, x.dtype, lambda: dequantize_w4(qweight, scales.float(), zeros.float(), group_size))
    return torch.nn.functional.linear(x, w, bias)


def bench_cases(groups: bool):
    extra = {"group_size": 128} if groups else {}
    return [{"M": m, "N": n, "K": k, "dtype": torch.bfloat16, "bias": False, **extra}
            for n, k in MODEL_SHAPES for m in DECODE_M]


def act_bytes(c):
    return c["dtype"].itemsize * (c["M"] * c["K"] + c["M"] * c["N"] + (c["N"] if c.get("bias") else 0))
