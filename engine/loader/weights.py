"""The weights a model of a given ModelConfig must have, by Hugging Face name, and GGUFWeight.

Checking a checkpoint against this list before anything is copied to the device turns a missing or
misshapen tensor into one clear error instead of a shape error deep inside the first forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.loader.errors import ModelLoadError
from engine.model_config import ModelConfig

# Tensors some checkpoints carry that the engine recomputes itself.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass
class GGUFWeight:
    """A weight kept in its GGUF block format: ``data`` uint8 [N, row_bytes] on the device.

    ``shape`` is the logical (N, K) = (out_features, in_features) in HF order; ``qtype`` is the
    ggml quantization type number (gguf.GGMLQuantizationType).
    """

    data: torch.Tensor
    qtype: int
    shape: tuple[int, int]


def expected_weights(config: ModelConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(required, optional) weight shapes by HF name for ``config``."""
    h, i, v, hd = config.hidden_size, config.intermediate_size, config.vocab_size, config.head_dim
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    required = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    optional = {}
    (optional if config.tie_word_embeddings else required)["lm_head.weight"] = (v, h)
    for n in range(config.num_hidden_layers):
        p = f"model.layers.{n}."
        required.update({
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        })
        biases = {p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                  p + "self_attn.v_proj.bias": (kv,)}
        (required if config.attention_bias else optional).update(biases)
        # Llama with attention_bias=True also biases o_proj; Qwen2 does not.
        optional[p + "self_attn.o_proj.bias"] = (h,)
        if config.qk_norm:
            required.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
    return required, optional


def check_weights(config: ModelConfig, found: dict[str, tuple[int, ...]], where) -> list[str]:
    """Check names and shapes found in a checkpoint; returns the names to load, raises ModelLoadError.

    Unknown names (other than IGNORED_SUFFIXES) are an error too: they mean the checkpoint is not the
    architecture config.json claims, and silently dropping weights would produce garbage text.
    """
    required, optional = expected_weights(config)
    missing = sorted(set(required) - set(found))
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ModelLoadError(f"checkpoint lacks weights the {config.architecture} config requires: "
                             f"{', '.join(missing[:5])}{more}", where)
    names = []
    for name, shape in found.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        expected = required.get(name, optional.get(name))
        if expected is None:
            raise ModelLoadError(f"unexpected weight {name!r} for a {config.architecture} model; "
                                 "the checkpoint does not match its config.json", where)
        if tuple(shape) != expected:
            raise ModelLoadError(f"weight {name!r} has shape {tuple(shape)}, but the config implies {expected}", where)
        names.append(name)
    return names
