"""Argument checks of the weight-only quantized linears (``kernels.quant_linear`` and its variants): each
error names the calling op, the argument and what was wrong."""

from __future__ import annotations

import torch

from kernels.quant_pack import GROUP_SIZES

ACT_DTYPES = (torch.float16, torch.bfloat16)
SCALE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_x(op: str, x: torch.Tensor, K: int, device: torch.device) -> None:
    if x.dtype not in ACT_DTYPES:
        raise TypeError(f"{op}: x must be float16 or bfloat16, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{op}: x must be 2-D [M, K], got shape {tuple(x.shape)}")
    if x.shape[1] != K:
        raise ValueError(f"{op}: x has K={x.shape[1]} but the weight has K={K}")
    if x.device != device:
        raise ValueError(f"{op}: x is on {x.device} but the weight is on {device}")


def check_vec(op: str, name: str, t: torch.Tensor | None, shape: tuple, dtypes: tuple, device) -> None:
    if t is None:
        return
    if t.shape != shape:
        raise ValueError(f"{op}: {name} must have shape {shape}, got {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise TypeError(f"{op}: {name} must be one of {[str(d) for d in dtypes]}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{op}: {name} is on {t.device} but the weight is on {device}")


def check_w4_linear(op: str, x, qweight, scales, zeros, group_size: int, bias) -> tuple[int, int]:
    """(N, K) of a W4A16 product, after checking every argument (``op`` names the caller in the errors)."""
    if qweight.dtype != torch.uint8 or qweight.dim() != 2:
        raise TypeError(f"{op}: qweight must be a 2-D uint8 tensor [N, K // 2] of packed nibbles, "
                        f"got {qweight.dtype} {tuple(qweight.shape)}")
    if group_size not in GROUP_SIZES:
        raise ValueError(f"{op}: group_size must be one of {GROUP_SIZES}, got {group_size}")
    N, K = qweight.shape[0], 2 * qweight.shape[1]
    if K % group_size:
        raise ValueError(f"{op}: group_size {group_size} does not divide K={K}")
    for name, t in (("scales", scales), ("zeros", zeros)):
        check_vec(op, name, t, (K // group_size, N), SCALE_DTYPES, qweight.device)
    check_x(op, x, K, qweight.device)
    check_vec(op, "bias", bias, (N,), SCALE_DTYPES, qweight.device)
    return N, K


def check_w8_linear(op: str, x, qweight, scales, bias) -> tuple[int, int]:
    """(N, K) of a W8A16 product, after checking every argument (``op`` names the caller in the errors)."""
    if qweight.dtype != torch.int8 or qweight.dim() != 2:
        raise TypeError(f"{op}: qweight must be a 2-D int8 tensor [N, K], got {qweight.dtype} "
                        f"{tuple(qweight.shape)}")
    N, K = qweight.shape
    check_x(op, x, K, qweight.device)
    check_vec(op, "scales", scales, (N,), SCALE_DTYPES, qweight.device)
    check_vec(op, "bias", bias, (N,), SCALE_DTYPES, qweight.device)
    return N, K


def check_mma_gemv(op: str, x, qweight, max_m: int, fallback: str) -> None:
    """What the tensor-core GEMVs (``kernels.w4a16_mma_gemv``, ``w8a16_mma_gemv``) add to the op's checks: at
    most ``max_m`` rows of x (the tile's padded columns) and a weight read as int32 words."""
    if x.shape[0] > max_m:
        raise ValueError(f"{op} takes 1 to {max_m} rows of x (the tensor-core tile's padded columns), got "
                         f"{x.shape[0]}; use {fallback} for larger batches")
    if qweight.data_ptr() % 4:
        raise ValueError(f"{op}: qweight must start 4-byte aligned (it is read as int32 words)")
