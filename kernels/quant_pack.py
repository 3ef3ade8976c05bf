"""Quantizers and int4 packing for the weight-only linear layers (``kernels.quant_linear``).

``quantize_w8``: symmetric per output channel, ``scales = max|w| / 127``, int8 in -127..127.
``quantize_w4``: asymmetric per group of 32, 64 or 128 along K, int4 in 0..15, with the group's range
widened to include 0; scales and zeros are [K // group, N] (group-major). Packing: byte j of a row holds
k = 2j in its low nibble and k = 2j + 1 in its high nibble.
"""

from __future__ import annotations

import torch

GROUP_SIZES = (32, 64, 128)


def quantize_w8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: ``scales = max|w| / 127``; returns (qweight int8 [N, K], scales [N])."""
    if weight.dim() != 2 or not weight.dtype.is_floating_point:
        raise ValueError(f"quantize_w8: weight must be a 2-D float tensor [N, K], got {weight.dtype} "
                         f"{tuple(weight.shape)}")
    w = weight.float()
    scales = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny).to(weight.dtype)
    q = torch.round(w / scales.float()[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """[N, K] integers in 0..15 -> uint8 [N, K // 2]; even k in the low nibble, odd k in the high."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K // 2] -> int32 [N, K], inverse of :func:`pack_int4`."""
    p = packed.to(torch.int32)
    return torch.stack([p & 0xF, p >> 4], dim=-1).flatten(-2)


def quantize_w4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 per group of ``group_size`` along K; returns (qweight, scales, zeros).

    The group's range is widened to include 0, so constant groups and zeros are exact.
    """
    if weight.dim() != 2 or not weight.dtype.is_floating_point:
        raise ValueError(f"quantize_w4: weight must be a 2-D float tensor [N, K], got {weight.dtype} "
                         f"{tuple(weight.shape)}")
    N, K = weight.shape
    if group_size not in GROUP_SIZES or K % group_size:
        raise ValueError(f"quantize_w4: group_size must be one of {GROUP_SIZES} and divide K={K}, "
                         f"got {group_size}")
    w = weight.float().reshape(N, K // group_size, group_size)
    lo, hi = w.amin(-1).clamp(max=0), w.amax(-1).clamp(min=0)
    scales = ((hi - lo) / 15).clamp(min=torch.finfo(torch.float32).tiny).to(weight.dtype)
    s = scales.float()
    zeros = torch.round(-lo / s).clamp(0, 15)
    q = (torch.round(w / s[..., None]) + zeros[..., None]).clamp(0, 15)
    return pack_int4(q.reshape(N, K)), scales.T.contiguous(), zeros.to(weight.dtype).T.contiguous()


def dequantize_w4(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
                  group_size: int) -> torch.Tensor:
    """Dense [N, K] weight in the scales' dtype (float64 stays float64)."""
    compute = torch.float64 if scales.dtype == torch.float64 else torch.float32
    q = unpack_int4(qweight).to(compute)
    s = scales.to(compute).T.repeat_interleave(group_size, dim=1)
    z = zeros.to(compute).T.repeat_interleave(group_size, dim=1)
    return ((q - z) * s).to(scales.dtype)
