"""Operands and the independent reference shared by the dense linear tests."""

from __future__ import annotations

import torch

from kernels.linear import linear_reference


def operands(M, N, K, device, dtype=torch.float32, seed=0):
    """x [M, K], weight [N, K] at nn.Linear's scale (y of order one) and bias [N], from a seeded generator."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(M, K, generator=gen, device=device).to(dtype)
    w = (torch.randn(N, K, generator=gen, device=device) / K**0.5).to(dtype)
    b = torch.randn(N, generator=gen, device=device).to(dtype)
    return x, w, b


def expected(x, w, b=None):
    """The product in float64 on a CPU (float32 on a GPU), from upcast inputs."""
    ref = torch.float64 if x.device.type == "cpu" else torch.float32
    return linear_reference(x.to(ref), w.to(ref), None if b is None else b.to(ref))
