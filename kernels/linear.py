"""Dense linear layer ``y = x @ weight^T + bias``: one entry point over five kernels, chosen by shape.

Math: x [..., K] (flattened to M rows), weight [N, K] as ``nn.Linear`` stores it, bias [N] or None:

    y[m, n] = sum_k x[m, k] * weight[n, k] + bias[n]

float16 and bfloat16 accumulate in float32 and store y in x's dtype; float32 (for checks) uses exact
IEEE float32 dots, not TF32. x's rows may be strided; both operands need a unit stride along K (others
are copied first, which for a weight costs a full copy per call: keep weights contiguous).

Variants (each also registered as its own implementation, ``linear_prefill`` etc., so that the
benchmark sweep times them side by side):

- ``"decode"`` (kernels.linear_decode): split-K weight streaming for M <= 64, where the product is
  bound by reading the weight; batch-invariant within an M bucket (see that module);
- ``"gemv"`` (kernels.linear_gemv): the same streaming for M <= 4 on the CUDA cores, with no tensor-core
  padding or shared-memory staging; batch-invariant within a row count (1, 2, or 3-4 rows);
- ``"prefill"`` (kernels.linear_prefill): tiles in grouped order, one program per tile;
- ``"persistent"`` (kernels.linear_persistent): the same tiles, one program per SM looping over them, a
  partial last wave cut into half or quarter tiles where that is quicker (the split tail);
- ``"streamk"`` (kernels.linear_streamk): the persistent loop with a partial last wave dealt out to the
  SMs as equal ranges of K-iterations, split tiles summed in a fix-up; it wins where there are far fewer
  tiles than SMs and K is long.

:func:`choose_linear_variant` is the rule, a plain function a researcher can call or replace; the
``variant=`` argument overrides it per call.

The first call for a new (M bucket, N, K, dtype) autotunes (decode configs are timed as CUDA-graph
replays), so warm every shape up before capturing a CUDA graph of a model step.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from kernels.device import check_backend
from kernels.linear_decode import linear_decode_2d
from kernels.linear_gemv import linear_gemv_2d
from kernels.linear_persistent import linear_persistent_2d
from kernels.linear_prefill import linear_tiled_2d
from kernels.linear_streamk import linear_streamk_2d
from kernels.registry import Op, register, register_impl

VARIANTS = ("prefill", "persistent", "streamk", "decode", "gemv")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Up to this many rows the product is under 64 flops per weight byte, far below an H100/H200's ~250
# bf16 flops per byte, so reading the weight dominates and split-K streaming fits; the crossover to the
# tiled kernels between 64 and ~256 rows has not been measured yet.
DECODE_MAX_M = 64
# Few rows and a long K: stream-K's split of K beats whole tiles (see choose_linear_variant).
STREAMK_MAX_M = 128
STREAMK_MIN_K = 8192

_KERNELS = {"prefill": linear_tiled_2d, "persistent": linear_persistent_2d, "streamk": linear_streamk_2d,
            "decode": linear_decode_2d, "gemv": linear_gemv_2d}


def choose_linear_variant(M: int, N: int, K: int, dtype: torch.dtype) -> str:
    """The kernel ``linear`` uses for an [M, K] x [N, K]^T product when no variant is forced.

    - M = 1: ``"gemv"``: on an H200 (graph replays, bench/results/NVIDIA_H200/run7/linear_bench.csv) it
      ran at 0.98-1.38x cuBLAS on the 15 decode shapes of the benchmark, where the split-K kernel gave
      0.85-1.19x; in the 0.5B model's decode step its 97 products took 518 us against 599 us;
    - M = 2..64: ``"decode"`` (weight-bandwidth bound; the tiled kernels would leave most SMs idle). Up to
      run 21, M = 2..4 on weights of at most 2M elements took the GEMV's four-row tiles, which beat the
      split-K kernel on the 0.5B model's 896 x 896 (run 14). That kernel's loss there came from its PDL signal,
      not its tiles (``kernels.linear_decode.DECODE_CONFIGS``): with the signal tuned per shape it ran at
      1.29x cuBLAS on 1152 x 896 and 1.36-1.39x on 896 x 896 at M = 2-4, where the GEMV gave 0.79-1.16x and
      1.00-1.30x (H200, bench/results/NVIDIA_H200/run22);
    - M = 65..128 with K >= 8192: ``"streamk"``: with a single row of 128-row tiles there are too few tiles
      to fill the card, and splitting the long K among the SMs ran at 1.5-1.8x the persistent kernel's
      speed (H200, CUDA-graph replays, bench/results/NVIDIA_H200/run26: 128 x 4096 x 14336 and
      128 x 3584 x 18944); at M = 512 or with K = 4096 it lost, so only there;
    - otherwise ``"persistent"``: on an H200 it ran at 0.98-1.02x cuBLAS on 4096-28672 wide prefill
      products where the one-program-per-tile kernel reached 0.72-0.85x
      (bench/results/NVIDIA_H200/linear_configs_run1.csv); its pipelining across tiles hides each tile's
      epilogue, and its split tail evens out a partial last wave (run 26: 0.88-1.05x cuBLAS on the 24
      prefill shapes over three timings, 0.90-1.03x as graph replays). On AMD (no measurements yet) the same
      rule applies.
    ``N``, ``K`` and ``dtype`` are part of the signature so that a rule tuned for another card can use them.
    """
    if M == 1:
        return "gemv"
    if M <= DECODE_MAX_M:
        return "decode"
    if M <= STREAMK_MAX_M and K >= STREAMK_MIN_K:
        return "streamk"
    return "persistent"


def _check(x, weight, bias, variant) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError("linear: x and weight must be torch tensors")
    if x.dim() < 1:
        raise ValueError("linear: x must have at least one dimension [..., K]")
    if weight.dim() != 2:
        raise ValueError(f"linear: weight must be 2-D [N, K] (nn.Linear layout), got shape {tuple(weight.shape)}")
    if x.dtype not in DTYPES:
        raise TypeError(f"linear: x must be float32, float16 or bfloat16, got {x.dtype}")
    if weight.dtype != x.dtype:
        raise TypeError(f"linear: weight dtype {weight.dtype} must match x dtype {x.dtype}; cast one of them")
    N, K = weight.shape
    if x.shape[-1] != K:
        raise ValueError(
            f"linear: mismatched K: x's last dimension is {x.shape[-1]} but weight [N, K] has K = {K} "
            f"(weight shape {tuple(weight.shape)}; is it transposed?)"
        )
    if K == 0:
        raise ValueError("linear: K (the input features) must be at least 1")
    if weight.device != x.device:
        raise ValueError(f"linear: weight is on {weight.device} but x is on {x.device}; move them to one device")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError("linear: bias must be a torch tensor or None")
        if bias.shape != (N,):
            raise ValueError(f"linear: bias must have shape ({N},) to match weight's N, got {tuple(bias.shape)}")
        if bias.dtype != x.dtype:
            raise TypeError(f"linear: bias dtype {bias.dtype} must match x dtype {x.dtype}")
        if bias.device != x.device:
            raise ValueError(f"linear: bias is on {bias.device} but x is on {x.device}")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"linear: unknown variant {variant!r}; choose one of {VARIANTS} or None (by shape)")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           variant: str | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` with Triton kernels; ``variant`` forces one of :data:`VARIANTS`."""
    _check(x, weight, bias, variant)
    check_backend("triton", x.device)
    N, K = weight.shape
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    if weight.stride(-1) != 1:
        weight = weight.contiguous()
    if bias is not None:
        bias = bias.contiguous()
    chosen = variant or choose_linear_variant(x2.shape[0], N, K, x.dtype)
    y = _KERNELS[chosen](x2, weight, bias)
    return y.reshape(*x.shape[:-1], N)


def linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     variant: str | None = None) -> torch.Tensor:
    """Pure torch, same signature: the product in float32 (float64 for float64 inputs), cast to x's dtype.

    ``variant`` is accepted for signature parity and ignored: every variant computes the same function.
    """
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    y = x.to(compute) @ weight.to(compute).T
    if bias is not None:
        y = y + bias.to(compute)
    return y.to(x.dtype)


def linear_cublas(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  variant: str | None = None) -> torch.Tensor:
    """The vendor baseline: ``torch.nn.functional.linear`` (cuBLAS / hipBLASLt on a GPU)."""
    return F.linear(x, weight, bias)


# --- registration -------------------------------------------------------------------------------

# Real projection shapes (N, K) = (out_features, in_features).
QWEN25_05B = {"qkv": (1152, 896), "o": (896, 896), "gate_up": (9728, 896), "down": (896, 4864),
              "lm_head": (151936, 896)}
LLAMA32_1B = {"qkv": (3072, 2048), "o": (2048, 2048), "gate_up": (16384, 2048), "down": (2048, 8192),
              "lm_head": (128256, 2048)}
LLAMA3_8B = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336),
             "lm_head": (128256, 4096)}
QWEN25_7B = {"qkv": (4608, 3584), "o": (3584, 3584), "gate_up": (37888, 3584), "down": (3584, 18944)}
DECODE_M = (1, 4, 16, 64)
PREFILL_M = (2048, 4096, 8192)


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        m, n, k = st.sampled_from([1, 3, 17]), st.sampled_from([1, 33, 70]), st.sampled_from([1, 33, 70])
    else:
        m = st.sampled_from([1, 4, 16, 33, 64, 65, 300, 1024])
        n = st.sampled_from([1, 70, 896, 4113, 14336])
        k = st.sampled_from([70, 896, 4096])
    return st.fixed_dictionaries({
        "M": m, "N": n, "K": k, "dtype": st.sampled_from(DTYPES), "bias": st.booleans(),
        "variant": st.sampled_from([None, *VARIANTS]),
    })


def _make_inputs(case, device, gen):
    M, N, K, dt = case["M"], case["N"], case["K"], case["dtype"]
    x = torch.randn(M, K, generator=gen, device=device).to(dt)
    # nn.Linear's scale (1/sqrt(K)) keeps y of order one, as in a real model.
    w = (torch.randn(N, K, generator=gen, device=device) / K**0.5).to(dt)
    inputs = {"x": x, "weight": w}
    if case.get("bias"):
        inputs["bias"] = torch.randn(N, generator=gen, device=device).to(dt)
    if case.get("variant") is not None:
        inputs["variant"] = case["variant"]
    return inputs


def _bench_cases():
    prefill = [
        {"M": m, "N": n, "K": k, "dtype": torch.bfloat16, "bias": False}
        for model in (LLAMA3_8B, QWEN25_7B)
        for name, (n, k) in model.items() if name != "lm_head"
        for m in PREFILL_M
    ]
    decode = [
        {"M": m, "N": n, "K": k, "dtype": torch.bfloat16, "bias": False}
        for model in (QWEN25_05B, LLAMA32_1B, LLAMA3_8B)
        for n, k in model.values()
        for m in DECODE_M
    ]
    return prefill + decode


def _bytes(case):
    M, N, K, e = case["M"], case["N"], case["K"], case["dtype"].itemsize
    return e * (M * K + N * K + M * N + (N if case.get("bias") else 0))


register(Op(
    name="linear",
    triton=linear,
    torch=linear_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [
        {"M": m, "N": 70, "K": 33, "dtype": dt, "bias": True, "variant": v}
        for dt in DTYPES for m, v in ((3, None), (17, "prefill"), (17, "persistent"), (17, "streamk"))
    ],
    reduction_len=lambda c: c["K"],
    flops=lambda c: 2.0 * c["M"] * c["N"] * c["K"],
    bytes=_bytes,
    baseline=linear_cublas,
    baseline_name="cuBLAS",
))
for _variant in VARIANTS:
    register_impl("linear", f"linear_{_variant}", functools.partial(linear, variant=_variant))
