"""RoPE and the KV-cache write in one launch: the two per-layer steps between the qkv projection and attention.

Math: exactly ``rope`` (kernels/rope.py) followed by ``kv_cache_write`` (kernels/kv_cache.py):

    q, k  <- rotate(q, positions), rotate(k, positions)            (in place, half-rotation style)
    k_cache[slot // bs, slot % bs] = k[t],  v_cache[...] = v[t]      for every token t with slot >= 0

so the results are bit-identical to the two ops run in turn (same float32 rotation, same rounding to the
storage dtype). Layouts are those two ops' own: q [T, Hq, D], k and v [T, Hkv, D] (views into the fused qkv
projection output are fine), positions [T], the float32 cos/sin table [max_position, D], the paged caches
[num_blocks, block_size, Hkv, D] and slot_mapping [T] (-1 skips a token).

Why fuse: in a decode step each of these is a tiny kernel (a few KB moved) whose cost is its launch and
latency, paid once per layer. One launch per layer instead of two; the rotated keys also go to the cache
straight from registers instead of being read back.

Kernel: one program per (token, block of heads) over q's heads then k's, as in ``rope``. A q program
rotates its heads in place. A k program rotates its heads in place, writes them to the cache slot, and
copies the same heads of v there. The head tile comes from ``rope``'s config.

The engine calls this op when neither ``rope`` nor ``kv_cache_write`` is swapped for another
implementation (engine/ops.py: a swapped part turns the fusion off, so the researcher's kernel runs).
"""

from __future__ import annotations

import torch

from kernels import kv_cache, pdl, rope
from kernels._triton import tl, triton
from kernels.device import check_backend
from kernels.registry import Op, register


@triton.jit
def _rotate_write_heads(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, token, slot, head0, n_heads,
                        stride_kt, stride_kh, stride_vt, stride_vh, stride_cb, stride_co, stride_ch,
                        cos, sin, half, BLOCK_SIZE: tl.constexpr, HEADS: tl.constexpr, HALF: tl.constexpr):
    """Rotate a tile of k's heads in place (as ``rope`` does), then write it and v's same heads to the slot."""
    p1, mask = rope._heads_tile(k_ptr, token, head0, n_heads, stride_kt, stride_kh, half, HEADS, HALF)
    r1, r2 = rope._rotate_in_place(p1, mask, cos, sin, half)
    h = head0 + tl.arange(0, HEADS)[:, None]
    i = tl.arange(0, HALF)[None, :]
    # The slot test as a full-tile comparison: a scalar boolean operand of `&` breaks the interpreter's
    # masked store (as in kv_cache_write).
    write = mask & ((h * 0 + slot) >= 0)
    dst = (slot // BLOCK_SIZE) * stride_cb + (slot % BLOCK_SIZE) * stride_co + h * stride_ch + i
    tl.store(k_cache_ptr + dst, r1.to(k_cache_ptr.dtype.element_ty), mask=write)
    tl.store(k_cache_ptr + dst + half, r2.to(k_cache_ptr.dtype.element_ty), mask=write)
    pv = v_ptr + token * stride_vt + h * stride_vh + i
    v1 = tl.load(pv, mask=write, other=0.0)
    v2 = tl.load(pv + half, mask=write, other=0.0)
    tl.store(v_cache_ptr + dst, v1.to(v_cache_ptr.dtype.element_ty), mask=write)
    tl.store(v_cache_ptr + dst + half, v2.to(v_cache_ptr.dtype.element_ty), mask=write)


@triton.jit
def _rope_kv_write_kernel(
    q_ptr, k_ptr, v_ptr, pos_ptr, cache_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    n_q_heads, n_k_heads, half, max_position,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_cache,
    stride_cb, stride_co, stride_ch,
    BLOCK_SIZE: tl.constexpr, HEADS: tl.constexpr, HALF: tl.constexpr, PDL: tl.constexpr,
):
    pdl.start(PDL)
    pdl.enter(PDL)  # everything here reads what earlier kernels wrote (kernels/pdl.py)
    token = tl.program_id(0).to(tl.int64)
    head_block = tl.program_id(1)
    q_blocks = tl.cdiv(n_q_heads, HEADS)
    cos, sin = rope._token_cos_sin(pos_ptr, cache_ptr, token, max_position, stride_cache, half, HALF)
    if head_block < q_blocks:
        rope._rotate_heads(q_ptr, token, head_block * HEADS, n_q_heads, stride_qt, stride_qh, cos, sin, half,
                           HEADS, HALF)
    else:
        slot = tl.load(slot_ptr + token).to(tl.int64)
        _rotate_write_heads(k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, token, slot, (head_block - q_blocks) * HEADS,
                            n_k_heads, stride_kt, stride_kh, stride_vt, stride_vh, stride_cb, stride_co, stride_ch,
                            cos, sin, half, BLOCK_SIZE, HEADS, HALF)


def _check(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping):
    rope._check(q, k, positions, cos_sin_cache)
    kv_cache._check(k, v, k_cache, v_cache, slot_mapping)
    if v.stride(-1) != 1:
        raise ValueError("rope_kv_write: v needs a unit stride on head_dim (a view of a fused qkv row is fine)")


def rope_kv_write(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor,
                  cos_sin_cache: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                  slot_mapping: torch.Tensor) -> None:
    """Rotate q and k in place by ``positions``, then write k and v into the paged caches at ``slot_mapping``."""
    _check(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping)
    if positions.device.type == "cpu" and positions.numel():  # free here (no device sync)
        rope._check_positions(positions, cos_sin_cache.shape[0])
    check_backend("triton", q.device)
    T, n_q, D = q.shape
    n_k = k.shape[1]
    if T == 0:
        return
    cache = cos_sin_cache if cos_sin_cache.stride(1) == 1 else cos_sin_cache.contiguous()
    half = D // 2
    half_block = triton.next_power_of_2(half)
    heads, num_warps = rope._pick(n_q, n_k, half_block)
    grid = (T, triton.cdiv(n_q, heads) + triton.cdiv(n_k, heads))
    _rope_kv_write_kernel[grid](
        q, k, v, positions, cache, k_cache, v_cache, slot_mapping,
        n_q, n_k, half, cache.shape[0],
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), cache.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        BLOCK_SIZE=k_cache.shape[1], HEADS=heads, HALF=half_block, num_warps=num_warps,
        **pdl.launch_options(q.device, "rope_kv_write"),
    )


def rope_kv_write_reference(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping) -> None:
    """Pure torch, same signature: the two references in turn (float64 accepted, as theirs)."""
    rope._check(q, k, positions, cos_sin_cache, cache_dtypes=(torch.float32, torch.float64))
    rope.rotary_embedding_reference(q, k, positions, cos_sin_cache)
    kv_cache.kv_cache_write_reference(k, v, k_cache, v_cache, slot_mapping)


def rope_then_kv_write(q, k, v, positions, cos_sin_cache, k_cache, v_cache, slot_mapping) -> None:
    """The baseline: the two Triton kernels, two launches (what the engine runs without the fusion)."""
    rope.rotary_embedding(q, k, positions, cos_sin_cache)
    kv_cache.kv_cache_write(k, v, k_cache, v_cache, slot_mapping)


# --- registration -------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
MAX_POSITION = 4096


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        tokens, heads = st.sampled_from([1, 3, 17]), st.sampled_from([(1, 1, 16), (3, 1, 32), (4, 2, 80)])
        blocks = st.sampled_from([16, 32])
    else:
        tokens, heads = st.sampled_from([1, 7, 64, 256, 4096]), st.sampled_from([*rope.MODEL_HEADS, (7, 3, 96)])
        blocks = st.sampled_from([16, 128])
    return st.builds(
        lambda t, h, bs, dt, pad: {"tokens": t, "q_heads": h[0], "kv_heads": h[1], "head_dim": h[2],
                                   "block_size": bs, "dtype": dt, "pad_every": pad},
        tokens, heads, blocks, st.sampled_from(DTYPES), st.sampled_from([0, 3]),
    )


def _make_inputs(case, device, gen):
    T, hq, hk, D, bs, dt = (case[n] for n in ("tokens", "q_heads", "kv_heads", "head_dim", "block_size", "dtype"))
    # q, k and v as views into one qkv row, as the fused projection produces them.
    qkv = torch.randn(T, (hq + 2 * hk) * D, generator=gen, device=device).to(dt)
    q = qkv[:, : hq * D].view(T, hq, D)
    k = qkv[:, hq * D: (hq + hk) * D].view(T, hk, D)
    v = qkv[:, (hq + hk) * D:].view(T, hk, D)
    num_blocks = triton.cdiv(T, bs) + 3  # spare blocks: untouched slots must keep their values
    slots = torch.randperm(num_blocks * bs, generator=gen, device=device)[:T]
    if case.get("pad_every"):
        slots[:: case["pad_every"]] = -1
    return {
        "q": q, "k": k, "v": v,
        "positions": torch.randint(0, MAX_POSITION, (T,), generator=gen, device=device),
        "cos_sin_cache": rope.build_rope_cache(D, MAX_POSITION, theta=1e6, device=device),
        "k_cache": torch.randn(num_blocks, bs, hk, D, generator=gen, device=device).to(dt),
        "v_cache": torch.randn(num_blocks, bs, hk, D, generator=gen, device=device).to(dt),
        "slot_mapping": slots,
    }


def _bench_cases():
    return [
        {"tokens": t, "q_heads": hq, "kv_heads": hk, "head_dim": D, "block_size": 16, "dtype": torch.bfloat16,
         "pad_every": 0}
        for hq, hk, D in rope.MODEL_HEADS
        for t in (1, 16, 256, 4096)
    ]


def _bytes(case):
    T, D, hq, hk = case["tokens"], case["head_dim"], case["q_heads"], case["kv_heads"]
    size = case["dtype"].itemsize
    # q and k read and written in place, v read, k and v written to the cache; cos/sin rows and slots.
    return T * D * size * (2 * hq + 2 * hk + hk + 2 * hk) + T * D * 4 + T * 16


register(Op(
    name="rope_kv_write",
    triton=rope_kv_write,
    torch=rope_kv_write_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [
        {"tokens": 5, "q_heads": 3, "kv_heads": 1, "head_dim": 32, "block_size": 16, "dtype": dt, "pad_every": 2}
        for dt in DTYPES
    ],
    flops=lambda c: 3.0 * c["tokens"] * (c["q_heads"] + c["kv_heads"]) * c["head_dim"],
    bytes=_bytes,
    baseline=rope_then_kv_write,
    baseline_name="rope + kv_cache_write",
    mutates=("q", "k", "k_cache", "v_cache"),
))
