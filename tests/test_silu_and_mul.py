"""SiLU-and-mul specifics beyond the generic property test: validation, layouts, the block-shape choice."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels import alloc
from kernels.device import BackendUnavailable
from kernels.silu_and_mul import _pick, silu_and_mul, silu_and_mul_eager, silu_and_mul_reference

pytestmark = pytest.mark.silu_and_mul


def _independent(x: torch.Tensor) -> torch.Tensor:
    # Written from the formula, not from the module: a * sigmoid(a) * b in float64.
    d = x.shape[-1] // 2
    a, b = x[..., :d].double(), x[..., d:].double()
    return a * torch.sigmoid(a) * b


def test_rejects_odd_last_dim(device):
    with pytest.raises(ValueError, match="even last dim"):
        silu_and_mul(torch.randn(2, 7, device=device))


def test_rejects_integer_input(device):
    with pytest.raises(TypeError, match="floating"):
        silu_and_mul(torch.ones(2, 8, dtype=torch.int32, device=device))


def test_leading_dims_and_strided_rows(device):
    base = torch.randn(2, 3, 50, device=device)
    x = base[..., :46]  # rows with a stride larger than the row length
    with alloc.poisoned():
        out = silu_and_mul(x)
    assert out.shape == (2, 3, 23)
    torch.testing.assert_close(out.double(), _independent(x), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # the interpreter's numpy exp, on purpose
def test_saturated_inputs_stay_finite(device):
    # exp(-a) overflows float32 for a < -88: silu must go to -0, not NaN.
    x = torch.tensor([[-1000.0, -90.0, 0.0, 90.0, 2.0, 3.0, 4.0, 5.0]], device=device)
    out = silu_and_mul(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), _independent(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows,d", [(5, 3000), (1, 5000), (40, 33)])
def test_every_block_shape_covers_the_output(device, rows, d):
    # Several row blocks, several column blocks, and a partial last block in each direction.
    x = torch.randn(rows, 2 * d, device=device)
    for tile, warps in ((256, 1), (1024, 4)):
        with alloc.poisoned():
            out = silu_and_mul(x, _tile=tile, _num_warps=warps)
        torch.testing.assert_close(out.double(), _independent(x), rtol=1e-5, atol=1e-6)


def test_pick_splits_wide_rows_and_packs_narrow_ones():
    rows_block, block, _ = _pick(18944)
    assert rows_block == 1 and block < 18944  # one decode token still spans several programs
    rows_block, block, _ = _pick(64)
    assert rows_block > 1 and block == 64  # small d: several rows per program


def test_reference_and_baseline_match_the_formula():
    x = 3 * torch.randn(4, 32, dtype=torch.float64)
    torch.testing.assert_close(silu_and_mul_reference(x), _independent(x))
    torch.testing.assert_close(silu_and_mul_eager(x), F.silu(x[:, :16]) * x[:, 16:])


def test_a_cpu_tensor_without_the_interpreter_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        silu_and_mul(torch.randn(2, 8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_down_projection_at_one_row_equals_the_pair_bit_for_bit(device, dtype):
    """At M = 1 silu_mul_linear is the GEMV with the gate applied on load: the same rounding of h and the
    same sums as silu_and_mul followed by linear (which also takes the GEMV at one row)."""
    from kernels.linear import linear
    from kernels.silu_linear import silu_mul_linear

    gen = torch.Generator(device=device).manual_seed(3)
    K, N = 1100, 70  # K not a multiple of the tile; N not of the row block
    x = (2 * torch.randn(1, 2 * K, generator=gen, device=device)).to(dtype)
    w = (torch.randn(N, K, generator=gen, device=device) / K ** 0.5).to(dtype)
    fused = silu_mul_linear(x, w)
    pair = linear(silu_and_mul(x), w)
    assert torch.equal(fused, pair)
    ref = (silu_and_mul(x).double() @ w.double().T)
    torch.testing.assert_close(fused.double(), ref, rtol=2e-2, atol=2e-2)
