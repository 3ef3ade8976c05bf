"""Dense copies of quantized weights, made once per weight tensor, for the cuBLAS baselines.

A benchmark baseline must time only the dense matmul, not a dequantization per call. The cache is keyed
by the identity of the quantized tensor and drops an entry when that tensor is freed.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

_CACHE: dict[tuple[int, torch.dtype], tuple[weakref.ref, torch.Tensor]] = {}


def dense_weight(quantized: torch.Tensor, dtype: torch.dtype,
                 build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``build()`` converted to ``dtype``, computed once while ``quantized`` is alive."""
    key = (id(quantized), dtype)
    hit = _CACHE.get(key)
    if hit is not None and hit[0]() is quantized:
        return hit[1]
    dense = build().to(dtype).contiguous()
    _CACHE[key] = (weakref.ref(quantized, lambda _ref, k=key: _CACHE.pop(k, None)), dense)
    return dense
