"""The one-token decode fusions built on the paired-row GEMV (kernels/rmsnorm_swiglu.py, rmsnorm_qkv_rope.py):
bad arguments fail with the op's name and the problem, before anything launches. Their results against the
references are checked by tests/test_ops.py through the registry."""

from __future__ import annotations

import pytest
import torch

from kernels.rmsnorm_qkv_rope import rmsnorm_qkv_rope
from kernels.rmsnorm_swiglu import rmsnorm_swiglu
from kernels.rope import build_rope_cache


def _qkv_args(rows=(3 + 2) * 16, tokens=1, heads=(3, 1)):
    gen = torch.Generator().manual_seed(0)
    return dict(x=torch.randn(tokens, 32, generator=gen), norm_weight=torch.ones(32),
                weight=torch.randn(rows, 32, generator=gen), bias=None, residual=None, eps=1e-6,
                positions=torch.zeros(tokens, dtype=torch.int64), cos_sin_cache=build_rope_cache(16, 64),
                k_cache=torch.zeros(2, 16, 1, 16), v_cache=torch.zeros(2, 16, 1, 16),
                slot_mapping=torch.arange(tokens), num_heads=heads[0], num_kv_heads=heads[1])


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


def test_qkv_rope_rejects_rows_that_are_not_whole_heads_and_mismatched_caches():
    with pytest.raises(ValueError, match=r"rmsnorm_qkv_rope: weight's 81 rows must be .* = 5 heads"):
        rmsnorm_qkv_rope(**_qkv_args(rows=81))
    with pytest.raises(ValueError, match="rmsnorm_qkv_rope: the fused variant takes one row"):
        rmsnorm_qkv_rope(**_qkv_args(tokens=3), variant="fused")
    args = _qkv_args()
    args["k_cache"] = args["v_cache"] = torch.zeros(2, 16, 2, 16)  # two KV heads in the cache, one in the weight
    with pytest.raises(ValueError, match=r"kv_cache_write: .* 2 KV heads"):
        rmsnorm_qkv_rope(**args)
    args = _qkv_args()
    args["cos_sin_cache"] = build_rope_cache(8, 64)
    with pytest.raises(ValueError, match="rope: cos_sin_cache must be float32"):
        rmsnorm_qkv_rope(**args)
