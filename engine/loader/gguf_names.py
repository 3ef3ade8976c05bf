"""GGUF naming: tensor names to Hugging Face names, and GGUF metadata to a ModelConfig.

llama.cpp names tensors per block (``blk.N.attn_q.weight``) and keeps hyper-parameters under the
architecture's prefix (``llama.embedding_length``, ``qwen2.attention.head_count_kv``, ...). This module
is the dictionary between those and the Hugging Face names the engine's model uses.
"""

from __future__ import annotations

import re

import torch

from engine.loader.errors import ModelLoadError, UnsupportedModelError
from engine.model_config import ModelConfig

# GGUF general.architecture -> engine architecture (Mistral GGUFs are written with the llama architecture).
GGUF_ARCHITECTURES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}

_TOP_LEVEL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_PER_BLOCK = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_NAME = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")
_TOP_NAME = re.compile(r"^(\w+)\.(weight|bias)$")
# Tensors llama.cpp writes that the engine derives itself (llama3 rope frequencies come from metadata).
SKIPPED_TENSORS = {"rope_freqs.weight"}

# general.file_type -> the dtype for tensors that are not kept quantized (0 = all F32, 1 = mostly F16);
# anything else (quantized, BF16) computes in bfloat16, whose range is safe for every supported model.
_FILE_TYPE_DTYPES = {0: torch.float32, 1: torch.float16}


def hf_name(gguf_name: str) -> str | None:
    """The HF name of a GGUF tensor, or None for one the engine does not use (see SKIPPED_TENSORS)."""
    if gguf_name in SKIPPED_TENSORS:
        return None
    match = _BLOCK_NAME.match(gguf_name)
    if match and match[2] in _PER_BLOCK:
        return f"model.layers.{match[1]}.{_PER_BLOCK[match[2]]}.{match[3]}"
    match = _TOP_NAME.match(gguf_name)
    if match and match[1] in _TOP_LEVEL:
        return f"{_TOP_LEVEL[match[1]]}.{match[2]}"
    raise ModelLoadError(f"GGUF tensor {gguf_name!r} has no Hugging Face counterpart the engine knows")


def config_from_metadata(meta: dict, tensor_names: set[str], vocab_size: int | None) -> ModelConfig:
    """A ModelConfig from GGUF key/values ``meta`` (already decoded to Python values)."""
    gguf_arch = meta.get("general.architecture")
    if gguf_arch not in GGUF_ARCHITECTURES:
        raise UnsupportedModelError(f"unsupported GGUF architecture {gguf_arch!r}; supported: "
                                    f"{', '.join(sorted(GGUF_ARCHITECTURES))} (Mistral GGUFs use 'llama')")
    arch = GGUF_ARCHITECTURES[gguf_arch]

    def get(key, default=None, required=False):
        value = meta.get(f"{gguf_arch}.{key}", default)
        if required and value is None:
            raise ModelLoadError(f"GGUF metadata lacks {gguf_arch}.{key}")
        return value

    hidden = int(get("embedding_length", required=True))
    heads = int(get("attention.head_count", required=True))
    vocab = get("vocab_size") or vocab_size
    if vocab is None:
        raise ModelLoadError(f"GGUF metadata has neither {gguf_arch}.vocab_size nor a token list")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    config = ModelConfig(
        architecture=arch,
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length", required=True)),
        num_hidden_layers=int(get("block_count", required=True)),
        num_attention_heads=heads,
        num_key_value_heads=int(get("attention.head_count_kv") or heads),
        head_dim=int(get("attention.key_length") or hidden // heads),
        # Stored as float32: round 9.99999997e-07 back to the 1e-06 the model was trained with.
        rms_norm_eps=float(f"{float(get('attention.layer_norm_rms_epsilon', 1e-6)):.6g}"),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        rope_scaling=_rope_scaling(get),
        max_position_embeddings=int(get("context_length", 4096)),
        tie_word_embeddings="output.weight" not in tensor_names,
        attention_bias="blk.0.attn_q.bias" in tensor_names,
        qk_norm=arch == "qwen3",
        dtype=_FILE_TYPE_DTYPES.get(meta.get("general.file_type"), torch.bfloat16),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_ids=[] if eos is None else [int(eos)],
    )
    config.validate()
    return config


def _rope_scaling(get) -> dict | None:
    kind = get("rope.scaling.type")
    if kind in (None, "none"):
        return None
    scaling = {"rope_type": str(kind), "factor": float(get("rope.scaling.factor", 1.0))}
    original = get("rope.scaling.original_context_length")
    if original:
        scaling["original_max_position_embeddings"] = int(original)
    return scaling


# (low_freq_factor, high_freq_factor, original_max_position_embeddings) of the Llama 3.1 / 3.2 / 3.3
# releases; GGUF keeps only the resulting per-frequency factors (rope_freqs), not these parameters.
LLAMA3_ROPE_CANDIDATES = [(1.0, 4.0, 8192)]


def llama3_scaling_from_rope_freqs(factors: torch.Tensor, head_dim: int, theta: float) -> dict:
    """The HF llama3 ``rope_scaling`` that reproduces llama.cpp's rope_freqs tensor, or ModelLoadError.

    rope_freqs[i] is the divisor llama.cpp applies to RoPE frequency i, which is
    ``inv_freq[i] / inv_freq_llama3[i]``; its maximum is the scaling factor, and the remaining
    parameters are recovered by checking the known releases' values against every entry.
    """
    from kernels.rope import rope_inv_freq

    factors = factors.double().flatten()
    if factors.numel() != head_dim // 2:
        raise ModelLoadError(f"rope_freqs has {factors.numel()} entries, expected head_dim / 2 = {head_dim // 2}")
    plain = rope_inv_freq(head_dim, theta)
    for low, high, original in LLAMA3_ROPE_CANDIDATES:
        scaling = {"rope_type": "llama3", "factor": float(factors.max()), "low_freq_factor": low,
                   "high_freq_factor": high, "original_max_position_embeddings": original}
        if torch.allclose(plain / rope_inv_freq(head_dim, theta, scaling), factors, rtol=1e-4):
            return scaling
    raise ModelLoadError("the file's rope_freqs do not match llama3 rope scaling with any known parameters; "
                         "the model's RoPE cannot be reproduced (use its safetensors release instead)")


def unpermute_rows(rows: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (interleaved rope pairs -> HF's two halves), row-wise.

    llama.cpp's converter maps, within each head of ``head_dim`` rows, HF row ``j * head_dim/2 + i`` to
    row ``2 * i + j`` (j in {0, 1}). Rows are moved whole, so this works on raw quantized rows
    (uint8 [N, row_bytes]) as well as on float weights and 1-D biases.
    """
    n = rows.shape[0]
    if n % (2 * num_heads):
        raise ModelLoadError(f"cannot un-permute {n} rows into {num_heads} heads of an even size")
    half = n // num_heads // 2
    return rows.reshape(num_heads, half, 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape).contiguous()
