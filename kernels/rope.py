"""Rotary position embedding (RoPE), half-rotation style (GPT-NeoX, Hugging Face Llama and Qwen), in place.

Math, for one head vector x of length D at position p, with x1 = x[:D/2] and x2 = x[D/2:]:

    inv_freq_i = theta^(-2i/D)                      i = 0 .. D/2-1 (possibly rescaled, see below)
    cos_i = cos(p * inv_freq_i),  sin_i = sin(p * inv_freq_i)
    x1' = x1 * cos - x2 * sin
    x2' = x2 * cos + x1 * sin

which rotates each pair (x[i], x[i + D/2]) by the angle p * inv_freq_i. Queries and keys are rotated by
their token's position; values are not.

Layouts:
- q [T, Hq, D] and k [T, Hkv, D], same dtype, unit stride on D; the token and head strides are free, so q
  and k may be views into the fused qkv projection output (token stride (Hq + 2 Hkv) D).
- positions [T] int64.
- cos_sin_cache [max_position, D] float32: row p holds cos(p * inv_freq) in [:D/2] and sin in [D/2:],
  built once per model by :func:`build_rope_cache`.

Frequency scaling (the Hugging Face ``rope_scaling`` dict) changes only inv_freq:
- ``linear``: inv_freq / factor (positions interpolated by ``factor``);
- ``llama3``: wavelengths 2π/inv_freq longer than original_max_position_embeddings / low_freq_factor are
  divided by ``factor``, shorter than original / high_freq_factor are kept, and those in between are blended
  linearly in original / wavelength.

Kernel: one program per (token, block of heads) over q's heads then k's; it reads the token's cos/sin row
once, loads each head's two halves as [HEADS, D/2] tiles, rotates in float32 and stores in place.
The tile size is data per vendor, chosen at launch. Memory-bound: q and k are read and written once, each
token's cos/sin row is read once.
Positions outside the cache raise ValueError where checking is free (CPU tensors, the reference); on a GPU
they are the caller's invariant, since checking would read them back to the host, a device sync per
layer; with ``TRITON_DEBUG=1`` the kernel asserts them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from kernels._triton import tl, triton
from kernels.device import check_backend, vendor
from kernels.registry import Op, register


@triton.jit
def _heads_tile(base_ptr, token, head0, n_heads, stride_t, stride_h, half, HEADS: tl.constexpr, HALF: tl.constexpr):
    """Pointers to the first halves of a [HEADS, HALF] tile of one token's heads, and its mask."""
    h = head0 + tl.arange(0, HEADS)[:, None]
    i = tl.arange(0, HALF)[None, :]
    return base_ptr + token * stride_t + h * stride_h + i, (h < n_heads) & (i < half)


@triton.jit
def _rotate_in_place(p1, mask, cos, sin, half):
    """Rotate the tile whose first halves ``p1`` points at, in float32, store it; return the stored halves."""
    x1 = tl.load(p1, mask=mask, other=0.0)
    x2 = tl.load(p1 + half, mask=mask, other=0.0)
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    r1 = (x1f * cos - x2f * sin).to(x1.dtype)
    r2 = (x2f * cos + x1f * sin).to(x1.dtype)
    tl.store(p1, r1, mask=mask)
    tl.store(p1 + half, r2, mask=mask)
    return r1, r2


@triton.jit
def _token_cos_sin(pos_ptr, cache_ptr, token, max_position, stride_cache, half, HALF: tl.constexpr):
    """The token's cos and sin rows, [1, HALF] each, from the cos/sin cache at its position."""
    pos = tl.load(pos_ptr + token)
    tl.device_assert((pos >= 0) & (pos < max_position), "rope: position outside the cos/sin cache")
    i = tl.arange(0, HALF)[None, :]
    cos = tl.load(cache_ptr + pos * stride_cache + i, mask=i < half, other=0.0)
    sin = tl.load(cache_ptr + pos * stride_cache + half + i, mask=i < half, other=0.0)
    return cos, sin


@triton.jit
def _rotate_heads(base_ptr, token, head0, n_heads, stride_t, stride_h, cos, sin, half,
                  HEADS: tl.constexpr, HALF: tl.constexpr):
    p1, mask = _heads_tile(base_ptr, token, head0, n_heads, stride_t, stride_h, half, HEADS, HALF)
    _rotate_in_place(p1, mask, cos, sin, half)


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, pos_ptr, cache_ptr,
    n_q_heads, n_k_heads, half, max_position,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_cache,
    HEADS: tl.constexpr, HALF: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    head_block = tl.program_id(1)
    q_blocks = tl.cdiv(n_q_heads, HEADS)
    cos, sin = _token_cos_sin(pos_ptr, cache_ptr, token, max_position, stride_cache, half, HALF)
    if head_block < q_blocks:
        _rotate_heads(q_ptr, token, head_block * HEADS, n_q_heads, stride_qt, stride_qh, cos, sin, half,
                      HEADS, HALF)
    else:
        _rotate_heads(k_ptr, token, (head_block - q_blocks) * HEADS, n_k_heads, stride_kt, stride_kh,
                      cos, sin, half, HEADS, HALF)


# --- configs as data ------------------------------------------------------------------------------
# Elements per program: a [HEADS, D/2] pair of tiles, HEADS the largest power of two up to the head count
# with HEADS * D/2 <= MAX_TILE. Measured on an H200 (bench/results): 8 heads of 128 beat 4 and 32 by 10-25%
# at 4096+ tokens; at decode sizes every choice is launch-latency bound. Warps: 8 elements per lane per tile
# (16 bytes in 16-bit dtypes), WARP_ELEMS per warp, capped at MAX_WARPS.
CONFIGS = {
    "cuda": dict(MAX_TILE=512, WARP_ELEMS=8 * 32, MAX_WARPS=8),
    # AMD wavefronts are 64 lanes wide: the same elements per lane need twice the tile.
    "hip": dict(MAX_TILE=1024, WARP_ELEMS=8 * 64, MAX_WARPS=8),
}


def _pick(n_q: int, n_k: int, half_block: int, heads: int | None = None) -> tuple[int, int]:
    """(HEADS, num_warps) from the running vendor's config (read here, at launch); ``heads`` forces it."""
    cfg = CONFIGS["cuda" if vendor() == "cpu" else vendor()]
    if heads is None:
        heads = min(triton.next_power_of_2(max(n_q, n_k)), max(1, cfg["MAX_TILE"] // half_block))
    return heads, max(1, min(cfg["MAX_WARPS"], heads * half_block // cfg["WARP_ELEMS"]))


def _check(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
           cache_dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> None:
    for name, t in (("q", q), ("k", k), ("positions", positions), ("cos_sin_cache", cos_sin_cache)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"rope: {name} must be a torch.Tensor, got {type(t).__name__}")
    if q.dim() != 3 or k.dim() != 3:
        raise ValueError(f"rope: q and k must be [tokens, heads, head_dim], got {tuple(q.shape)} and {tuple(k.shape)}")
    T, _, D = q.shape
    if k.shape[0] != T or k.shape[2] != D:
        raise ValueError(f"rope: k {tuple(k.shape)} must have q's token count {T} and head_dim {D}")
    if D % 2 != 0:
        raise ValueError(f"rope: head_dim must be even for the half rotation, got {D}")
    if not q.dtype.is_floating_point or k.dtype != q.dtype:
        raise TypeError(f"rope: q and k must share one floating dtype, got {q.dtype} and {k.dtype}")
    if q.stride(-1) != 1 or k.stride(-1) != 1:
        raise ValueError("rope: q and k need a unit stride on head_dim (views of a fused qkv row are fine)")
    if positions.shape != (T,) or positions.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"rope: positions must be int64 of shape ({T},), got {positions.dtype} {tuple(positions.shape)}"
        )
    if cos_sin_cache.dim() != 2 or cos_sin_cache.shape[1] != D or cos_sin_cache.dtype not in cache_dtypes:
        raise ValueError(
            f"rope: cos_sin_cache must be float32 [max_position, {D}] (cos then sin), got "
            f"{cos_sin_cache.dtype} {tuple(cos_sin_cache.shape)}; build it with build_rope_cache"
        )
    devices = {q.device, k.device, positions.device, cos_sin_cache.device}
    if len(devices) != 1:
        raise ValueError(
            f"rope: q, k, positions and cos_sin_cache must be on one device, got {sorted(map(str, devices))}"
        )


def _check_positions(positions: torch.Tensor, max_position: int) -> None:
    lo, hi = int(positions.min()), int(positions.max())
    if lo < 0 or hi >= max_position:
        raise ValueError(
            f"rope: positions span [{lo}, {hi}] but the cos/sin cache covers [0, {max_position - 1}]; "
            "build the cache for the model's max_position_embeddings"
        )


def rotary_embedding(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
                     *, _heads: int | None = None) -> None:
    """Rotate q [T, Hq, D] and k [T, Hkv, D] in place by ``positions`` (half-rotation style).

    ``_heads`` forces the head block; it exists for the tuning script only.
    """
    _check(q, k, positions, cos_sin_cache)
    if positions.device.type == "cpu" and positions.numel():  # free here (no device sync); a bad read crashes
        _check_positions(positions, cos_sin_cache.shape[0])
    check_backend("triton", q.device)
    T, n_q, D = q.shape
    n_k = k.shape[1]
    if T == 0 or (n_q == 0 and n_k == 0):
        return
    cache = cos_sin_cache if cos_sin_cache.stride(1) == 1 else cos_sin_cache.contiguous()
    half = D // 2
    half_block = triton.next_power_of_2(half)
    heads, num_warps = _pick(n_q, n_k, half_block, _heads)
    grid = (T, triton.cdiv(n_q, heads) + triton.cdiv(n_k, heads))
    _rope_kernel[grid](
        q, k, positions, cache,
        n_q, n_k, half, cache.shape[0],
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), cache.stride(0),
        HEADS=heads, HALF=half_block, num_warps=num_warps,
    )


def rotary_embedding_reference(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
                               cos_sin_cache: torch.Tensor) -> None:
    """Pure torch, same signature and in-place contract: float32 math (float64 for float64 input)."""
    _check(q, k, positions, cos_sin_cache, cache_dtypes=(torch.float32, torch.float64))
    _check_positions(positions, cos_sin_cache.shape[0])
    half = q.shape[-1] // 2
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    rows = cos_sin_cache[positions.long()].to(compute)[:, None, :]  # [T, 1, D]
    cos, sin = rows[..., :half], rows[..., half:]
    for x in (q, k):
        x1, x2 = x[..., :half].to(compute), x[..., half:].to(compute)
        rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        x.copy_(rotated.to(x.dtype))


def rotary_embedding_eager(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor,
                           cos_sin_cache: torch.Tensor) -> None:
    """The baseline a model would otherwise run: the Hugging Face formula in the storage dtype, copied back."""
    half = q.shape[-1] // 2
    rows = cos_sin_cache[positions].to(q.dtype)[:, None, :]
    cos = torch.cat((rows[..., :half], rows[..., :half]), dim=-1)
    sin = torch.cat((rows[..., half:], rows[..., half:]), dim=-1)
    for x in (q, k):
        rotated_half = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        x.copy_(x * cos + rotated_half * sin)


# --- the cos/sin cache ------------------------------------------------------------------------------

SUPPORTED_SCALING = ("default", "linear", "llama3")


def rope_inv_freq(head_dim: int, theta: float = 10000.0, scaling: dict[str, Any] | None = None) -> torch.Tensor:
    """inv_freq [head_dim/2] in float64, with the Hugging Face ``rope_scaling`` dict applied."""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"rope: head_dim must be a positive even number, got {head_dim}")
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind not in SUPPORTED_SCALING:
        raise ValueError(f"rope: unsupported rope scaling type {kind!r}; supported: {', '.join(SUPPORTED_SCALING)}")
    try:
        factor = float(scaling["factor"])
        if kind == "linear":
            return inv_freq / factor
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        original = float(scaling["original_max_position_embeddings"])
    except KeyError as e:
        raise ValueError(f"rope: {kind} scaling needs the key {e.args[0]!r} in rope_scaling, got {scaling}") from None
    wavelen = 2 * math.pi / inv_freq
    smooth = (original / wavelen - low) / (high - low)
    blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = torch.where(wavelen > original / low, inv_freq / factor, blended)
    return torch.where(wavelen < original / high, inv_freq, out)


def build_rope_cache(head_dim: int, max_position: int, theta: float = 10000.0,
                     scaling: dict[str, Any] | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """The float32 [max_position, head_dim] table: cos(p·inv_freq) in [:, :D/2], sin in [:, D/2:].

    Angles are formed in float64 so that large positions keep their precision.
    """
    if max_position <= 0:
        raise ValueError(f"rope: max_position must be positive, got {max_position}")
    inv_freq = rope_inv_freq(head_dim, theta, scaling)
    angles = torch.arange(max_position, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return torch.cat((angles.cos(), angles.sin()), dim=-1).to(torch.float32).to(device or "cpu")


# --- registration -------------------------------------------------------------------------------

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (Hq, Hkv, D): Qwen2.5-0.5B, Qwen2.5-7B, Llama-3-8B, Llama-3-70B (per GPU at TP=1)
MODEL_HEADS = [(14, 2, 64), (28, 4, 128), (32, 8, 128), (64, 8, 128)]
MAX_POSITION = 4096


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        tokens, heads = st.sampled_from([1, 3, 17]), st.sampled_from([(1, 1, 2), (3, 1, 8), (4, 2, 80), (5, 3, 18)])
    else:
        tokens, heads = st.sampled_from([1, 7, 128, 1000, 4096]), st.sampled_from([*MODEL_HEADS, (7, 3, 96)])
    return st.builds(
        lambda t, h, dt, fused: {"tokens": t, "q_heads": h[0], "kv_heads": h[1], "head_dim": h[2],
                                 "dtype": dt, "fused": fused},
        tokens, heads, st.sampled_from(DTYPES), st.booleans(),
    )


def _make_inputs(case, device, gen):
    T, hq, hk, D, dt = case["tokens"], case["q_heads"], case["kv_heads"], case["head_dim"], case["dtype"]
    if case.get("fused"):  # q and k as views into one qkv row, as the fused projection produces them
        qkv = torch.randn(T, (hq + 2 * hk) * D, generator=gen, device=device).to(dt)
        q = qkv[:, : hq * D].view(T, hq, D)
        k = qkv[:, hq * D : (hq + hk) * D].view(T, hk, D)
    else:
        q = torch.randn(T, hq, D, generator=gen, device=device).to(dt)
        k = torch.randn(T, hk, D, generator=gen, device=device).to(dt)
    positions = torch.randint(0, MAX_POSITION, (T,), generator=gen, device=device)
    cache = build_rope_cache(D, MAX_POSITION, theta=1e6, device=device)
    return {"q": q, "k": k, "positions": positions, "cos_sin_cache": cache}


def _bench_cases():
    return [
        {"tokens": t, "q_heads": hq, "kv_heads": hk, "head_dim": D, "dtype": dt, "fused": True}
        for dt in (torch.bfloat16, torch.float16)
        for hq, hk, D in MODEL_HEADS
        for t in (1, 16, 256, 4096, 16384)
    ]


def _bytes(case):
    T, D = case["tokens"], case["head_dim"]
    moved = 2 * T * (case["q_heads"] + case["kv_heads"]) * D * case["dtype"].itemsize  # read + write
    return moved + T * D * 4 + T * 8  # each token's cos/sin row, its position


register(Op(
    name="rope",
    triton=rotary_embedding,
    torch=rotary_embedding_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [
        {"tokens": 3, "q_heads": 3, "kv_heads": 1, "head_dim": 18, "dtype": dt, "fused": fused}
        for dt in DTYPES for fused in (False, True)
    ],
    # 3 flops per rotated element (two multiplies, one add)
    flops=lambda c: 3.0 * c["tokens"] * (c["q_heads"] + c["kv_heads"]) * c["head_dim"],
    bytes=_bytes,
    baseline=rotary_embedding_eager,
    baseline_name="torch eager",
    mutates=("q", "k"),
))
