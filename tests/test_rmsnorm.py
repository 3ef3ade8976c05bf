"""RMSNorm specifics beyond the generic property test: validation and the fused-residual contract."""

from __future__ import annotations

import pytest
import torch

from kernels.rmsnorm import rmsnorm, rmsnorm_reference

pytestmark = pytest.mark.rmsnorm


def test_rejects_bad_weight_shape(device):
    x = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="weight must have shape"):
        rmsnorm(x, torch.ones(7, device=device))


def test_rejects_integer_input(device):
    with pytest.raises(TypeError, match="floating"):
        rmsnorm(torch.ones(2, 8, dtype=torch.int32, device=device), torch.ones(8, device=device))


def test_rejects_mismatched_residual(device):
    x = torch.randn(2, 8, device=device)
    with pytest.raises(ValueError, match="residual must match"):
        rmsnorm(x, torch.ones(8, device=device), residual=torch.randn(3, 8, device=device))


def test_strided_rows_and_leading_dims(device):
    base = torch.randn(4, 3, 40, device=device)
    x = base[..., :33]  # rows with a stride larger than the row length
    w = torch.randn(33, device=device)
    torch.testing.assert_close(rmsnorm(x, w), rmsnorm_reference(x, w), rtol=1e-5, atol=1e-5)


def test_fused_residual_equals_unfused(device):
    x, r = torch.randn(5, 64, device=device), torch.randn(5, 64, device=device)
    w = torch.randn(64, device=device)
    y, h = rmsnorm(x, w, residual=r)
    torch.testing.assert_close(h, x + r)
    torch.testing.assert_close(y, rmsnorm(x + r, w), rtol=1e-5, atol=1e-5)
