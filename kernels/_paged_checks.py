"""Input checks shared by the attention and KV-cache launchers.

Two levels. The cheap checks (shapes, dtypes, devices, host integers) always run and never synchronise
with the device, so they cost nothing on the hot path. The value checks (block ids in range, context
lengths within the block table's capacity, slots within the cache) read device tensors and so stall the
stream; they run only when ``TRITONFORGE_DEBUG_CHECKS=1`` is set or :data:`DEBUG_CHECKS` is True.
"""

from __future__ import annotations

import math
import os

import torch

# Set True (or export TRITONFORGE_DEBUG_CHECKS=1) to check device values too; each check syncs.
DEBUG_CHECKS = False

HEAD_DIMS = (16, 32, 64, 80, 96, 128, 256)
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE = 16, 256
INDEX_DTYPES = (torch.int32, torch.int64)


def debug_checks() -> bool:
    return DEBUG_CHECKS or os.environ.get("TRITONFORGE_DEBUG_CHECKS", "0") not in ("", "0")


def same_device(op: str, ref_name: str, ref: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, t in others.items():
        if t is not None and t.device != ref.device:
            raise ValueError(
                f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; move both to one device"
            )


def float_tensor(op: str, name: str, t: torch.Tensor, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"{op}: {name} must be float16, bfloat16 or float32, got {t.dtype}")
    if t.stride(-1) != 1:
        raise ValueError(f"{op}: {name} must have a unit stride on its last (head_dim) axis; call .contiguous()")


def index_tensor(op: str, name: str, t: torch.Tensor, ndim: int, dtypes=INDEX_DTYPES) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{op}: {name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise TypeError(f"{op}: {name} must be one of {[str(d) for d in dtypes]}, got {t.dtype}")


def head_dim(op: str, d: int) -> None:
    if d not in HEAD_DIMS:
        raise ValueError(f"{op}: head_dim {d} is not supported; supported head dims are {HEAD_DIMS}")


def softmax_scale(op: str, scale: float | None, d: int) -> float:
    """The scale as a float (1/sqrt(d) if None). It must be positive: the kernels take each row's max
    before scaling (one multiply-add per score instead of a multiply and a subtract)."""
    value = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not value > 0.0 or math.isinf(value):
        raise ValueError(f"{op}: scale must be a positive finite number, got {scale!r}")
    return value


def head_counts(op: str, num_q_heads: int, num_kv_heads: int) -> None:
    if num_kv_heads < 1 or num_q_heads % num_kv_heads != 0:
        raise ValueError(
            f"{op}: {num_q_heads} query heads are not a multiple of {num_kv_heads} KV heads; "
            "grouped-query attention needs num_q_heads % num_kv_heads == 0"
        )


def paged_cache(op: str, k_cache: torch.Tensor, v_cache: torch.Tensor) -> tuple[int, int, int, int]:
    """Check a K/V cache pair [num_blocks, block_size, kv_heads, head_dim]; returns its shape."""
    float_tensor(op, "k_cache", k_cache, 4)
    float_tensor(op, "v_cache", v_cache, 4)
    if k_cache.shape != v_cache.shape or k_cache.stride() != v_cache.stride():
        raise ValueError(
            f"{op}: k_cache {tuple(k_cache.shape)} and v_cache {tuple(v_cache.shape)} must have one shape and layout"
        )
    if k_cache.dtype != v_cache.dtype:
        raise TypeError(f"{op}: k_cache is {k_cache.dtype} but v_cache is {v_cache.dtype}")
    same_device(op, "k_cache", k_cache, v_cache=v_cache)
    num_blocks, block_size, kv_heads, d = k_cache.shape
    if block_size & (block_size - 1) or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(
            f"{op}: block_size {block_size} must be a power of two in [{MIN_BLOCK_SIZE}, {MAX_BLOCK_SIZE}]"
        )
    return num_blocks, block_size, kv_heads, d


def block_table_values(op: str, block_tables: torch.Tensor, lengths: torch.Tensor, num_blocks: int,
                       block_size: int, what: str) -> None:
    """Debug-only (syncs): every length fits the table and every block id it reaches is in range."""
    capacity = block_tables.shape[1] * block_size
    lengths = lengths.to("cpu", torch.int64)
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"{op}: {what} has a negative entry ({int(lengths.min())})")
    if lengths.numel() and int(lengths.max()) > capacity:
        b = int(lengths.argmax())
        raise ValueError(
            f"{op}: {what}[{b}] = {int(lengths[b])} exceeds the block table's capacity of {capacity} tokens "
            f"({block_tables.shape[1]} blocks of {block_size}); allocate more blocks for that sequence"
        )
    table = block_tables.to("cpu", torch.int64)
    for b, n in enumerate(lengths.tolist()):
        used = table[b, : -(-n // block_size)]
        if used.numel() and (int(used.min()) < 0 or int(used.max()) >= num_blocks):
            raise ValueError(
                f"{op}: block_tables[{b}] refers to block ids outside [0, {num_blocks}) within its first {n} tokens"
            )


def decode_inputs(op: str, q, k_cache, v_cache, block_tables, context_lens, max_context_len, fresh_tokens) -> int:
    """The paged decode launch's cheap checks (no sync); returns the context bound its grid is sized for."""
    _, block_size, kv_heads, d = paged_cache(op, k_cache, v_cache)
    float_tensor(op, "q", q, 3)
    index_tensor(op, "block_tables", block_tables, 2)
    index_tensor(op, "context_lens", context_lens, 1)
    same_device(op, "q", q, k_cache=k_cache, block_tables=block_tables, context_lens=context_lens)
    if fresh_tokens is not None and (not isinstance(fresh_tokens, int) or fresh_tokens < 0):
        raise ValueError(f"{op}: fresh_tokens must be None or a non-negative host int, got {fresh_tokens!r}")
    batch, q_heads, qd = q.shape
    if qd != d:
        raise ValueError(f"{op}: q has head_dim {qd} but the cache holds head_dim {d}")
    head_dim(op, d)
    head_counts(op, q_heads, kv_heads)
    if q.dtype != k_cache.dtype:
        raise TypeError(f"{op}: q is {q.dtype} but the cache is {k_cache.dtype}; they must match")
    if block_tables.shape[0] != batch or context_lens.shape[0] != batch:
        raise ValueError(
            f"{op}: block_tables {tuple(block_tables.shape)} and context_lens {tuple(context_lens.shape)} "
            f"need one row per sequence ({batch}, from q)"
        )
    capacity = block_tables.shape[1] * block_size
    if max_context_len is None:
        return capacity
    if not isinstance(max_context_len, int) or max_context_len < 0:
        raise TypeError(f"{op}: max_context_len must be a non-negative host int, got {max_context_len!r}")
    if max_context_len > capacity:
        raise ValueError(
            f"{op}: max_context_len {max_context_len} exceeds the block table's capacity of {capacity} tokens "
            f"({block_tables.shape[1]} blocks of {block_size}); allocate more blocks"
        )
    return max_context_len
