"""The one-token decode fusions built on the paired-row GEMV (kernels/rmsnorm_swiglu.py, rmsnorm_qkv_rope.py).

Their results against the references are checked by tests/test_ops.py through the registry. Here: each gives
bitwise what the engine computes without it (``rmsnorm_linear``'s GEMV, then ``silu_and_mul`` or
``rope_kv_write``), so turning a fusion on or off changes no token; and bad arguments fail with the op's
name and the problem, before anything launches.

The bitwise tests run in the interpreter. There both sides use their first config (the same BLOCK_K, so
each row's sum runs in the same order) and the same K chunks. On a GPU the autotuner may pick different
BLOCK_K for the two kernels, which changes the order of the sums: equal to rounding only."""

from __future__ import annotations

import pytest
import torch

from kernels.device import interpreting
from kernels.rmsnorm_linear import rmsnorm_linear
from kernels.rmsnorm_qkv_rope import rmsnorm_qkv_rope
from kernels.rmsnorm_swiglu import rmsnorm_swiglu
from kernels.rope import build_rope_cache
from kernels.rope_kv_write import rope_kv_write
from kernels.silu_and_mul import silu_and_mul

bitwise = pytest.mark.skipif(not interpreting(), reason="bitwise only where both kernels run their first config "
                             "(the interpreter); on a GPU the tuned tiles may sum in another order")


def _qkv_args(rows=(3 + 2) * 16, tokens=1, heads=(3, 1), device="cpu"):
    gen = torch.Generator().manual_seed(0)
    args = dict(x=torch.randn(tokens, 32, generator=gen), norm_weight=torch.ones(32),
                weight=torch.randn(rows, 32, generator=gen), bias=None, residual=None, eps=1e-6,
                positions=torch.zeros(tokens, dtype=torch.int64), cos_sin_cache=build_rope_cache(16, 64),
                k_cache=torch.zeros(2, 16, 1, 16), v_cache=torch.zeros(2, 16, 1, 16),
                slot_mapping=torch.arange(tokens), num_heads=heads[0], num_kv_heads=heads[1])
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def test_swiglu_rejects_an_odd_weight_a_bad_variant_and_fused_rows():
    x, g = torch.randn(1, 32), torch.ones(32)
    with pytest.raises(ValueError, match=r"rmsnorm_swiglu: weight must be \[2I, K\]"):
        rmsnorm_swiglu(x, g, torch.randn(7, 32))
    with pytest.raises(ValueError, match="rmsnorm_swiglu: unknown variant 'fast'"):
        rmsnorm_swiglu(x, g, torch.randn(8, 32), variant="fast")
    with pytest.raises(ValueError, match="rmsnorm_swiglu: the fused variant takes one row"):
        rmsnorm_swiglu(torch.randn(3, 32), g, torch.randn(8, 32), variant="fused")
    with pytest.raises(ValueError, match="K"):
        rmsnorm_swiglu(x, g, torch.randn(8, 31))


def test_qkv_rope_rejects_rows_that_are_not_whole_heads_and_mismatched_caches(device):
    with pytest.raises(ValueError, match=r"rmsnorm_qkv_rope: weight's 81 rows must be .* = 5 heads"):
        rmsnorm_qkv_rope(**_qkv_args(rows=81, device=device))
    with pytest.raises(ValueError, match="rmsnorm_qkv_rope: the fused variant takes one row"):
        rmsnorm_qkv_rope(**_qkv_args(tokens=3, device=device), variant="fused")
    args = _qkv_args(device=device)
    # two KV heads in the cache, one in the weight
    args["k_cache"] = args["v_cache"] = torch.zeros(2, 16, 2, 16, device=device)
    with pytest.raises(ValueError, match=r"kv_cache_write: .* 2 KV heads"):
        rmsnorm_qkv_rope(**args)
    args = _qkv_args(device=device)
    args["cos_sin_cache"] = build_rope_cache(8, 64).to(device)
    with pytest.raises(ValueError, match="rope: cos_sin_cache must be float32"):
        rmsnorm_qkv_rope(**args)


def _row(gen, K, dtype, residual):
    x = (2 * torch.randn(1, K, generator=gen)).to(dtype)
    r = torch.randn(1, K, generator=gen).to(dtype) if residual else None
    return x, (1 + 0.1 * torch.randn(K, generator=gen)).to(dtype), r


@bitwise
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("residual", [False, True])
def test_swiglu_is_bitwise_the_norm_gemv_then_silu_and_mul(dtype, residual):
    gen = torch.Generator().manual_seed(1)
    K, inter = 1100, 40  # K in three chunks, the last one not whole tiles; 40 rows: not whole tiles either
    x, g, r = _row(gen, K, dtype, residual)
    w = (torch.randn(2 * inter, K, generator=gen) / K ** 0.5).to(dtype)
    b = torch.randn(2 * inter, generator=gen).to(dtype)
    y, h = rmsnorm_swiglu(x, g, w, b, r, variant="fused")
    gate_up, h_want = rmsnorm_linear(x, g, w, b, r, variant="fused")
    assert torch.equal(y, silu_and_mul(gate_up)) and torch.equal(h, h_want)


@bitwise
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_qkv_rope_is_bitwise_the_norm_gemv_then_rope_kv_write(dtype, bias):
    gen = torch.Generator().manual_seed(2)
    K, H, KV, D = 1100, 3, 1, 32
    x, g, r = _row(gen, K, dtype, True)
    w = (torch.randn((H + 2 * KV) * D, K, generator=gen) / K ** 0.5).to(dtype)
    b = torch.randn(w.shape[0], generator=gen).to(dtype) if bias else None
    caches = [torch.randn(3, 16, KV, D, generator=gen).to(dtype) for _ in range(2)]
    caches += [c.clone() for c in caches]  # the same old contents on both sides
    pos, slot, table = torch.tensor([777]), torch.tensor([21]), build_rope_cache(D, 1024, theta=1e6)
    qkv, h = rmsnorm_qkv_rope(x, g, w, b, r, 1e-6, pos, table, caches[0], caches[1], slot, H, KV, variant="fused")
    want, h_want = rmsnorm_linear(x, g, w, b, r, variant="fused")
    q, k, v = want.split([H * D, KV * D, KV * D], dim=-1)
    rope_kv_write(q.view(1, H, D), k.view(1, KV, D), v.view(1, KV, D), pos, table, caches[2], caches[3], slot)
    assert torch.equal(qkv, want) and torch.equal(h, h_want)
    assert torch.equal(caches[0], caches[2]) and torch.equal(caches[1], caches[3])
