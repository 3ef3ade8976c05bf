"""kv_cache_write beyond the generic property test: skipped slots, strided inputs, round trips, errors."""

from __future__ import annotations

import pytest
import torch

from kernels import _paged_checks
from kernels._attention_ref import gather_paged
from kernels.kv_cache import kv_cache_write, kv_cache_write_baseline, kv_cache_write_reference

pytestmark = pytest.mark.kv_cache_write


def _caches(num_blocks, block_size, heads, dim, device, dtype=torch.float32, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    shape = (num_blocks, block_size, heads, dim)
    return (torch.randn(*shape, generator=gen, device=device).to(dtype),
            torch.randn(*shape, generator=gen, device=device).to(dtype))


def test_padding_slots_leave_the_cache_untouched(device):
    k_cache, v_cache = _caches(3, 16, 2, 32, device)
    before_k, before_v = k_cache.clone(), v_cache.clone()
    key, value = torch.randn(4, 2, 32, device=device), torch.randn(4, 2, 32, device=device)
    kv_cache_write(key, value, k_cache, v_cache, torch.full((4,), -1, dtype=torch.int64, device=device))
    assert torch.equal(k_cache, before_k) and torch.equal(v_cache, before_v)


def test_write_then_gather_through_a_shuffled_block_table(device):
    block_size, heads, dim, n = 16, 3, 64, 37
    k_cache, v_cache = _caches(6, block_size, heads, dim, device)
    table = torch.tensor([4, 1, 5], dtype=torch.int32, device=device)  # this sequence's blocks, out of order
    pos = torch.arange(n, device=device)
    slots = (table.long()[pos // block_size] * block_size + pos % block_size).to(torch.int32)
    key, value = torch.randn(n, heads, dim, device=device), torch.randn(n, heads, dim, device=device)
    kv_cache_write(key, value, k_cache, v_cache, slots)
    assert torch.equal(gather_paged(k_cache, table, n), key)
    assert torch.equal(gather_paged(v_cache, table, n), value)


def test_strided_key_value_views_of_a_fused_projection(device):
    tokens, heads, dim = 9, 2, 16
    qkv = torch.randn(tokens, (4 + 2 * heads) * dim, device=device)  # [q | k | v] along the last axis
    key = qkv[:, 4 * dim:(4 + heads) * dim].view(tokens, heads, dim)
    value = qkv[:, (4 + heads) * dim:].view(tokens, heads, dim)
    k_cache, v_cache = _caches(2, 16, heads, dim, device)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    slots = torch.randperm(32, device=device)[:tokens]
    kv_cache_write(key, value, k_cache, v_cache, slots)
    kv_cache_write_reference(key, value, k_ref, v_ref, slots)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)


@pytest.mark.parametrize("block_t,warps", [(1, 1), (4, 2), (32, 4)])
def test_every_tokens_per_program_tile_writes_the_same_cache(device, block_t, warps):
    """The benchmarks' tile override: a partial last program, padding slots, a strided key."""
    tokens, heads, dim = 37, 3, 80
    qkv = torch.randn(tokens, 3 * heads * dim, device=device)
    key, value = qkv[:, :heads * dim].view(tokens, heads, dim), torch.randn(tokens, heads, dim, device=device)
    k_cache, v_cache = _caches(4, 16, heads, dim, device)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    slots = torch.randperm(64, device=device)[:tokens]
    slots[::5] = -1
    kv_cache_write(key, value, k_cache, v_cache, slots, _tile=dict(BLOCK_T=block_t, num_warps=warps))
    kv_cache_write_reference(key, value, k_ref, v_ref, slots)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)


def test_rejects_mismatched_heads(device):
    k_cache, v_cache = _caches(2, 16, 2, 32, device)
    key = torch.randn(3, 4, 32, device=device)
    with pytest.raises(ValueError, match="KV heads"):
        kv_cache_write(key, key, k_cache, v_cache, torch.zeros(3, dtype=torch.int64, device=device))


def test_rejects_dtype_mismatch(device):
    k_cache, v_cache = _caches(2, 16, 2, 32, device, torch.float16)
    key = torch.randn(3, 2, 32, device=device)
    with pytest.raises(TypeError, match="cache's dtype"):
        kv_cache_write(key, key, k_cache, v_cache, torch.arange(3, device=device))


def test_rejects_float_slots_and_bad_block_size(device):
    k_cache, v_cache = _caches(2, 16, 2, 32, device)
    key = torch.randn(3, 2, 32, device=device)
    with pytest.raises(TypeError, match="slot_mapping"):
        kv_cache_write(key, key, k_cache, v_cache, torch.arange(3, device=device).float())
    odd_k, odd_v = _caches(2, 24, 2, 32, device)
    with pytest.raises(ValueError, match="power of two"):
        kv_cache_write(key, key, odd_k, odd_v, torch.arange(3, device=device))


def test_debug_checks_catch_slots_beyond_the_cache(device, monkeypatch):
    k_cache, v_cache = _caches(2, 16, 2, 32, device)
    key = torch.randn(2, 2, 32, device=device)
    slots = torch.tensor([3, 32], device=device)  # 32 == 2 blocks * 16: one past the end
    monkeypatch.setattr(_paged_checks, "DEBUG_CHECKS", True)
    with pytest.raises(ValueError, match="outside"):
        kv_cache_write(key, key, k_cache, v_cache, slots)


@pytest.mark.gpu
def test_large_bf16_write_is_exact(device):
    tokens, heads, dim, block_size = 8192, 8, 128, 16
    k_cache, v_cache = _caches(tokens // block_size + 8, block_size, heads, dim, device, torch.bfloat16)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    key = torch.randn(tokens, heads, dim, device=device).bfloat16()
    value = torch.randn(tokens, heads, dim, device=device).bfloat16()
    slots = torch.randperm(k_cache.shape[0] * block_size, device=device)[:tokens]
    slots[::7] = -1
    kv_cache_write(key, value, k_cache, v_cache, slots)
    kv_cache_write_reference(key, value, k_ref, v_ref, slots)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)


@pytest.mark.gpu
def test_chained_writes_in_a_pdl_graph_wait_for_the_kernel_that_made_their_keys():
    """Each write follows the kernel that computes its keys and values (silu_and_mul, which lets the next
    kernel be scheduled at its start), all launched with PDL in one CUDA graph. Every replay gets new
    inputs: a write that read before that kernel ended would store the previous replay's values."""
    from kernels import pdl
    from kernels.silu_and_mul import silu_and_mul

    assert pdl.enabled(torch.device("cuda")), "this card or Triton has no programmatic dependent launch"
    steps, tokens, heads, dim, bs = 6, 4096, 2, 128, 16
    k_cache, v_cache = _caches(steps * tokens // bs, bs, heads, dim, "cuda", torch.bfloat16)
    inputs = torch.empty(steps, 2, tokens, 2 * heads * dim, device="cuda", dtype=torch.bfloat16)
    slots = torch.randperm(steps * tokens, device="cuda").view(steps, tokens)

    def chain(write, k, v):
        for s in range(steps):
            key, value = (silu_and_mul(inputs[s, i]).view(tokens, heads, dim) for i in range(2))
            write(key, value, k, v, slots[s])

    inputs.normal_()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        chain(kv_cache_write, k_cache, v_cache)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        chain(kv_cache_write, k_cache, v_cache)
    flat = lambda c: c.view(-1, heads, dim)[slots.flatten()]
    for _ in range(3):
        inputs.normal_()
        k_ref, v_ref = k_cache.clone(), v_cache.clone()
        chain(kv_cache_write_reference, k_ref, v_ref)  # eager, one kernel at a time
        k_cache.fill_(float("nan"))
        v_cache.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(flat(k_cache), flat(k_ref)) and torch.equal(flat(v_cache), flat(v_ref))


def test_index_copy_baseline_agrees_without_padding(device):
    k_cache, v_cache = _caches(3, 16, 2, 32, device)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    key, value = torch.randn(20, 2, 32, device=device), torch.randn(20, 2, 32, device=device)
    slots = torch.randperm(48, device=device)[:20]
    kv_cache_write_baseline(key, value, k_cache, v_cache, slots)
    kv_cache_write_reference(key, value, k_ref, v_ref, slots)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref)


def test_rejects_tensors_on_different_devices(device):
    k_cache, v_cache = _caches(2, 16, 2, 32, device)
    key = torch.randn(3, 2, 32, device=device)
    elsewhere = torch.empty(3, 2, 32, device="meta")  # a second device that exists on any machine
    with pytest.raises(ValueError, match="is on meta"):
        kv_cache_write(key, elsewhere, k_cache, v_cache, torch.arange(3, device=device))
