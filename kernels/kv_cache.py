"""The paged KV cache layout, and the kernel that writes new tokens' keys and values into it.

Layout. The K and V caches are two tensors of one shape and layout::

    k_cache, v_cache : [num_blocks, block_size, num_kv_heads, head_dim]   (unit stride on head_dim)

``block_size`` is a power of two in 16..256. A physical block holds ``block_size`` consecutive tokens of
one sequence, all KV heads. A sequence owns a list of blocks, in order, recorded in its row of the block
table::

    block_tables : [batch, max_blocks] int32        token p of sequence b lives in block
                                                    block_tables[b, p // block_size] at offset p % block_size

Entries past a sequence's last used block are never read (they may hold anything, e.g. -1). Writes are
addressed by a flat slot per new token::

    slot_mapping : [tokens] int32 or int64          slot = block * block_size + offset;  -1 = skip (padding)

so that the token at slot s is ``k_cache.view(-1, num_kv_heads, head_dim)[s]`` when the cache is
contiguous (the kernel uses the real strides, so a strided cache works too).

Kernel ``kv_cache_write``: ``k_cache[slot // bs, slot % bs] = key[t]`` (and V) for every t with
slot >= 0. One program per (a few tokens, tile of heads): it reads its tokens' [heads, head_dim] tiles
of key and value at once and writes each once, so it moves the minimum of bytes, in 16-byte accesses. Slots must
be distinct (two tokens written to one slot leave either value there).
"""

from __future__ import annotations

import torch

from kernels import _paged_checks as checks
from kernels import pdl
from kernels._triton import tl, triton
from kernels.registry import Op, register


@triton.jit(do_not_specialize=["num_tokens"])  # per-step values: compiled once
def _kv_cache_write_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_cb, stride_co, stride_ch,
    num_tokens, num_kv_heads, head_dim,
    BLOCK_SIZE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    PDL: tl.constexpr = 0,
):
    pdl.wait(PDL)  # the keys, values and slots come from earlier kernels (kernels/pdl.py)
    # One [BLOCK_T, BLOCK_H, BLOCK_D] tile: every load of the program is issued before its first store.
    # (Token by token, the compiler may not hoist token i+1's loads above token i's stores, which could
    # alias them: each token then costs a memory round trip of its own.)
    tokens = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    dims = tl.arange(0, BLOCK_D)
    t3 = tokens[:, None, None]
    hd = heads[:, None] * stride_kh + dims[None, :]  # [BH, BD]
    in_tile = (heads[:, None] < num_kv_heads) & (dims[None, :] < head_dim)
    # The loads wait for nothing: they are masked by the token range only, not by the slot, so the slot's
    # round trip to memory overlaps theirs instead of preceding them. Padding tokens (slot -1) are read
    # and not stored.
    live = (t3 < num_tokens) & in_tile[None, :, :]
    k = tl.load(key_ptr + t3 * stride_kt + hd[None, :, :], mask=live)
    v = tl.load(value_ptr + t3 * stride_vt + (heads[:, None] * stride_vh + dims[None, :])[None, :, :], mask=live)
    slot = tl.load(slot_ptr + tokens, mask=tokens < num_tokens, other=-1).to(tl.int64)
    mask = live & (slot >= 0)[:, None, None]
    row = (slot // BLOCK_SIZE) * stride_cb + (slot % BLOCK_SIZE) * stride_co  # [BT]
    dst = row[:, None, None] + (heads[:, None] * stride_ch + dims[None, :])[None, :, :]
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)
    # Late, not at the start: signalled at the start, a back-to-back chain of writes ran at 68-69% of copy
    # bandwidth or at 82-85% depending on the tile, against a steady 78-79% without PDL (H200, run 10):
    # the next launch's programs, resident early, crowd this one's.
    pdl.launch_dependents(PDL)


def pick_tile(num_kv_heads: int, head_dim: int) -> tuple[int, int, int, int]:
    """(BLOCK_T, BLOCK_H, BLOCK_D, num_warps): 4096 elements per program (8 KiB of keys and 8 of values in
    16-bit dtypes, all loaded before the first store), 8 per thread per access (16-byte accesses)."""
    block_d = triton.next_power_of_2(head_dim)
    block_h = min(triton.next_power_of_2(num_kv_heads), max(1, 4096 // block_d))
    block_t = max(1, 4096 // (block_h * block_d))
    warps = max(1, min(4, block_t * block_h * block_d // 256))
    return block_t, block_h, block_d, warps


def _check(key, value, k_cache, v_cache, slot_mapping) -> None:
    op = "kv_cache_write"
    num_blocks, block_size, kv_heads, d = checks.paged_cache(op, k_cache, v_cache)
    checks.float_tensor(op, "key", key, 3)
    checks.float_tensor(op, "value", value, 3)
    checks.index_tensor(op, "slot_mapping", slot_mapping, 1)
    checks.same_device(op, "k_cache", k_cache, key=key, value=value, slot_mapping=slot_mapping)
    if key.shape != value.shape:
        raise ValueError(f"{op}: key {tuple(key.shape)} and value {tuple(value.shape)} must have one shape")
    if tuple(key.shape[1:]) != (kv_heads, d):
        raise ValueError(
            f"{op}: key/value are [tokens, {key.shape[1]}, {key.shape[2]}] but the cache holds "
            f"{kv_heads} KV heads of head_dim {d}; they must match"
        )
    if key.dtype != k_cache.dtype or value.dtype != k_cache.dtype:
        raise TypeError(f"{op}: key/value ({key.dtype}, {value.dtype}) must have the cache's dtype {k_cache.dtype}")
    if slot_mapping.shape[0] != key.shape[0]:
        raise ValueError(f"{op}: slot_mapping has {slot_mapping.shape[0]} entries for {key.shape[0]} tokens")
    if checks.debug_checks() and slot_mapping.numel():
        lo, hi = int(slot_mapping.min()), int(slot_mapping.max())
        if lo < -1 or hi >= num_blocks * block_size:
            raise ValueError(
                f"{op}: slot_mapping holds {lo if lo < -1 else hi}, outside [-1, {num_blocks * block_size}) "
                f"for a cache of {num_blocks} blocks of {block_size}"
            )


def kv_cache_write(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor, *, _tile: dict | None = None) -> None:
    """Scatter ``key``/``value`` [tokens, kv_heads, head_dim] into the paged caches at ``slot_mapping``.

    ``_tile`` (benchmarks only): ``BLOCK_T`` and ``num_warps`` instead of :func:`pick_tile`'s.
    """
    _check(key, value, k_cache, v_cache, slot_mapping)
    tokens, kv_heads, d = key.shape
    if tokens == 0:
        return
    block_t, block_h, block_d, warps = pick_tile(kv_heads, d)
    if _tile:
        block_t, warps = _tile.get("BLOCK_T", block_t), _tile.get("num_warps", warps)
    grid = (triton.cdiv(tokens, block_t), triton.cdiv(kv_heads, block_h))
    _kv_cache_write_kernel[grid](
        key, value, k_cache, v_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        tokens, kv_heads, d,
        BLOCK_SIZE=k_cache.shape[1], BLOCK_T=block_t, BLOCK_H=block_h, BLOCK_D=block_d, num_warps=warps,
        **pdl.launch_options(key.device, "kv_cache_write"),
    )


def kv_cache_write_reference(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
                             v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Pure torch, same signature: index-put into the caches seen as [num_blocks * block_size, heads, D]."""
    block_size = k_cache.shape[1]
    slots = slot_mapping.long()
    keep = slots >= 0
    blocks, offsets = slots[keep] // block_size, slots[keep] % block_size
    k_cache[blocks, offsets] = key[keep].to(k_cache.dtype)
    v_cache[blocks, offsets] = value[keep].to(v_cache.dtype)


def kv_cache_write_baseline(key, value, k_cache, v_cache, slot_mapping) -> None:
    """torch's own scatter (index_copy_ on the flat cache), as a torch engine would write; no padding slots.

    It has no way to skip slot -1 without a sync (a boolean mask), so it is only the benchmark's
    baseline, whose cases carry no padding, and it needs contiguous caches.
    """
    heads, d = k_cache.shape[2], k_cache.shape[3]
    slots = slot_mapping.long()
    k_cache.view(-1, heads, d).index_copy_(0, slots, key)
    v_cache.view(-1, heads, d).index_copy_(0, slots, value)


# --- registration -------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        tokens, heads, dims, blocks = st.sampled_from([1, 5, 17]), st.sampled_from([1, 2, 3]), \
            st.sampled_from([16, 64, 80]), st.sampled_from([16, 32])
    else:
        tokens, heads, dims, blocks = st.sampled_from([1, 7, 300, 4096]), st.sampled_from([1, 2, 8, 32]), \
            st.sampled_from([64, 80, 128, 256]), st.sampled_from([16, 64, 128, 256])
    return st.fixed_dictionaries({
        "tokens": tokens, "kv_heads": heads, "head_dim": dims, "block_size": blocks,
        "dtype": st.sampled_from(DTYPES), "pad_every": st.sampled_from([0, 3]),
        "index_dtype": st.sampled_from([torch.int32, torch.int64]),
    })


def _make_inputs(case, device, gen):
    T, H, D, bs, dt = case["tokens"], case["kv_heads"], case["head_dim"], case["block_size"], case["dtype"]
    num_blocks = triton.cdiv(T, bs) + 3  # spare blocks: some slots stay untouched and must keep their values
    k_cache = torch.randn(num_blocks, bs, H, D, generator=gen, device=device).to(dt)
    v_cache = torch.randn(num_blocks, bs, H, D, generator=gen, device=device).to(dt)
    slots = torch.randperm(num_blocks * bs, generator=gen, device=device)[:T]
    if case.get("pad_every"):
        slots[:: case["pad_every"]] = -1
    return {
        "key": torch.randn(T, H, D, generator=gen, device=device).to(dt),
        "value": torch.randn(T, H, D, generator=gen, device=device).to(dt),
        "k_cache": k_cache, "v_cache": v_cache,
        "slot_mapping": slots.to(case.get("index_dtype", torch.int64)),
    }


def _bench_cases():
    return [
        {"tokens": t, "kv_heads": h, "head_dim": 128, "block_size": bs, "dtype": torch.bfloat16,
         "pad_every": 0, "index_dtype": torch.int64}
        for (h, bs) in ((8, 16), (8, 128), (2, 16))
        for t in (1, 64, 1024, 4096, 16384, 65536)
    ]


def _bytes(case):
    n = case["tokens"] * case["kv_heads"] * case["head_dim"]
    return 2 * 2 * n * case["dtype"].itemsize + case["tokens"] * case.get("index_dtype", torch.int64).itemsize


register(Op(
    name="kv_cache_write",
    triton=kv_cache_write,
    torch=kv_cache_write_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [
        {"tokens": 5, "kv_heads": 2, "head_dim": 64, "block_size": 16, "dtype": dt, "pad_every": 2,
         "index_dtype": torch.int32} for dt in DTYPES
    ],
    flops=lambda c: 0.0,
    bytes=_bytes,
    baseline=kv_cache_write_baseline,
    baseline_name="torch index_copy_",
    mutates=("k_cache", "v_cache"),
))
