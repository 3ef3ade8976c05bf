"""A small model of a real architecture, built locally with no download: for ``tritonforge demo``.

It writes what a Hugging Face checkpoint directory holds -- config.json (a Llama or Qwen3 config),
model.safetensors, tokenizer.json and tokenizer_config.json (a byte-level BPE trained here on a short
built-in text, with a ChatML chat template), generation_config.json -- so that the engine loads it
through exactly the path a downloaded model takes. The weights are random (seeded), so the text it
generates is fluent only in the sense that it is made of the corpus's tokens; the point is the machinery:
loading, paging, batching, sampling and streaming, on whatever device is present.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEMO_TEXT = (
    "Triton kernels compute attention, matrix products and normalisation on the GPU. "
    "The engine batches many requests together, keeps their keys and values in a paged cache, and "
    "samples one new token for each request at every step. A prompt that shares its beginning with an "
    "earlier one reuses the cached blocks. Small models run on a laptop; large ones need a data centre. "
    "Once upon a time a curious robot counted the stars: one, two, three, four, five, six, seven. "
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun. "
)

ARCHS = {
    "llama": ("LlamaForCausalLM", {}),
    "qwen3": ("Qwen3ForCausalLM", {"attention_bias": False}),
}


def build_demo_tokenizer(directory: Path, vocab_size: int = 512) -> int:
    """Train a byte-level BPE on the demo text; returns the vocabulary size (with special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Only ASCII characters, no lone UTF-8 bytes in the vocabulary: whatever the model samples decodes
    # to readable text.
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    # string.printable puts every ASCII character (newlines too, for chat templates) in the alphabet.
    tok.train_from_iterator([DEMO_TEXT] * 8 + DEMO_TEXT.split(". ") + [string.printable], trainer=trainer)
    tok.save(str(directory / "tokenizer.json"))
    added = {str(tok.token_to_id(t)): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                       "normalized": False, "single_word": False} for t in SPECIAL_TOKENS}
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "bos_token": None, "add_bos_token": False, "chat_template": CHATML_TEMPLATE,
        "added_tokens_decoder": added, "model_max_length": 2048}, indent=2))
    return tok.get_vocab_size(with_added_tokens=True)


def build_demo_model(directory, arch: str = "qwen3", hidden_size: int = 128, num_layers: int = 2,
                     num_heads: int = 4, num_kv_heads: int = 2, intermediate_size: int = 384,
                     max_position: int = 2048, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                     train_steps: int = 0) -> Path:
    """Write an ``arch`` model directory (random weights, then ``train_steps`` of training on the demo
    text, see :mod:`engine.demo_training`); returns its path."""
    from safetensors.torch import save_file

    if arch not in ARCHS:
        raise ValueError(f"demo arch must be one of {sorted(ARCHS)}, got {arch!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = build_demo_tokenizer(directory)
    head_dim = hidden_size // num_heads
    class_name, extra = ARCHS[arch]
    eos = [2, 0]  # <|im_end|>, <|endoftext|>
    config = {
        "architectures": [class_name], "model_type": arch, "vocab_size": vocab, "hidden_size": hidden_size,
        "intermediate_size": intermediate_size, "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads, "num_key_value_heads": num_kv_heads, "head_dim": head_dim,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": max_position,
        "tie_word_embeddings": True, "torch_dtype": str(dtype).removeprefix("torch."), "hidden_act": "silu",
        "bos_token_id": None, "eos_token_id": eos, **extra,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": eos, "temperature": 0.8, "top_p": 0.95}, indent=2))
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen) / shape[-1] ** 0.5

    def norm(n):
        return 1.0 + 0.1 * torch.randn(n, generator=gen)

    q, kv = num_heads * head_dim, num_kv_heads * head_dim
    weights = {"model.embed_tokens.weight": rand(vocab, hidden_size) * 4, "model.norm.weight": norm(hidden_size)}
    for i in range(num_layers):
        p = f"model.layers.{i}."
        weights.update({
            p + "input_layernorm.weight": norm(hidden_size), p + "post_attention_layernorm.weight": norm(hidden_size),
            p + "self_attn.q_proj.weight": rand(q, hidden_size), p + "self_attn.k_proj.weight": rand(kv, hidden_size),
            p + "self_attn.v_proj.weight": rand(kv, hidden_size), p + "self_attn.o_proj.weight": rand(hidden_size, q),
            p + "mlp.gate_proj.weight": rand(intermediate_size, hidden_size),
            p + "mlp.up_proj.weight": rand(intermediate_size, hidden_size),
            p + "mlp.down_proj.weight": rand(hidden_size, intermediate_size),
        })
        if arch == "qwen3":
            weights[p + "self_attn.q_norm.weight"] = norm(head_dim)
            weights[p + "self_attn.k_norm.weight"] = norm(head_dim)
    if train_steps > 0:
        from tokenizers import Tokenizer

        from engine.demo_training import train

        ids = Tokenizer.from_file(str(directory / "tokenizer.json")).encode(DEMO_TEXT * 2).ids
        train(weights, config, ids, train_steps, seed=seed)
    save_file({k: v.to(dtype).contiguous() for k, v in weights.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    return directory
