"""paged_decode_attention beyond the generic property test: split independence, GQA, edges, errors."""

from __future__ import annotations

import pytest
import torch

from kernels import _decode_cases, _decode_splits, _paged_checks, paged_decode
from kernels._decode_cases import decode_sdpa_baseline
from kernels._decode_combine import MIN_REDUCE_DIMS, TILE_VALUES, reduce_chunks
from kernels._split_k import arrival_counters
from kernels.paged_decode import (
    SPLIT_TILES,
    TILES,
    choose_split_size,
    paged_decode_attention,
    paged_decode_attention_reference,
)
from kernels.prefill_attention import prefill_attention
from kernels.registry import get
from kernels.testing import assert_close, run_case

pytestmark = pytest.mark.paged_decode_attention
OP = get("paged_decode_attention")


def _case(context_lens, q_heads=4, kv_heads=2, head_dim=32, block_size=16, dtype=torch.float32, num_splits=None,
          pass_max=True, layout="shuffled"):
    return {"context_lens": tuple(context_lens), "q_heads": q_heads, "kv_heads": kv_heads, "head_dim": head_dim,
            "block_size": block_size, "dtype": dtype, "num_splits": num_splits, "pass_max": pass_max,
            "layout": layout}


def _inputs(case, device, seed=0):
    return _decode_cases.make_inputs(case, device, torch.Generator(device=device).manual_seed(seed))


@pytest.fixture(params=[(True, False), (False, False), (False, True)],
                ids=["folded", "two_kernels", "two_kernels_reduce_signals_late"])
def reduce_in_split(request, monkeypatch):
    """Run a test through both combines of split launches (kernels.paged_decode.REDUCE_IN_SPLIT), the
    second launch with either PDL signal placement (REDUCE_SIGNALS_LATE)."""
    folded, late = request.param
    monkeypatch.setattr(paged_decode, "REDUCE_IN_SPLIT", folded)
    monkeypatch.setattr(paged_decode, "REDUCE_SIGNALS_LATE", late)
    return folded


def test_context_lengths_around_block_edges(device):
    run_case(OP, _case([1, 15, 16, 17, 64, 90]), device, seed=1)


@pytest.mark.parametrize("ratio", [1, 2, 3, 4, 5, 6, 7, 8])
def test_gqa_ratios(device, ratio):
    run_case(OP, _case([40, 9], q_heads=2 * ratio, kv_heads=2), device, seed=ratio)


@pytest.mark.parametrize("head_dim", [80, 96])
def test_padded_head_dims(device, head_dim, reduce_in_split):
    run_case(OP, _case([20, 33], head_dim=head_dim, dtype=torch.float16, num_splits=2), device, seed=2)


def test_grid_sized_from_the_table_when_max_context_is_not_given(device):
    run_case(OP, _case([3, 50], pass_max=False, block_size=32), device, seed=3)


def test_result_does_not_depend_on_the_split_count(device, reduce_in_split):
    inputs = _inputs(_case([100, 7, 64], q_heads=6, kv_heads=2), device, seed=4)
    inputs.pop("num_splits", None)
    ref = paged_decode_attention_reference(**{n: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point()
                                              else t for n, t in inputs.items()})
    outs = [paged_decode_attention(**inputs, num_splits=n) for n in (1, 2, 3, 7)]
    outs.append(paged_decode_attention(**inputs, split_size=16))
    outs.append(paged_decode_attention(**inputs, split_size=4))  # 25 splits: the reduce's chunked loop
    # Against each other only rounding remains. The interpreter's fp32 dots are exact, so that is float32
    # summation order; on a GPU the dots are TF32 and each split rounds its own probabilities.
    tight = 1e-5 if device.type == "cpu" else 2e-3
    for out in outs:
        assert_close(out, ref, dtype=torch.float32, reduction_len=100, tf32=True)
        torch.testing.assert_close(out, outs[0], rtol=tight, atol=tight)


def test_reduce_chunks_take_every_split_in_one_step():
    """The reduce launch's tile: every split in one step, dims cut over programs (at least 32 a program)."""
    for splits in (1, 2, 33, 64, 128, 256):
        for d_pad in (32, 64, 128, 256):
            dims, step = reduce_chunks(splits, d_pad)
            assert step >= splits and dims * step <= max(TILE_VALUES, step * MIN_REDUCE_DIMS)
            assert MIN_REDUCE_DIMS <= dims <= d_pad or dims == d_pad < MIN_REDUCE_DIMS
    assert reduce_chunks(128, 128) == (64, 128) and reduce_chunks(16, 128) == (128, 16)


@pytest.mark.parametrize("head_dim", [80, 128])
def test_many_splits_combine_over_dim_chunks(device, head_dim):
    """150 splits: the reduce takes them in one step and cuts each head's dims over programs (the last chunk
    of an 80-wide head masked); the answer is the one-split answer up to rounding."""
    inputs = _inputs(_case([300, 41], q_heads=2, kv_heads=1, head_dim=head_dim), device, seed=11)
    inputs.pop("num_splits", None)
    ref = paged_decode_attention_reference(**{n: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point()
                                              else t for n, t in inputs.items()})
    out = paged_decode_attention(**inputs, split_size=2)
    assert_close(out, ref, dtype=torch.float32, reduction_len=300, tf32=True)
    tight = 1e-5 if device.type == "cpu" else 2e-3
    torch.testing.assert_close(out, paged_decode_attention(**inputs, num_splits=1), rtol=tight, atol=tight)


def test_splits_fitted_to_short_contexts_give_the_fixed_split_answer(device, reduce_in_split, monkeypatch):
    """The default policy under a bound far above most contexts (a decode graph's case): each sequence
    spreads its own context over the grid's splits, and the answer is the fixed-size split's."""
    monkeypatch.setattr(_decode_splits, "num_sms", lambda *_: 132)  # an H100/H200-sized grid on any machine
    monkeypatch.setattr(paged_decode, "device_sms", lambda device: 132)  # the launch's count, the same
    inputs = _inputs(_case([1000, 1, 17, 65, 200]), device, seed=6)
    inputs.pop("num_splits", None)
    assert -(-1000 // choose_split_size(5, 2, 1000)) == 6  # six splits: 17 tokens fit one, 200 take four
    ref = paged_decode_attention_reference(**{n: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point()
                                              else t for n, t in inputs.items()})
    fitted = paged_decode_attention(**inputs)
    assert paged_decode.decode_split(**inputs).max_splits == 6  # the launch was cut as asserted above
    monkeypatch.setattr(paged_decode, "FIT_SPLITS_TO_CONTEXT", False)
    fixed = paged_decode_attention(**inputs)
    assert_close(fitted, ref, dtype=torch.float32, reduction_len=1000, tf32=True)
    tight = 1e-5 if device.type == "cpu" else 2e-3
    torch.testing.assert_close(fitted, fixed, rtol=tight, atol=tight)


def test_decode_equals_the_last_row_of_causal_prefill(device, reduce_in_split):
    """Two kernels, one answer: the newest token's attention over n cached tokens."""
    torch.manual_seed(5)
    n, Hq, Hkv, D, bs = 45, 6, 3, 32, 16
    q, k, v = (torch.randn(n, h, D, device=device) for h in (Hq, Hkv, Hkv))
    full = prefill_attention(q, k, v, torch.tensor([0, n], dtype=torch.int32, device=device), n)
    table = torch.tensor([[2, 0, 3]], dtype=torch.int32, device=device)
    pos = torch.arange(n, device=device)
    k_cache, v_cache = torch.randn(2, 4, bs, Hkv, D, device=device)
    rows = table[0].long()[pos // bs], pos % bs
    k_cache[rows], v_cache[rows] = k, v
    out = paged_decode_attention(q[-1:], k_cache, v_cache, table, torch.tensor([n], dtype=torch.int32, device=device),
                                 num_splits=2)
    assert_close(out, full[-1:], dtype=torch.float32, reduction_len=n, tf32=True)


def test_sdpa_baseline_agrees_on_the_benchmark_layout(device):
    inputs = _inputs(_case([40, 40], layout="contiguous"), device, seed=6)  # 40 of the table's 48 slots
    torch.testing.assert_close(decode_sdpa_baseline(**inputs), paged_decode_attention_reference(**inputs),
                               rtol=1e-3, atol=1e-4)


def test_rejects_context_beyond_the_table(device):
    inputs = _inputs(_case([20, 10]), device)
    inputs["max_context_len"] = inputs["block_tables"].shape[1] * 16 + 1
    with pytest.raises(ValueError, match="capacity"):
        paged_decode_attention(**inputs)


@pytest.mark.parametrize("pass_max", [False, True])
def test_context_beyond_the_bound_is_clamped_not_read(device, pass_max, reduce_in_split):
    """Invalid input that only the debug checks catch (no sync otherwise): context lengths past the bound
    the grid is sized for. The kernel stays inside the block table and attends to the bound's tokens."""
    inputs = _inputs(_case([20, 10], pass_max=pass_max), device, seed=8)
    bound = inputs["max_context_len"] if pass_max else inputs["block_tables"].shape[1] * 16
    too_long = torch.tensor([bound + 500, 10], dtype=torch.int32, device=device)
    want = paged_decode_attention_reference(**{**inputs, "context_lens": torch.tensor([bound, 10], dtype=torch.int32,
                                                                                      device=device)})
    got = paged_decode_attention(**{**inputs, "context_lens": too_long}, num_splits=3)
    # fp32 inputs: exact dots in the interpreter, TF32 dots on a GPU (attending to the 500 extra tokens
    # would miss by far more than either tolerance).
    assert_close(got, want, dtype=torch.float32, reduction_len=bound, tf32=device.type != "cpu")


def test_rejects_heads_dims_and_dtypes(device):
    inputs = _inputs(_case([20]), device)
    with pytest.raises(ValueError, match="not a multiple"):
        paged_decode_attention(**{**inputs, "q": torch.randn(1, 3, 32, device=device)})
    with pytest.raises(ValueError, match="head_dim"):
        paged_decode_attention(**{**inputs, "q": torch.randn(1, 4, 48, device=device)})
    with pytest.raises(TypeError, match="must match"):
        paged_decode_attention(**{**inputs, "q": inputs["q"].half()})
    with pytest.raises(ValueError, match="num_splits"):
        paged_decode_attention(**inputs, num_splits=0)
    with pytest.raises(ValueError, match="scale must be a positive"):
        paged_decode_attention(**inputs, scale=-1.0)


def test_debug_checks_catch_bad_context_lengths_and_block_ids(device, monkeypatch):
    inputs = _inputs(_case([20, 10]), device)
    inputs.pop("max_context_len")
    monkeypatch.setattr(_paged_checks, "DEBUG_CHECKS", True)
    with pytest.raises(ValueError, match="capacity"):
        paged_decode_attention(**{**inputs, "context_lens": torch.tensor([20, 999], dtype=torch.int32,
                                                                          device=device)})
    bad_table = inputs["block_tables"].clone()
    bad_table[0, 0] = 10_000
    with pytest.raises(ValueError, match="block ids"):
        paged_decode_attention(**{**inputs, "block_tables": bad_table})


@pytest.mark.gpu
@pytest.mark.parametrize("heads", [(32, 8), (14, 2)])
def test_long_context_bf16_small_batch(device, heads, reduce_in_split):
    case = _case([32768, 5000, 1], q_heads=heads[0], kv_heads=heads[1], head_dim=128, block_size=16,
                 dtype=torch.bfloat16)
    run_case(OP, case, device, seed=7)


@pytest.mark.gpu
def test_split_independence_bf16_on_gpu(device, reduce_in_split):
    inputs = _inputs(_case([20000, 333, 4097], q_heads=32, kv_heads=8, head_dim=128, block_size=128,
                           dtype=torch.bfloat16), device, seed=8)
    outs = [paged_decode_attention(**inputs, num_splits=n).float() for n in (1, 5, 40)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1.6e-2, atol=2e-3)


def test_rejects_tensors_on_different_devices(device):
    inputs = _inputs(_case([20]), device)
    with pytest.raises(ValueError, match="is on meta"):
        paged_decode_attention(**{**inputs, "context_lens": torch.empty(1, dtype=torch.int32, device="meta")})


SHIPPED_BLOCK_N = sorted({t["BLOCK_N"] for tiles in (TILES, SPLIT_TILES) for by_dim in tiles["cuda"].values()
                          for t in by_dim.values()})


@pytest.mark.parametrize("block_n", SHIPPED_BLOCK_N)
def test_gpu_tile_shapes_through_the_same_checks(device, block_n, reduce_in_split):
    """The GPU's tiles (tiles spanning several 16-token pages, splits not a multiple of the tile)."""
    inputs = _inputs(_case([1, 300, 64, 65, 129], q_heads=14, kv_heads=2), device, seed=9)
    ref = paged_decode_attention_reference(**{n: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point()
                                              else t for n, t in inputs.items()})
    for splits in (None, 3):
        out = paged_decode_attention(**{**inputs, "num_splits": splits}, _tile=dict(BLOCK_N=block_n))
        assert_close(out, ref, dtype=torch.float32, reduction_len=300, tf32=True)


def test_fixed_split_size_makes_a_sequence_batch_invariant(device, reduce_in_split):
    """With one split size, a sequence's output is bit-identical alone and inside a bigger batch."""
    inputs = _inputs(_case([100, 37, 250], q_heads=6, kv_heads=2), device, seed=10)
    inputs.pop("max_context_len")
    batched = paged_decode_attention(**inputs, split_size=32)
    alone = paged_decode_attention(inputs["q"][:1], inputs["k_cache"], inputs["v_cache"], inputs["block_tables"][:1],
                                   inputs["context_lens"][:1], split_size=32, max_context_len=100)
    assert torch.equal(alone, batched[:1])


def _counters_of(device, rows):
    return arrival_counters(device, rows)[:rows]


def test_folded_reduce_equals_the_two_kernel_path_and_rearms_its_counters(device, monkeypatch):
    """One launch combining its own partials gives the two launches' answer to rounding (the same combine
    code, over [splits, G heads, D] tiles there and [splits, 1, D] here, which may sum in another order),
    leaves every arrival counter at zero, and a second launch right after it (counters re-armed) gives the
    same bits. Contexts of 150 tokens in splits of 4: 38 splits, so each combine takes two 32-split steps;
    the 9- and 1-token sequences leave most of their programs past their end (they neither compute nor
    arrive)."""
    inputs = _inputs(_case([150, 9, 1, 64], q_heads=6, kv_heads=2), device, seed=11)
    rows = 4 * 2
    monkeypatch.setattr(paged_decode, "REDUCE_IN_SPLIT", False)
    two_kernels = paged_decode_attention(**inputs, split_size=4)
    monkeypatch.setattr(paged_decode, "REDUCE_IN_SPLIT", True)
    assert not _counters_of(device, rows).any()
    first = paged_decode_attention(**inputs, split_size=4)
    assert not _counters_of(device, rows).any()
    second = paged_decode_attention(**inputs, split_size=4)
    assert not _counters_of(device, rows).any()
    assert torch.equal(first, second)
    torch.testing.assert_close(first, two_kernels, rtol=1e-5, atol=1e-6)
    ref = paged_decode_attention_reference(**{n: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point()
                                              else t for n, t in inputs.items()})
    assert_close(first, ref, dtype=torch.float32, reduction_len=150, tf32=True)


# The empty split's log-sum-exp is log2(0) = -inf on purpose; the interpreter's numpy says so.
@pytest.mark.filterwarnings("ignore:divide by zero encountered in log2:RuntimeWarning")
def test_an_empty_context_gives_zeros_in_both_combines(device, reduce_in_split):
    """Never valid input, but it must not hang the folded path's row (split 0 still arrives) or leave o unset."""
    inputs = _inputs(_case([40, 40]), device, seed=12)
    inputs["context_lens"] = torch.tensor([40, 0], dtype=torch.int32, device=device)
    out = paged_decode_attention(**inputs, num_splits=3)
    assert not _counters_of(device, 2 * 2).any()
    assert not out[1].any()
    first = {**inputs, "q": inputs["q"][:1], "block_tables": inputs["block_tables"][:1],
             "context_lens": inputs["context_lens"][:1]}
    want = paged_decode_attention_reference(**first)
    assert_close(out[:1], want, dtype=torch.float32, reduction_len=40, tf32=True)


@pytest.mark.parametrize("fresh", [0, 1, 5])
def test_fresh_tokens_only_move_reads_and_give_the_same_bits(device, fresh):
    """``fresh_tokens`` lets the first tile's settled tokens be read before the PDL wait; the tile, its mask
    and the order of the sums stay the same, so the output is bitwise the unpromised one: one split, fixed
    splits, fitted splits, and fresh tokens that cover whole short contexts."""
    inputs = _inputs(_case([1, 3, 15, 16, 17, 100], q_heads=6, kv_heads=2), device, seed=9)
    inputs.pop("num_splits", None)
    ref = paged_decode_attention_reference(**{n: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point()
                                              else t for n, t in inputs.items()})
    for launch in ({}, {"num_splits": 1}, {"num_splits": 3}, {"split_size": 16}):
        want = paged_decode_attention(**inputs, **launch)
        got = paged_decode_attention(**inputs, **launch, fresh_tokens=fresh)
        assert torch.equal(got, want), launch
        assert_close(got, ref, dtype=torch.float32, reduction_len=100, tf32=True)


def test_rejects_a_bad_fresh_token_count(device):
    inputs = _inputs(_case([20]), device)
    for bad in (-1, 1.0, torch.tensor(1)):
        with pytest.raises(ValueError, match="fresh_tokens"):
            paged_decode_attention(**inputs, fresh_tokens=bad)


@pytest.mark.gpu
def test_a_fresh_token_written_just_before_is_read_after_the_wait(device):
    """On a GPU with PDL the attention launch may start while the KV write before it still runs. The newest
    token's slot holds NaN until that write lands; a prefetch that read it early would return NaN or a stale
    answer. Repeated, since a race shows only sometimes."""
    from kernels.kv_cache import kv_cache_write

    gen = torch.Generator(device=device).manual_seed(10)
    batch, Hq, Hkv, D, bs, n = 4, 14, 2, 64, 16, 300
    q = torch.randn(batch, Hq, D, device=device, generator=gen).to(torch.bfloat16)
    k_cache, v_cache = (torch.randn(batch * 20, bs, Hkv, D, device=device, generator=gen).to(torch.bfloat16)
                        for _ in range(2))
    table = torch.randperm(batch * 20, device=device, generator=gen).to(torch.int32).view(batch, 20)
    lens = torch.tensor([n, n - 17, 16, 1], dtype=torch.int32, device=device)
    last = lens.long() - 1
    slots = (table.long().gather(1, (last // bs)[:, None])[:, 0] * bs + last % bs)
    k_new, v_new = (torch.randn(batch, Hkv, D, device=device, generator=gen).to(torch.bfloat16) for _ in range(2))
    k_want, v_want = k_cache.clone(), v_cache.clone()
    k_want.view(-1, Hkv, D)[slots], v_want.view(-1, Hkv, D)[slots] = k_new, v_new
    want = paged_decode_attention_reference(q, k_want, v_want, table, lens)
    for _ in range(20):
        k_cache.view(-1, Hkv, D)[slots] = float("nan")
        v_cache.view(-1, Hkv, D)[slots] = float("nan")
        kv_cache_write(k_new, v_new, k_cache, v_cache, slots)
        got = paged_decode_attention(q, k_cache, v_cache, table, lens, max_context_len=320, fresh_tokens=1)
        assert_close(got, want, dtype=torch.bfloat16, reduction_len=n)
