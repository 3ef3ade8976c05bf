"""The models the engine and serving benchmarks run: real architectures' exact shapes with random weights.

``MODELS`` holds Qwen2.5-0.5B's and Llama-3.2-1B's configs (QKV bias, tied embeddings, Llama-3 RoPE scaling);
:func:`write_model` writes one as a Hugging Face directory (config, bf16 safetensors, a small tokenizer
trained locally), so the engine loads it through its normal loader and nothing is downloaded.
``SMOKE_SHAPE`` shrinks any of them to toy width for the benchmarks' ``--smoke`` checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

MODELS = {
    "qwen2.5-0.5b": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
        "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "head_dim": 64, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
        "tie_word_embeddings": True, "attention_bias": True, "hidden_act": "silu",
    },
    "llama-3.2-1b": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048,
        "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
        "head_dim": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
        "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    },
}

# --smoke: the same architectures (bias, tying, RoPE scaling kept) at toy width. The vocabulary stays larger
# than the local tokenizer's, as in the real shapes, so token ids without a tokenizer entry are exercised.
SMOKE_SHAPE = {"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}


def write_model(directory: Path, config: dict, device: torch.device, seed: int = 0) -> Path:
    """An HF directory with ``config``'s exact shapes, random bf16 weights and a small local tokenizer."""
    from safetensors.torch import save_file

    from engine.demo_model import build_demo_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    build_demo_tokenizer(directory)
    eos = [0]
    full = dict(config, torch_dtype="bfloat16", bos_token_id=None, eos_token_id=eos)
    (directory / "config.json").write_text(json.dumps(full, indent=2))
    (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    gen = torch.Generator(device=device).manual_seed(seed)
    h, inter, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    d = config["head_dim"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d

    def rand(*shape, scale=None):
        t = torch.randn(*shape, generator=gen, device=device, dtype=torch.float32)
        return (t * (scale or shape[-1] ** -0.5)).to(torch.bfloat16).cpu()

    ones = lambda n: torch.ones(n, dtype=torch.bfloat16)
    weights = {"model.embed_tokens.weight": rand(v, h, scale=0.5), "model.norm.weight": ones(h)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights.update({
            p + "input_layernorm.weight": ones(h), p + "post_attention_layernorm.weight": ones(h),
            p + "self_attn.q_proj.weight": rand(q, h), p + "self_attn.k_proj.weight": rand(kv, h),
            p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.o_proj.weight": rand(h, q),
            p + "mlp.gate_proj.weight": rand(inter, h), p + "mlp.up_proj.weight": rand(inter, h),
            p + "mlp.down_proj.weight": rand(h, inter),
        })
        if config.get("attention_bias"):
            for name, n in (("q", q), ("k", kv), ("v", kv)):
                weights[p + f"self_attn.{name}_proj.bias"] = rand(n, scale=0.02)
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def decode_weight_bytes(config: dict) -> int:
    """Bytes of weights one decode step must read (bf16): every matrix, the norms, and the LM head."""
    h, inter, v, layers = config["hidden_size"], config["intermediate_size"], config["vocab_size"], \
        config["num_hidden_layers"]
    d = config["head_dim"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * inter + 2 * h
    return 2 * (layers * per_layer + v * h + h)
