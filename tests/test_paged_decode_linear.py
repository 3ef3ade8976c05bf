"""paged_decode_attention_linear beyond the generic property test: the fused GEMV really runs and combines the
splits, batches beyond it and one-split launches take the two ops, bad weights fail clearly."""

from __future__ import annotations

import pytest
import torch

from kernels import alloc, paged_decode_linear
from kernels.paged_decode_linear import (
    paged_decode_attention_linear,
    paged_decode_attention_linear_reference,
    paged_decode_attention_linear_separate,
)
from kernels.registry import get
from kernels.testing import assert_close

pytestmark = pytest.mark.paged_decode_attention_linear
OP = get("paged_decode_attention_linear")


def _inputs(device, context_lens, q_heads=6, kv_heads=2, head_dim=32, out_features=33, dtype=torch.float32,
            bias=True, block_size=16, seed=0):
    case = {"context_lens": tuple(context_lens), "q_heads": q_heads, "kv_heads": kv_heads, "head_dim": head_dim,
            "block_size": block_size, "dtype": dtype, "num_splits": None, "pass_max": True, "layout": "shuffled",
            "out_features": out_features, "bias": bias}
    return OP.make_inputs(case, device, torch.Generator(device=device).manual_seed(seed))


def _expected(inputs):
    wide = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in inputs.items()}
    return paged_decode_attention_linear_reference(**wide)


class _NoLinear:
    """Stands in for the dense linear op where the fused GEMV must run instead."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the two-op path ran where the fused GEMV should have")


@pytest.mark.parametrize("num_splits", [2, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fused_gemv_combines_the_splits(device, monkeypatch, num_splits, dtype):
    inputs = _inputs(device, [70], dtype=dtype, seed=num_splits)
    separate = paged_decode_attention_linear_separate(**inputs, num_splits=num_splits)
    monkeypatch.setattr(paged_decode_linear.dense, "linear", _NoLinear())
    with alloc.poisoned():
        got = paged_decode_attention_linear(**inputs, num_splits=num_splits, fresh_tokens=1)
    # float32 on a GPU: the attention's dots are TF32 (as paged_decode_attention's tests allow).
    assert_close(got, _expected(inputs).to(dtype), dtype=dtype, reduction_len=2 * 6 * 32, tf32=True)
    # The same partials, combined by the same rule and rounded to o's dtype: the two paths agree to rounding.
    assert_close(got, separate, dtype=dtype, reduction_len=6 * 32)


def test_split_independence_and_the_heads_per_slice(device, monkeypatch):
    """Heads of 16 and 64 (a K slice holds several heads, or part of one), a K that is not whole slices, and
    any split count: the result moves only by rounding."""
    for head_dim, q_heads, kv_heads in ((16, 5, 1), (64, 3, 3)):
        inputs = _inputs(device, [97], q_heads=q_heads, kv_heads=kv_heads, head_dim=head_dim, out_features=20)
        want = _expected(inputs).float()
        monkeypatch.setattr(paged_decode_linear.dense, "linear", _NoLinear())
        for splits in (2, 4, 7):
            with alloc.poisoned():
                got = paged_decode_attention_linear(**inputs, num_splits=splits)
            assert_close(got, want, dtype=torch.float32, reduction_len=2 * q_heads * head_dim, tf32=True)
        monkeypatch.undo()


@pytest.mark.parametrize("context_lens,num_splits", [([5, 70], 3), ([40], 1), ([16], None)])
def test_other_launches_take_the_two_ops(device, context_lens, num_splits):
    """Two sequences (beyond FUSED_MAX_BATCH) or one split (no partials): the attention op, then linear."""
    inputs = _inputs(device, context_lens)
    with alloc.poisoned():
        got = paged_decode_attention_linear(**inputs, num_splits=num_splits)
    assert_close(got, _expected(inputs).float(), dtype=torch.float32, reduction_len=2 * 6 * 32, tf32=True)


def test_bad_weights_fail_clearly(device):
    inputs = _inputs(device, [20])
    with pytest.raises(ValueError, match="K = q heads"):
        paged_decode_attention_linear(**dict(inputs, weight=inputs["weight"][:, :-1]))
    with pytest.raises(TypeError, match="q's dtype"):
        paged_decode_attention_linear(**dict(inputs, weight=inputs["weight"].half()))
    with pytest.raises(ValueError, match="2-D"):
        paged_decode_attention_linear(**dict(inputs, weight=inputs["weight"][0]))


@pytest.mark.gpu
@pytest.mark.parametrize("q_heads,kv_heads,n", [(14, 2, 896), (32, 8, 2048)])
@pytest.mark.parametrize("context", [1, 384, 5000])
def test_engine_shapes_in_bf16(device, q_heads, kv_heads, n, context):
    """The engine's launch: one sequence, a grid sized for an 8192-token bound, the newest token fresh."""
    inputs = _inputs(device, [context], q_heads=q_heads, kv_heads=kv_heads, head_dim=64, out_features=n,
                     dtype=torch.bfloat16, bias=False, seed=context)
    table = inputs["block_tables"]  # room for the bound, as the engine's tables have: spare entries unused
    spare = torch.zeros(1, 8192 // 16 - table.shape[1], dtype=table.dtype, device=device)
    inputs.update(block_tables=torch.cat([table, spare], dim=1), max_context_len=8192)
    with alloc.poisoned():
        got = paged_decode_attention_linear(**inputs, fresh_tokens=1)
    separate = paged_decode_attention_linear_separate(**inputs, fresh_tokens=1)
    assert_close(got, _expected(inputs).to(torch.bfloat16), dtype=torch.bfloat16, reduction_len=2 * q_heads * 64)
    assert_close(got, separate, dtype=torch.bfloat16, reduction_len=q_heads * 64)
