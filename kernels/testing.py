"""One tolerance policy for the whole repository, shared by tests, the CLI check and benchmarks.

The reference runs on inputs upcast to float64 (float32 on a GPU, where float64 is slow), so it is
accurate to far below the kernel's own rounding. A kernel's error then comes from two places: rounding
its output to the storage dtype (relative, hence ``rtol`` by dtype) and accumulating a reduction in
float32 (absolute, growing like the square root of the reduction length, hence ``atol`` scaled by it).
NaN in the kernel's output never passes, even where the reference has NaN too: poisoned buffers are NaN.
"""

from __future__ import annotations

import math
from typing import Any

import torch

RTOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}
# A float32 tl.dot runs in TF32 on NVIDIA GPUs (10 mantissa bits): ops that use one declare it.
TF32_RTOL, TF32_ATOL = 2e-3, 2e-3


def tolerances(dtype: torch.dtype, reduction_len: int = 1, tf32: bool = False) -> tuple[float, float]:
    rtol, atol = RTOL.get(dtype, 1e-4), ATOL.get(dtype, 1e-5)
    if tf32 and dtype == torch.float32:
        rtol, atol = TF32_RTOL, TF32_ATOL
    return rtol, atol * max(1.0, math.sqrt(max(reduction_len, 1) / 64))


def reference_dtype(device: torch.device | str) -> torch.dtype:
    return torch.float64 if torch.device(device).type == "cpu" else torch.float32


def upcast(inputs: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """Clone every floating tensor input to ``dtype``; other values are cloned or passed as they are."""
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(dtype) if v.dtype.is_floating_point else v.clone()
        else:
            out[k] = v
    return out


def assert_close(actual: torch.Tensor, expected: torch.Tensor, *, dtype: torch.dtype,
                 reduction_len: int = 1, tf32: bool = False, what: str = "output") -> None:
    """Fail with the worst element's position and values if ``actual`` is not within tolerance."""
    rtol, atol = tolerances(dtype, reduction_len, tf32)
    e = expected.detach().to("cpu", torch.float64)
    assert_within(actual, expected, atol + rtol * e.abs(), what=f"{what} (rtol={rtol:g}, atol={atol:g})")


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor, *, what: str = "output") -> None:
    """Fail unless ``|actual - expected| <= bound`` element-wise (a bound an op derives from its own math, for
    outputs that compound several rounded steps); NaN never passes."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    nan = torch.isnan(a)
    if nan.any():
        idx = tuple(int(i) for i in nan.nonzero()[0])
        raise AssertionError(f"{what}: {int(nan.sum())} NaN element(s) (unwritten or invalid), first at {idx}")
    bound = bound.detach().to("cpu", torch.float64)
    err = (a - e).abs()
    bad = err > bound
    if bad.any():
        excess = (err - bound).flatten()
        i = int(excess.argmax())
        idx = tuple(int(x) for x in torch.unravel_index(torch.tensor(i), a.shape))
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{a.numel()} elements out of tolerance; worst at {idx}: got "
            f"{a[idx].item():.6g}, expected {e[idx].item():.6g}, allowed +-{bound.flatten()[i].item():.3g}"
        )


def as_tensors(result: Any) -> list[torch.Tensor]:
    if result is None:
        return []
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        return [t for r in result for t in as_tensors(r)]
    raise TypeError(f"cannot compare a result of type {type(result).__name__}")


def run_case(op, case: dict[str, Any], device: torch.device | str, seed: int = 0, impl: str = "triton") -> None:
    """Check one case of ``op``: fresh random inputs, poisoned outputs, reference on upcast inputs.

    Raises AssertionError on a mismatch. Used by the property tests and by ``tritonforge check``.
    """
    from kernels import alloc

    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    inputs = op.make_inputs(case, device, gen)
    ref_inputs = upcast(inputs, reference_dtype(device))
    kernel_inputs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    with alloc.poisoned():
        out = op.impl(impl)(**kernel_inputs)
    ref = op.torch(**ref_inputs)
    if op.compare is not None:
        op.compare(out, ref, kernel_inputs, ref_inputs, case)
        return
    outs = as_tensors(out) + [kernel_inputs[k] for k in op.mutates]
    refs = as_tensors(ref) + [ref_inputs[k] for k in op.mutates]
    if len(outs) != len(refs):
        raise AssertionError(f"{op.name}: kernel gave {len(outs)} outputs, reference {len(refs)}")
    for i, (a, e) in enumerate(zip(outs, refs, strict=True)):
        assert_close(a, e, dtype=case["dtype"], reduction_len=op.reduction_len(case), tf32=op.tf32,
                     what=f"{op.name} output {i} for case {describe(case)}")


def describe(case: dict[str, Any]) -> str:
    return ", ".join(f"{k}={str(v).replace('torch.', '')}" for k, v in case.items())
