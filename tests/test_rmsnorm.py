"""RMSNorm specifics beyond the generic property test: validation and the fused-residual contract."""

from __future__ import annotations

import pytest
import torch

from kernels import rmsnorm as rmsnorm_module
from kernels.device import BackendUnavailable
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


def test_rejects_integer_weight(device):
    with pytest.raises(TypeError, match=r"weight must be a floating tensor .* got torch\.int32"):
        rmsnorm(torch.randn(2, 8, device=device), torch.ones(8, dtype=torch.int32, device=device))


def test_a_cpu_tensor_without_the_interpreter_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        rmsnorm(torch.randn(2, 8), torch.ones(8))


@pytest.mark.parametrize("gpu, expected", [
    # The CUDA numbers were tuned on an H200; the interpreter uses them too.
    ("cuda", {(4096, 1024): (2, 4), (1, 8192): (1, 16), (7, 128): (8, 2)}),
    ("cpu", {(4096, 1024): (2, 4), (1, 8192): (1, 16), (7, 128): (8, 2)}),
    ("hip", {(4096, 1024): (4, 4), (1, 8192): (1, 8), (7, 128): (8, 1)}),
])
def test_launch_shape_reads_the_vendor_config_at_launch(monkeypatch, gpu, expected):
    monkeypatch.setattr(rmsnorm_module, "vendor", lambda: gpu)
    for (rows, block), shape in expected.items():
        assert rmsnorm_module._launch_shape(rows, block, None, None) == shape, (rows, block)
    assert rmsnorm_module._launch_shape(4096, 1024, 1, 8) == (1, 8)  # the tuning script's overrides win
