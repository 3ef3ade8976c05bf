"""RMSNorm, optionally fused with the residual add that precedes it in every decoder layer.

Math, for one row x of length H (a token's hidden state) and a weight w of length H:

    rms(x) = sqrt(mean(x_i^2) + eps)
    y_i    = x_i / rms(x) * w_i

With a residual r the layer first adds it, and hands the sum on as the next residual:

    h = x + r;   y = rmsnorm(h) * w;   returns (y, h)

Layout: x and r are [..., H] with a unit stride on H (rows may be strided); w is [H]. The sum of squares
is accumulated in float32 whatever the input dtype; y and h are stored in the input dtype. The residual
sum h is rounded to the input dtype *before* it is normalised, as the unfused torch code would do, so the
fused and unfused engine paths agree bit for bit in the sum.

Kernel: each program normalises ROWS whole rows held in registers (H <= 65536); ROWS > 1 only for small
hidden sizes, so that a program still moves a few thousand elements (a size that is data per vendor,
chosen at launch). Memory-bound: it reads x (and r) and w once and writes y (and h) once.
"""

from __future__ import annotations

import torch

from kernels import alloc, pdl
from kernels._triton import tl, triton
from kernels.device import check_backend, vendor
from kernels.registry import Op, register

MAX_HIDDEN = 65536
# The kernel loads the weight in its own dtype and multiplies in float32.
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@triton.jit(do_not_specialize=["n_rows"])  # per-step values: compiled once
def _rmsnorm_kernel(
    x_ptr, r_ptr, w_ptr, y_ptr, h_ptr,
    stride_x, stride_r, stride_y, stride_h,
    n_rows, H, eps,
    HAS_RESIDUAL: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr,
):
    pdl.start(PDL)
    pdl.enter(PDL)  # reads what earlier kernels wrote (kernels/pdl.py)
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)[:, None]
    cols = tl.arange(0, BLOCK)[None, :]
    mask = (rows < n_rows) & (cols < H)
    x = tl.load(x_ptr + rows * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + rows * stride_r + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(h_ptr + rows * stride_h + cols, x, mask=mask)
    xf = x.to(tl.float32)
    inv_rms = tl.math.rsqrt(tl.sum(xf * xf, axis=1) / H + eps)[:, None]
    w = tl.load(w_ptr + cols, mask=cols < H, other=0.0).to(tl.float32)
    tl.store(y_ptr + rows * stride_y + cols, (xf * inv_rms * w).to(y_ptr.dtype.element_ty), mask=mask)


# --- configs as data ------------------------------------------------------------------------------
# Rows per program: small hidden sizes pack several rows into one program so that each program still
# moves enough bytes to hide its latency; ROW_TILE is the element count aimed at. Measured on an H200
# (bench/results): hidden 896 runs best at 2 rows per program, 2048 and up at 1. Warps: enough that each
# lane holds at most ~16 elements (WARP_ELEMS per warp), capped at MAX_WARPS.
CONFIGS = {
    "cuda": dict(ROW_TILE=2048, WARP_ELEMS=16 * 32, MAX_WARPS=16),
    # AMD wavefronts are 64 lanes wide: the same elements per lane need twice the tile and twice the
    # elements per wavefront; 16 wavefronts is the 1024-thread workgroup limit.
    "hip": dict(ROW_TILE=4096, WARP_ELEMS=16 * 64, MAX_WARPS=16),
}


def _launch_shape(rows: int, block: int, rows_per_program: int | None, num_warps: int | None) -> tuple[int, int]:
    """(rows per program, num_warps) from the running vendor's config, read here at launch."""
    cfg = CONFIGS["cuda" if vendor() == "cpu" else vendor()]
    if rows_per_program is None:
        rows_per_program = max(1, min(cfg["ROW_TILE"] // block, triton.next_power_of_2(rows)))
    warps = max(1, min(cfg["MAX_WARPS"], rows_per_program * block // cfg["WARP_ELEMS"]))
    return rows_per_program, num_warps or warps


def _check(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None) -> None:
    if x.dim() < 1:
        raise ValueError("rmsnorm: x must have at least one dimension [..., hidden]")
    if not x.dtype.is_floating_point:
        raise TypeError(f"rmsnorm: x must be a floating tensor, got {x.dtype}")
    H = x.shape[-1]
    if weight.dtype not in WEIGHT_DTYPES:
        raise TypeError(
            f"rmsnorm: weight must be a floating tensor of one of {', '.join(map(str, WEIGHT_DTYPES))}, "
            f"got {weight.dtype}"
        )
    if weight.shape != (H,):
        raise ValueError(f"rmsnorm: weight must have shape ({H},) to match x's last dim, got {tuple(weight.shape)}")
    if weight.device != x.device:
        raise ValueError(f"rmsnorm: weight is on {weight.device}, x on {x.device}")
    if H > MAX_HIDDEN:
        raise ValueError(f"rmsnorm: hidden size {H} exceeds the kernel's limit of {MAX_HIDDEN}")
    if residual is not None and (
        residual.shape != x.shape or residual.dtype != x.dtype or residual.device != x.device
    ):
        raise ValueError(
            f"rmsnorm: residual must match x ({tuple(x.shape)}, {x.dtype}, {x.device}), got "
            f"({tuple(residual.shape)}, {residual.dtype}, {residual.device})"
        )


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
            residual: torch.Tensor | None = None, *, _rows_per_program: int | None = None,
            _num_warps: int | None = None):
    """``y = x / rms(x) * weight``; with ``residual``, returns ``(rmsnorm(x + residual), x + residual)``.

    ``_rows_per_program``/``_num_warps`` force a launch shape; they exist for the tuning script only.
    """
    _check(x, weight, residual)
    check_backend("triton", x.device)
    H = x.shape[-1]
    x2 = x.reshape(-1, H)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    rows = x2.shape[0]
    y = alloc.empty(rows, H, dtype=x.dtype, device=x.device)
    if residual is not None:
        r2 = residual.reshape(-1, H).contiguous()
        h = alloc.empty(rows, H, dtype=x.dtype, device=x.device)
    else:
        r2, h = x2, y  # unused by the kernel when HAS_RESIDUAL is False
    if rows > 0:
        block = triton.next_power_of_2(H)
        per_program, warps = _launch_shape(rows, block, _rows_per_program, _num_warps)
        _rmsnorm_kernel[(triton.cdiv(rows, per_program),)](
            x2, r2, weight, y, h,
            x2.stride(0), r2.stride(0), y.stride(0), h.stride(0),
            rows, H, eps,
            HAS_RESIDUAL=residual is not None, ROWS=per_program, BLOCK=block, num_warps=warps,
            **pdl.launch_options(x.device, "rmsnorm"),
        )
    y = y.reshape(x.shape)
    return (y, h.reshape(x.shape)) if residual is not None else y


def rmsnorm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                      residual: torch.Tensor | None = None):
    """Pure torch, same signature and semantics (the sum is rounded to x's dtype before normalising)."""
    if residual is not None:
        x = (x.float() + residual.float()).to(x.dtype)
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    xf = x.to(compute)
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.to(compute)
    y = y.to(x.dtype)
    return (y, x) if residual is not None else y


# --- registration -------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MODEL_HIDDEN = [896, 2048, 3584, 4096, 8192]  # Qwen2.5-0.5B, Llama-3.2-1B, Qwen2.5-7B, Llama-3-8B, 70B


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        tokens, hidden = st.sampled_from([1, 3, 17]), st.sampled_from([1, 17, 64, 80, 123, 145])
    else:
        tokens, hidden = st.sampled_from([1, 7, 128, 1000, 4096]), st.sampled_from([*MODEL_HIDDEN, 4113, 123])
    return st.fixed_dictionaries({
        "tokens": tokens, "hidden": hidden, "dtype": st.sampled_from(DTYPES), "residual": st.booleans(),
    })


def _make_inputs(case, device, gen):
    T, H, dt = case["tokens"], case["hidden"], case["dtype"]
    x = torch.randn(T, H, generator=gen, device=device).to(dt)
    w = (1 + 0.1 * torch.randn(H, generator=gen, device=device)).to(dt)
    inputs = {"x": x, "weight": w, "eps": 1e-6}
    if case.get("residual"):
        inputs["residual"] = torch.randn(T, H, generator=gen, device=device).to(dt)
    return inputs


def _bench_cases():
    return [
        {"tokens": t, "hidden": h, "dtype": dt, "residual": res}
        for dt in (torch.bfloat16, torch.float16)
        for h in MODEL_HIDDEN
        for t in (1, 16, 256, 4096, 16384)
        for res in (False, True)
    ]


def _bytes(case):
    n, e = case["tokens"] * case["hidden"], case["dtype"].itemsize
    return e * (n * (4 if case.get("residual") else 2) + case["hidden"])


register(Op(
    name="rmsnorm",
    triton=rmsnorm,
    torch=rmsnorm_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [
        {"tokens": 3, "hidden": 123, "dtype": dt, "residual": res} for dt in DTYPES for res in (False, True)
    ],
    reduction_len=lambda c: c["hidden"],
    flops=lambda c: 4.0 * c["tokens"] * c["hidden"],
    bytes=_bytes,
    baseline=rmsnorm_reference,
    baseline_name="torch eager",
))
