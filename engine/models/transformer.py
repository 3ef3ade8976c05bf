"""The decoder-only transformer shared by Llama 2/3/3.x, Mistral, Qwen2/2.5 and Qwen3.

For token ids t (all sequences of a step flattened into one batch of T tokens) at positions p:

    h = embed(t)
    for each layer:   a, r = rmsnorm(h, r);  h = attention(a, p)          (r: the running residual)
                      a, r = rmsnorm(h, r);  h = down(silu(gate a) * up a)
    y = rmsnorm(h, r);  logits = y W_out^T  (W_out = embed for tied embeddings)

The architectures differ only in flags read from :class:`engine.model_config.ModelConfig`: q/k/v biases
(Qwen2), per-head RMSNorm of q and k before RoPE (Qwen3), tied embeddings, and the RoPE frequencies
(theta and, for Llama 3.1+, the ``llama3`` scaling), which live in the cos/sin cache built once here.

Weights arrive under their Hugging Face names; q/k/v and gate/up are fused into one matrix each at load
(see :class:`engine.models.layers.Linear`). Everything runs under ``torch.inference_mode`` in the runner.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from engine.models.layers import MLP, Attention, AttentionMetadata, Embedding, Linear, NormQKV, RMSNorm
from engine.ops import OpTable

log = logging.getLogger(__name__)

# Checkpoint entries that carry no weights the engine needs (RoPE frequencies are recomputed).
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached")


class WeightsError(ValueError):
    """The checkpoint's tensors do not match the model its config describes."""


class DecoderLayer:
    def __init__(self, ops: OpTable, attn: Attention, mlp: MLP, input_norm: RMSNorm):
        self.attn, self.mlp = attn, mlp  # the MLP holds the post-attention norm
        self.qkv = NormQKV(ops, input_norm, attn)  # input norm, then q/k/v (and RoPE with the KV write, fused)

    def __call__(self, h, residual, positions, cos_sin_cache, k_cache, v_cache, meta):
        qkv, residual = self.qkv(h, residual, positions, cos_sin_cache, k_cache, v_cache, meta)
        h = self.attn.attend(qkv, positions, cos_sin_cache, k_cache, v_cache, meta, rotated=self.qkv.rotated)
        return self.mlp(h, residual)


class Transformer:
    def __init__(self, config, ops: OpTable, device: torch.device, dtype: torch.dtype):
        self.config, self.ops, self.device, self.dtype = config, ops, device, dtype
        self.layers: list[DecoderLayer] = []
        self.embed: Embedding | None = None
        self.norm: RMSNorm | None = None
        self.lm_head: Linear | None = None
        self.cos_sin_cache: torch.Tensor | None = None

    # --- loading -------------------------------------------------------------------------------------

    def load_weights(self, weights: Iterable) -> None:
        """Build the layers from ``(hf_name, tensor | GGUFWeight)`` pairs; raises :class:`WeightsError`
        naming the missing or unexpected tensors."""
        cfg = self.config
        named = {}
        for name, w in weights:
            if name.endswith(_IGNORED_SUFFIXES):
                continue
            named[name] = w
        used: set[str] = set()

        def take(name: str, required: bool = True):
            if name not in named:
                if required:
                    raise WeightsError(f"the checkpoint has no tensor {name!r} (a {cfg.architecture} model needs it)")
                return None
            used.add(name)
            return named[name]

        def dense(name: str, required: bool = True):
            w = take(name, required)
            if w is not None and not isinstance(w, torch.Tensor):
                w = self.ops.gguf_dequantize(w.data, w.qtype, self.dtype)
            return w

        ops, eps = self.ops, cfg.rms_norm_eps
        H, KV, D = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        for i in range(cfg.num_hidden_layers):
            p = f"model.layers.{i}."
            proj = [take(f"{p}self_attn.{n}_proj.weight") for n in "qkv"]
            self._check_shape(proj[0], (H * D, cfg.hidden_size), f"{p}self_attn.q_proj.weight")
            self._check_shape(proj[1], (KV * D, cfg.hidden_size), f"{p}self_attn.k_proj.weight")
            biases = [dense(f"{p}self_attn.{n}_proj.bias", cfg.attention_bias) for n in "qkv"]
            q_norm = k_norm = None
            if cfg.qk_norm:
                q_norm = RMSNorm(ops, dense(f"{p}self_attn.q_norm.weight"), eps)
                k_norm = RMSNorm(ops, dense(f"{p}self_attn.k_norm.weight"), eps)
            o_proj = Linear(ops, [take(f"{p}self_attn.o_proj.weight")])
            attn = Attention(ops, H, KV, D, Linear(ops, proj, biases), o_proj, q_norm, k_norm)
            gate_up = Linear(ops, [take(f"{p}mlp.gate_proj.weight"), take(f"{p}mlp.up_proj.weight")])
            mlp = MLP(ops, RMSNorm(ops, dense(f"{p}post_attention_layernorm.weight"), eps), gate_up,
                      Linear(ops, [take(f"{p}mlp.down_proj.weight")]))
            self.layers.append(DecoderLayer(ops, attn, mlp, RMSNorm(ops, dense(f"{p}input_layernorm.weight"), eps)))
            # Fused copies are made; drop the per-part tensors so peak memory stays near one model.
            for n in list(named):
                if n.startswith(p):
                    named[n] = None
        embed = take("model.embed_tokens.weight")
        self._check_shape(embed, (cfg.vocab_size, cfg.hidden_size), "model.embed_tokens.weight", rows_at_least=True)
        self.embed = Embedding(ops, embed, self.dtype)
        self.norm = RMSNorm(ops, dense("model.norm.weight"), eps)
        head = take("lm_head.weight", required=not cfg.tie_word_embeddings)
        self.lm_head = Linear(ops, [embed if head is None else head])
        unused = sorted(set(named) - used)
        if unused:
            raise WeightsError(f"the checkpoint has tensors this {cfg.architecture} model does not use: "
                               f"{', '.join(unused[:8])}{' ...' if len(unused) > 8 else ''}")
        self.build_rope_cache()

    def _check_shape(self, w, expected: tuple[int, int], name: str, rows_at_least: bool = False) -> None:
        shape = tuple(int(s) for s in w.shape)
        ok = shape[1] == expected[1] and (shape[0] >= expected[0] if rows_at_least else shape[0] == expected[0])
        if not ok:
            raise WeightsError(f"tensor {name!r} has shape {shape}; the config implies {expected}")

    def build_rope_cache(self) -> None:
        from kernels.rope import build_rope_cache

        cfg = self.config
        self.cos_sin_cache = build_rope_cache(cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta,
                                              cfg.rope_scaling, self.device)

    # --- forward -------------------------------------------------------------------------------------

    def forward(self, token_ids: torch.Tensor, positions: torch.Tensor,
                kv_caches: list[tuple[torch.Tensor, torch.Tensor]], meta: AttentionMetadata) -> torch.Tensor:
        """Final hidden states [T, hidden] (normalised) for the flattened batch."""
        h = self.embed(token_ids)
        residual = None
        for layer, (k_cache, v_cache) in zip(self.layers, kv_caches, strict=True):
            h, residual = layer(h, residual, positions, self.cos_sin_cache, k_cache, v_cache, meta)
        h, _ = self.norm(h, residual)
        return h

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits [N, vocab] in the model's dtype for the given rows (columns of an oversized embedding table
        are cut, so rows may be strided). The argmax and sampling kernels read them as they are and compute
        in float32; a cast here would be one more launch in every decode step."""
        return self.lm_head(hidden)[:, : self.config.vocab_size]
