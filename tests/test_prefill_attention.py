"""prefill_attention beyond the generic property test: edge lengths, GQA ratios, prefix + chunk, errors."""

from __future__ import annotations

import pytest
import torch

from kernels import _paged_checks, _prefill_cases, alloc, tma
from kernels._attention_ref import dense_attention
from kernels.kv_cache import kv_cache_write
from kernels.prefill_attention import (
    _tma_descriptors,
    prefill_attention,
    prefill_attention_reference,
    prefill_sdpa_baseline,
)
from kernels.registry import get
from kernels.testing import assert_close, run_case

pytestmark = pytest.mark.prefill_attention
OP = get("prefill_attention")


def _case(seqlens, prefixes=None, q_heads=4, kv_heads=2, head_dim=32, dtype=torch.float32, causal=True,
          block_size=16):
    return {"seqlens": tuple(seqlens), "prefixes": None if prefixes is None else tuple(prefixes),
            "q_heads": q_heads, "kv_heads": kv_heads, "head_dim": head_dim, "block_size": block_size,
            "dtype": dtype, "causal": causal}


@pytest.mark.parametrize("causal", [True, False])
def test_lengths_around_tile_and_block_edges(device, causal):
    # 1, block_size - 1, block_size, block_size + 1, and a long one next to short ones.
    run_case(OP, _case([1, 15, 16, 17, 50], causal=causal), device, seed=1)


@pytest.mark.parametrize("ratio", [1, 2, 3, 4, 5, 6, 7, 8])
def test_gqa_ratios(device, ratio):
    run_case(OP, _case([9, 20], q_heads=2 * ratio, kv_heads=2), device, seed=ratio)


@pytest.mark.parametrize("head_dim", [80, 96])
def test_padded_head_dims(device, head_dim):
    run_case(OP, _case([7, 18], q_heads=2, kv_heads=1, head_dim=head_dim, dtype=torch.float16), device, seed=3)


@pytest.mark.parametrize("causal", [True, False])
def test_prefix_plus_chunk_in_shuffled_blocks(device, causal):
    run_case(OP, _case([5, 17, 1, 16], prefixes=[31, 0, 16, 1], causal=causal, block_size=16), device, seed=4)


def test_bf16_through_the_interpreter_safe_path(device):
    run_case(OP, _case([19, 3], prefixes=[20, 5], dtype=torch.bfloat16), device, seed=5)


def test_chunked_prefill_equals_whole_prefill(device):
    """The engine's flow: prefill 0..P, write its K/V to the cache, then prefill the chunk over it."""
    torch.manual_seed(0)
    P, C, Hq, Hkv, D, bs = 37, 21, 4, 2, 32, 16
    q, k, v = (torch.randn(P + C, h, D, device=device) for h in (Hq, Hkv, Hkv))
    cu = lambda n: torch.tensor([0, n], dtype=torch.int32, device=device)
    whole = prefill_attention(q, k, v, cu(P + C), P + C)
    k_cache, v_cache = torch.randn(2, 6, bs, Hkv, D, device=device)
    table = torch.tensor([[5, 2, 0, 3]], dtype=torch.int32, device=device)
    pos = torch.arange(P, device=device)
    kv_cache_write(k[:P], v[:P], k_cache, v_cache, table[0].long()[pos // bs] * bs + pos % bs)
    chunk = prefill_attention(q[P:], k[P:], v[P:], cu(C), C, k_cache=k_cache, v_cache=v_cache,
                              block_tables=table, prefix_lens=torch.tensor([P], dtype=torch.int32, device=device))
    assert_close(chunk, whole[P:], dtype=torch.float32, reduction_len=P + C, tf32=True)


def test_custom_scale(device):
    torch.manual_seed(1)
    q, k, v = torch.randn(12, 2, 16, device=device), torch.randn(12, 1, 16, device=device), \
        torch.randn(12, 1, 16, device=device)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32, device=device)
    out = prefill_attention(q, k, v, cu, 7, scale=0.3)
    ref = prefill_attention_reference(q.double(), k.double(), v.double(), cu, 7, scale=0.3)
    assert_close(out, ref, dtype=torch.float32, reduction_len=7, tf32=True)


@pytest.mark.parametrize("first_query_pos", [None, 3])
def test_reference_gives_each_kv_head_its_group_of_query_heads(first_query_pos):
    """Query head h reads KV head h // (Hq / Hkv), as the kernels do: checked one head at a time."""
    torch.manual_seed(2)
    Sq, Sk, Hq, Hkv, D = 4, 7, 6, 2, 8
    q, k, v = (torch.randn(s, h, D, dtype=torch.float64) for s, h in ((Sq, Hq), (Sk, Hkv), (Sk, Hkv)))
    out = dense_attention(q, k, v, 0.5, first_query_pos)
    mask = None if first_query_pos is None else \
        torch.arange(Sk)[None, :] <= first_query_pos + torch.arange(Sq)[:, None]
    for h in range(Hq):
        g = h // (Hq // Hkv)
        want = torch.nn.functional.scaled_dot_product_attention(q[:, h], k[:, g], v[:, g], attn_mask=mask, scale=0.5)
        torch.testing.assert_close(out[:, h], want)


def _qkv(device, q_heads=4, kv_heads=2, head_dim=32, tokens=6):
    rand = lambda heads: torch.randn(tokens, heads, head_dim, device=device)
    return rand(q_heads), rand(kv_heads), rand(kv_heads), torch.tensor([0, tokens], dtype=torch.int32, device=device)


def test_rejects_heads_that_do_not_divide(device):
    q, k, v, cu = _qkv(device, q_heads=6, kv_heads=4)
    with pytest.raises(ValueError, match="not a multiple"):
        prefill_attention(q, k, v, cu, 6)


def test_rejects_unsupported_head_dim(device):
    q, k, v, cu = _qkv(device, head_dim=72)
    with pytest.raises(ValueError, match="head_dim 72"):
        prefill_attention(q, k, v, cu, 6)


def test_rejects_mixed_dtypes_and_device_max_seqlen(device):
    q, k, v, cu = _qkv(device)
    with pytest.raises(TypeError, match="share a dtype"):
        prefill_attention(q.half(), k, v, cu, 6)
    with pytest.raises(TypeError, match="host int"):
        prefill_attention(q, k, v, cu, torch.tensor(6))


@pytest.mark.parametrize("scale", [0.0, -0.5, float("nan"), float("inf")])
def test_rejects_a_scale_that_is_not_positive(device, scale):
    q, k, v, cu = _qkv(device)
    with pytest.raises(ValueError, match="scale must be a positive"):
        prefill_attention(q, k, v, cu, 6, scale=scale)


def test_rejects_partial_cache_arguments(device):
    q, k, v, cu = _qkv(device)
    with pytest.raises(ValueError, match="all of k_cache"):
        prefill_attention(q, k, v, cu, 6, k_cache=torch.randn(2, 16, 2, 32, device=device))


def test_debug_checks_catch_block_ids_and_prefixes_beyond_the_table(device, monkeypatch):
    q, k, v, cu = _qkv(device)
    k_cache, v_cache = torch.randn(2, 3, 16, 2, 32, device=device)
    monkeypatch.setattr(_paged_checks, "DEBUG_CHECKS", True)
    too_long = torch.tensor([33], dtype=torch.int32, device=device)  # table holds 2 blocks of 16
    with pytest.raises(ValueError, match="capacity"):
        prefill_attention(q, k, v, cu, 6, k_cache=k_cache, v_cache=v_cache,
                          block_tables=torch.tensor([[0, 1]], dtype=torch.int32, device=device), prefix_lens=too_long)
    with pytest.raises(ValueError, match="block ids"):
        prefill_attention(q, k, v, cu, 6, k_cache=k_cache, v_cache=v_cache,
                          block_tables=torch.tensor([[0, 7]], dtype=torch.int32, device=device),
                          prefix_lens=torch.tensor([20], dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match="max_seqlen"):
        prefill_attention(q, k, v, cu, 4)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [True, False])
def test_long_bf16_sequences_match_sdpa(device, causal):
    gen = torch.Generator(device=device).manual_seed(0)
    case = _case([4096, 4096], q_heads=32, kv_heads=8, head_dim=128, dtype=torch.bfloat16, causal=causal)
    inputs = _prefill_cases.make_inputs(case, device, gen)
    out = prefill_attention(**inputs)
    up = {n: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for n, t in inputs.items()}
    assert_close(out, prefill_sdpa_baseline(**up), dtype=torch.bfloat16, reduction_len=4096)


@pytest.mark.gpu
def test_long_prefix_chunk_bf16(device):
    case = _case([512, 300], prefixes=[4096, 1000], q_heads=32, kv_heads=8, head_dim=128, dtype=torch.bfloat16,
                 block_size=128)
    run_case(OP, case, device, seed=1)


def test_every_shipped_tile_keeps_the_causal_split_valid():
    from kernels.prefill_attention import TILES

    for vendor, by_size in TILES.items():
        for size, by_dim in by_size.items():
            for d, tile in by_dim.items():
                assert tile["BLOCK_M"] % tile["BLOCK_N"] == 0, (vendor, size, d, tile)


def test_rejects_a_tile_that_breaks_the_causal_split(device):
    q, k, v, cu = _qkv(device)
    with pytest.raises(ValueError, match="multiple of BLOCK_N"):
        prefill_attention(q, k, v, cu, 6, _tile=dict(BLOCK_M=16, BLOCK_N=32))


def _shipped_tiles():
    from kernels.prefill_attention import TILES

    shapes = {(t["BLOCK_M"], t["BLOCK_N"]) for by_dim in TILES["cuda"].values() for t in by_dim.values()}
    return sorted(shapes)


@pytest.mark.parametrize("block_m,block_n", _shipped_tiles())
def test_gpu_tile_shapes_through_the_same_checks(device, block_m, block_n):
    """The GPU's tiles (several diagonal tiles per query tile, pages smaller than a tile) on any device."""
    case = _case([130, 1, 64, 200], prefixes=[70, 0, 128, 3], causal=block_m != 64 or block_n != 32)
    inputs = _prefill_cases.make_inputs(case, device, torch.Generator(device=device).manual_seed(7))
    out = prefill_attention(**inputs, _tile=dict(BLOCK_M=block_m, BLOCK_N=block_n))
    ref = prefill_attention_reference(**{n: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point()
                                         else t for n, t in inputs.items()})
    assert_close(out, ref, dtype=torch.float32, reduction_len=400, tf32=True)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block_m,block_n", [(16, 16), (32, 16)])
def test_one_loop_variant_matches_the_reference(device, causal, block_m, block_n):
    """ONE_LOOP masks the diagonal tiles by a run-time branch inside a single key loop; same answers."""
    case = _case([40, 1, 16, 33], prefixes=[20, 0, 17, 3], causal=causal)
    inputs = _prefill_cases.make_inputs(case, device, torch.Generator(device=device).manual_seed(11))
    out = prefill_attention(**inputs, _tile=dict(BLOCK_M=block_m, BLOCK_N=block_n, ONE_LOOP=True))
    ref = prefill_attention_reference(**{n: t.double() if isinstance(t, torch.Tensor) and t.is_floating_point()
                                         else t for n, t in inputs.items()})
    assert_close(out, ref, dtype=torch.float32, reduction_len=80, tf32=True)


def _upcast(inputs, dtype):
    return {n: t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for n, t in inputs.items()}


def _require_tma(device):
    if not tma.tma_loads(torch.device(device)):
        pytest.skip("this device (or this Triton's interpreter) cannot load through tensor descriptors")


def _run_tma(device, case, tile, seed):
    """The TMA variant of ``tile`` against the reference, with poisoned outputs; fails if TMA would not run."""
    _require_tma(device)
    inputs = _prefill_cases.make_inputs(case, device, torch.Generator(device=device).manual_seed(seed))
    assert _tma_descriptors(inputs["q"], inputs["k"], inputs["v"], tile) is not None, "TMA would fall back"
    with alloc.poisoned():
        out = prefill_attention(**inputs, _tile=dict(tile, TMA=True))
    ref = prefill_attention_reference(**_upcast(inputs, torch.float64 if device.type == "cpu" else torch.float32))
    assert_close(out, ref, dtype=case["dtype"], reduction_len=OP.reduction_len(case), tf32=True)


@pytest.mark.parametrize("one_loop", [True, False])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("block_m,block_n", [(16, 16), (32, 16)])
def test_tma_variant_matches_the_reference(device, causal, one_loop, block_m, block_n):
    """Descriptor loads read past a sequence's end into its neighbour (or zeros past the tensor): the key
    masks and the masked store must keep that out. Lengths 1, tile - 1, tile, tile + 1 for both tiles."""
    case = _case([1, 15, 16, 17, 31, 32, 33], dtype=torch.float16, causal=causal)
    _run_tma(device, case, dict(BLOCK_M=block_m, BLOCK_N=block_n, ONE_LOOP=one_loop), seed=12)


@pytest.mark.parametrize("tma", [False, True])
@pytest.mark.parametrize("one_loop", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_a_neighbours_overflowed_values_stay_out(device, causal, one_loop, tma):
    """One request's overflowed values must not reach another's output in the same packed batch. Rows past a
    sequence's end are weighed by exactly 0, and 0 x Inf is NaN: the pointer tiles read them as zeros, and the
    descriptor loops stop at the last whole tile, leaving the ragged one to pointers."""
    if tma:
        _require_tma(device)
    gen = torch.Generator(device=device).manual_seed(21)
    q, k, v = (torch.randn(60, 2, 64, generator=gen, device=device).half() for _ in range(3))
    k[20:], v[20:] = float("nan"), float("inf")  # the second sequence's; the first ends mid-tile
    cu = torch.tensor([0, 20, 60], dtype=torch.int32, device=device)
    tile = dict(BLOCK_M=32, BLOCK_N=16, ONE_LOOP=one_loop, TMA=tma)
    if tma:
        assert _tma_descriptors(q, k, v, tile) is not None, "TMA would fall back"
    with alloc.poisoned():
        out = prefill_attention(q, k, v, cu, 40, causal=causal, _tile=tile)
    ref = prefill_attention_reference(q[:20].double(), k[:20].double(), v[:20].double(), cu[:2], 20, causal=causal)
    assert_close(out[:20], ref, dtype=torch.float16, reduction_len=20)


@pytest.mark.parametrize("ratio", [1, 3, 8])
def test_tma_gqa_ratios(device, ratio):
    case = _case([9, 20], q_heads=2 * ratio, kv_heads=2, dtype=torch.bfloat16)
    _run_tma(device, case, dict(BLOCK_M=16, BLOCK_N=16, ONE_LOOP=True), seed=ratio)


@pytest.mark.parametrize("one_loop", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_tma_after_a_cached_prefix(device, causal, one_loop):
    """The prefix keeps its paged pointer loads; the chunk's Q, K and V come through descriptors."""
    case = _case([40, 1, 16, 33], prefixes=[20, 0, 17, 3], dtype=torch.float16, causal=causal)
    _run_tma(device, case, dict(BLOCK_M=32, BLOCK_N=16, ONE_LOOP=one_loop), seed=13)


def test_tma_falls_back_to_pointers_where_descriptors_cannot_read(device):
    """A tile that asks for TMA still launches, through pointers, where a descriptor cannot read the tensors."""
    torch.manual_seed(3)
    T, H, D, tile = 20, 2, 32, dict(BLOCK_M=16, BLOCK_N=16)
    rand = lambda *shape: torch.randn(*shape, device=device, dtype=torch.float16)
    q, k, v = rand(T, 2 * H, D), rand(T, H, D), rand(T, H, D)
    cu = torch.tensor([0, 7, T], dtype=torch.int32, device=device)
    shifted = rand(T * 2 * H * D + 1)[1:].view(T, 2 * H, D)  # base 2 bytes past a 16-byte boundary
    shifted.copy_(q)
    cannot = {
        "float32": (q.float(), k.float(), v.float()),
        "head_dim 80 (padded)": (rand(T, 2 * H, 80), rand(T, H, 80), rand(T, H, 80)),
        "unaligned base": (shifted, k, v),
        "row stride of 129 elements": (rand(T, 2 * H * D + 1)[:, : 2 * H * D].view(T, 2 * H, D), k, v),
        "heads not packed": (q, rand(T, 2 * H, D)[:, ::2], v),
    }
    for why, tensors in cannot.items():
        assert _tma_descriptors(*tensors, tile) is None, why
    with alloc.poisoned():
        out = prefill_attention(shifted, k, v, cu, 13, _tile=dict(tile, TMA=True))
    ref = prefill_attention_reference(q.double(), k.double(), v.double(), cu, 13)
    assert_close(out, ref, dtype=torch.float16, reduction_len=13, tf32=True)


def test_the_environment_turns_tma_off(device, monkeypatch):
    """``TRITONFORGE_TMA=0`` sends a tile that asks for TMA through pointers (no descriptors), same results."""
    _require_tma(device)
    inputs = _prefill_cases.make_inputs(_case([5, 17], dtype=torch.float16), device,
                                        torch.Generator(device=device).manual_seed(4))
    tile = dict(BLOCK_M=16, BLOCK_N=16, ONE_LOOP=True)
    monkeypatch.setenv("TRITONFORGE_TMA", "0")
    assert _tma_descriptors(inputs["q"], inputs["k"], inputs["v"], tile) is None
    with alloc.poisoned():
        out = prefill_attention(**inputs, _tile=dict(tile, TMA=True))
    ref = prefill_attention_reference(**_upcast(inputs, torch.float64 if device.type == "cpu" else torch.float32))
    assert_close(out, ref, dtype=torch.float16, reduction_len=OP.reduction_len(_case([5, 17])), tf32=True)
    monkeypatch.delenv("TRITONFORGE_TMA")
    assert _tma_descriptors(inputs["q"], inputs["k"], inputs["v"], tile) is not None


@pytest.mark.gpu
@pytest.mark.parametrize("tile", [dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3, ONE_LOOP=True),
                                  dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3),
                                  dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3)])
@pytest.mark.parametrize("causal", [True, False])
def test_tma_bf16_sequences_off_the_tile_edges(device, causal, tile):
    """The GPU's TMA path (sm_90+) at model shapes: 1000 and 1040 tokens, neither a multiple of a tile."""
    case = _case([1000, 1040], q_heads=32, kv_heads=8, head_dim=128, dtype=torch.bfloat16, causal=causal)
    _run_tma(device, case, tile, seed=0)


@pytest.mark.gpu
def test_tma_bf16_chunk_after_a_long_prefix(device):
    case = _case([512, 300], prefixes=[4096, 1000], q_heads=32, kv_heads=8, head_dim=128, dtype=torch.bfloat16,
                 block_size=128)
    _run_tma(device, case, dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3, ONE_LOOP=True), seed=1)
