"""The building blocks of a decoder layer, each calling kernels only through the engine's op table.

- :class:`Linear`: ``y = x W^T (+ b)`` over one or more weights that share an input (q/k/v, gate/up).
  Weights are fused at load into one matrix when they can be (dense tensors of one dtype, or GGUF blocks
  of one quantization type: rows of quantized blocks concatenate like dense rows); otherwise each part is
  applied and the outputs concatenated. Dense weights go to the ``linear`` op, quantized ones (any object
  with ``data``, ``qtype`` and ``shape``, i.e. the loader's ``GGUFWeight``) to ``gguf_linear``.
- :class:`Embedding`: a row gather; quantized tables dequantize only the rows looked up.
- :class:`Attention`: fused qkv projection, optional per-head q/k RMSNorm (Qwen3), RoPE in place and the
  chunk's keys and values written into the paged cache (one fused op unless either part is swapped; none
  when :class:`NormQKV` did both already), then attention: decode tokens (the first ``num_decode_tokens`` of
  the batch) through ``paged_decode_attention``, prefill chunks through ``prefill_attention`` (which reads
  each sequence's cached prefix via its block table).
- :class:`NormLinear`: an RMSNorm and the projection after it, one fused op at decode (``rmsnorm_linear``)
  where that is on; :class:`NormQKV`: the same for q/k/v, with RoPE and the KV write too (``rmsnorm_qkv_rope``).
- :class:`MLP`: the post-attention norm and SwiGLU, ``down(silu(gate a) * up a)`` with gate and up fused; at
  decode the norm, gate/up and the gate run as one op (``rmsnorm_swiglu``) unless a part is swapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.ops import OpTable


def is_quantized(weight) -> bool:
    return hasattr(weight, "qtype") and hasattr(weight, "data")


def out_features(weight) -> int:
    return int(weight.shape[0])


def _fuse(parts: list) -> list:
    """Merge parts into as few matrices as the storage formats allow."""
    if len(parts) == 1:
        return parts
    if all(isinstance(p, torch.Tensor) for p in parts) and len({p.dtype for p in parts}) == 1:
        return [torch.cat(parts, dim=0)]
    if all(is_quantized(p) for p in parts) and len({(p.qtype, p.data.shape[1]) for p in parts}) == 1:
        first = parts[0]
        data = torch.cat([p.data for p in parts], dim=0)
        shape = (sum(out_features(p) for p in parts), int(first.shape[1]))
        return [type(first)(data=data, qtype=first.qtype, shape=shape)]
    return parts


class Linear:
    def __init__(self, ops: OpTable, weights: list, biases: list | None = None):
        self.ops = ops
        self.out_sizes = [out_features(w) for w in weights]
        self.weights = _fuse(list(weights))
        ops.mark_static(*self.weights)
        if biases is None or all(b is None for b in biases):
            self.biases = [None] * len(self.weights)
        elif len(self.weights) == 1:
            self.biases = [torch.cat(biases, dim=0)]
        else:
            self.biases = list(biases)

    def _apply(self, x: torch.Tensor, weight, bias) -> torch.Tensor:
        if is_quantized(weight):
            return self.ops.gguf_linear(x, weight.data, weight.qtype, bias)
        return self.ops.linear(x, weight, bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.weights) == 1:
            return self._apply(x, self.weights[0], self.biases[0])
        return torch.cat([self._apply(x, w, b) for w, b in zip(self.weights, self.biases, strict=True)], dim=-1)


class Embedding:
    def __init__(self, ops: OpTable, weight, dtype: torch.dtype):
        self.ops = ops
        self.weight = weight
        self.dtype = dtype

    def __call__(self, token_ids: torch.Tensor) -> torch.Tensor:
        if is_quantized(self.weight):
            return self.ops.gguf_dequantize(self.weight.data[token_ids], self.weight.qtype, self.dtype)
        # index_select's kernel, not advanced indexing's generic gather: the decode graph's first launch.
        return torch.nn.functional.embedding(token_ids, self.weight)


class RMSNorm:
    def __init__(self, ops: OpTable, weight: torch.Tensor, eps: float):
        self.ops, self.weight, self.eps = ops, weight, eps

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        return self.ops.rmsnorm(x, self.weight, self.eps, residual)


class NormQKV:
    """The input norm, the q/k/v projection and, where the ``rmsnorm_qkv_rope`` fusion is on (a dense q/k/v
    matrix, no per-head q/k norm between projection and RoPE), RoPE and the KV write as well: one launch at
    decode. ``rotated`` says which; without it this is :class:`NormLinear`."""

    def __init__(self, ops: OpTable, norm: RMSNorm, attn: Attention):
        self.ops, self.norm, self.attn = ops, norm, attn
        self.norm_linear = NormLinear(ops, norm, attn.qkv)
        dense = len(attn.qkv.weights) == 1 and not is_quantized(attn.qkv.weights[0])
        self.rotated = dense and attn.q_norm is None and ops.fused("rmsnorm_qkv_rope")

    def __call__(self, h, residual, positions, cos_sin_cache, k_cache, v_cache, meta: AttentionMetadata):
        if not self.rotated:
            return self.norm_linear(h, residual)
        return self.ops.rmsnorm_qkv_rope(h, self.norm.weight, self.attn.qkv.weights[0], self.attn.qkv.biases[0],
                                         residual, self.norm.eps, positions, cos_sin_cache, k_cache, v_cache,
                                         meta.slot_mapping, self.attn.num_heads, self.attn.num_kv_heads)


class NormLinear:
    """``linear(norm(h + residual))`` and the new residual: one ``rmsnorm_linear`` op where the fusion is on
    and the linear is one dense matrix, else the norm and the linear in turn. Without a residual (the
    first layer) the residual handed on is h itself."""

    def __init__(self, ops: OpTable, norm: RMSNorm, linear: Linear):
        self.ops, self.norm, self.linear = ops, norm, linear
        single_dense = len(linear.weights) == 1 and not is_quantized(linear.weights[0])
        self.fused = single_dense and ops.fused("rmsnorm_linear")

    def __call__(self, h: torch.Tensor, residual: torch.Tensor | None):
        if self.fused:
            return self.ops.rmsnorm_linear(h, self.norm.weight, self.linear.weights[0], self.linear.biases[0],
                                           residual, self.norm.eps)
        if residual is None:
            return self.linear(self.norm(h)), h
        a, residual = self.norm(h, residual)
        return self.linear(a), residual


@dataclass
class AttentionMetadata:
    """Where each token of the batch sits in the paged KV cache (built by :mod:`engine.attention_metadata`).

    The batch is ordered decode tokens first (one per sequence), then prefill chunks."""

    slot_mapping: torch.Tensor          # [T] int64: flat cache slot (block * block_size + offset) per token
    num_decode_tokens: int
    decode_block_tables: torch.Tensor   # [num_decode, max_blocks] int32
    decode_context_lens: torch.Tensor   # [num_decode] int32: tokens in the cache after this step's write
    max_decode_context_len: int
    num_prefills: int
    prefill_cu_seqlens: torch.Tensor    # [num_prefills + 1] int32, offsets into the prefill tokens
    prefill_max_seqlen: int
    prefill_block_tables: torch.Tensor  # [num_prefills, max_blocks] int32
    prefill_prefix_lens: torch.Tensor   # [num_prefills] int32: tokens already cached before the chunk
    prefill_has_prefix: bool


class Attention:
    def __init__(self, ops: OpTable, num_heads: int, num_kv_heads: int, head_dim: int, qkv: Linear, o_proj: Linear,
                 q_norm: RMSNorm | None = None, k_norm: RMSNorm | None = None):
        self.ops = ops
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.qkv, self.o_proj = qkv, o_proj
        self.q_norm, self.k_norm = q_norm, k_norm
        self.scale = head_dim ** -0.5
        self.fuse_rope_kv = ops.fused("rope_kv_write")
        dense_o_proj = len(o_proj.weights) == 1 and not is_quantized(o_proj.weights[0])
        self.fuse_decode_o_proj = dense_o_proj and ops.fused("paged_decode_attention_linear")

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
                 k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        return self.attend(self.qkv(x), positions, cos_sin_cache, k_cache, v_cache, meta)

    def attend(self, qkv: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
               k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
               rotated: bool = False) -> torch.Tensor:
        """Everything after the q/k/v projection, from its output [T, (H + 2 KV) D]; ``rotated``: RoPE and the KV
        write are done already (``rmsnorm_qkv_rope``)."""
        T, H, KV, D = qkv.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = qkv.split([H * D, KV * D, KV * D], dim=-1)
        q, k, v = q.reshape(T, H, D), k.reshape(T, KV, D), v.reshape(T, KV, D)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        # RoPE rotates q and k in place; views into the fused qkv output are fine (unit stride on D).
        if rotated:
            pass
        elif self.fuse_rope_kv:
            self.ops.rope_kv_write(q, k, v, positions, cos_sin_cache, k_cache, v_cache, meta.slot_mapping)
        else:
            self.ops.rope(q, k, positions, cos_sin_cache)
            self.ops.kv_cache_write(k, v, k_cache, v_cache, meta.slot_mapping)
        nd = meta.num_decode_tokens
        if nd == T and self.fuse_decode_o_proj:  # a decode-only step: the o_proj GEMV combines the splits
            return self.ops.paged_decode_attention_linear(
                q, k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens, self.o_proj.weights[0],
                self.o_proj.biases[0], scale=self.scale, max_context_len=meta.max_decode_context_len, fresh_tokens=1)
        decoded = prefilled = None
        if nd > 0:
            # fresh_tokens=1: of each decoding sequence's cache, only its newest token was written in this step
            # (just above); the kernel may read the rest before waiting on the kernels in flight.
            decoded = self.ops.paged_decode_attention(
                q[:nd], k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens,
                scale=self.scale, max_context_len=meta.max_decode_context_len, fresh_tokens=1)
        if meta.num_prefills > 0:
            cached = (k_cache, v_cache, meta.prefill_block_tables, meta.prefill_prefix_lens) \
                if meta.prefill_has_prefix else (None, None, None, None)
            prefilled = self.ops.prefill_attention(
                q[nd:], k[nd:], v[nd:], meta.prefill_cu_seqlens, meta.prefill_max_seqlen, scale=self.scale,
                causal=True, k_cache=cached[0], v_cache=cached[1], block_tables=cached[2], prefix_lens=cached[3])
        if decoded is None or prefilled is None:
            out = decoded if prefilled is None else prefilled
        else:
            out = torch.cat([decoded, prefilled])
        return self.o_proj(out.reshape(T, H * D))


class MLP:
    """``down(silu(gate a) * up a)`` with ``a = norm(h + residual)``; returns it and the new residual.

    Gate and up are one fused matrix. Three ways, by the op table's fusions (engine/ops.py FUSIONS):
    ``rmsnorm_swiglu`` (the norm, gate/up and the gate in one launch at decode) then ``linear``; or the norm
    with gate/up (:class:`NormLinear`) and the gate applied as the down projection loads its input
    (``silu_mul_linear``, opt-in); or :class:`NormLinear`, ``silu_and_mul`` and ``linear`` in turn."""

    def __init__(self, ops: OpTable, norm: RMSNorm, gate_up: Linear, down: Linear):
        self.ops, self.norm, self.gate_up, self.down = ops, norm, gate_up, down
        self.norm_gate_up = NormLinear(ops, norm, gate_up)
        # One dense down matrix: the gate can be applied as the down projection loads its input.
        dense_down = len(down.weights) == 1 and not is_quantized(down.weights[0])
        self.fuse_down = dense_down and ops.fused("silu_mul_linear")
        dense_gate_up = len(gate_up.weights) == 1 and not is_quantized(gate_up.weights[0])
        self.fuse_gate = dense_gate_up and not self.fuse_down and ops.fused("rmsnorm_swiglu")

    def __call__(self, h: torch.Tensor, residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fuse_gate:
            act, residual = self.ops.rmsnorm_swiglu(h, self.norm.weight, self.gate_up.weights[0],
                                                    self.gate_up.biases[0], residual, self.norm.eps)
            return self.down(act), residual
        gate_up, residual = self.norm_gate_up(h, residual)
        if self.fuse_down:
            return self.ops.silu_mul_linear(gate_up, self.down.weights[0], self.down.biases[0]), residual
        return self.down(self.ops.silu_and_mul(gate_up)), residual
