"""Small test models built locally: a byte-level BPE tokenizer, HF safetensors models, GGUF files.

Nothing here downloads anything. The tokenizer is trained with ``tokenizers`` on a built-in corpus;
models are built with transformers' own classes (random weights, real architectures) and saved in the
real file formats, so loaders and the engine are tested against what they will meet in the wild.

Import the fixtures into a test module to use them::

    from tests.model_factory import hf_model_dir, tokenizer_dir  # noqa: F401  (pytest fixtures)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SPECIAL_TOKENS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
BOS_TOKEN, EOS_TOKEN, IM_START, IM_END = SPECIAL_TOKENS
TOKENIZER_VOCAB_SIZE = 384

# ChatML, the format Qwen models use: each message framed by <|im_start|>role ... <|im_end|>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time, there was a little robot who loved to count: one, two, three, four, five.",
    "A kernel computes a block of the output; the launcher chooses the grid and checks the inputs.",
    "Paged attention stores keys and values in fixed-size blocks addressed through a block table.",
    "Hello, world! How are you today? I am fine, thank you. What is the capital of France? Paris.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 3.14159 2.71828",
    "Émile a mangé une crème brûlée à Zürich; naïve café façade — 東京 日本語 한국어 😀 🚀",
    "The engine schedules requests, runs the model, samples tokens, and streams text back.",
    "Tokens are merged pair by pair; the most frequent pair becomes a new token each round.",
]

ARCH_CONFIGS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
}

SMALL_MODEL = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
)


def make_tokenizer(directory, add_bos_token: bool = False, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """Train a byte-level BPE on CORPUS; write tokenizer.json + tokenizer_config.json into ``directory``.

    Special tokens take ids 0..3 (<s>, </s>, <|im_start|>, <|im_end|>); EOS is </s>, the chat turn end
    <|im_end|> is listed as an EOS id in generation_config.json by ``make_hf_model``. ``add_bos_token``
    makes ``encode`` prepend <s> (llama-style); otherwise nothing is added (Qwen-style).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    if add_bos_token:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
            special_tokens=[(BOS_TOKEN, tok.token_to_id(BOS_TOKEN))],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "add_bos_token": add_bos_token,
        "add_eos_token": False,
        "model_max_length": 256,
        "added_tokens_decoder": {
            str(tok.token_to_id(t)): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                      "normalized": False, "single_word": False}
            for t in SPECIAL_TOKENS
        },
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return directory


def tokenizer_vocab_size(directory) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(directory) / "tokenizer.json")).get_vocab_size(with_added_tokens=True)


def make_hf_config(arch: str = "llama", vocab_size: int = TOKENIZER_VOCAB_SIZE, tie_word_embeddings: bool = False,
                   dtype: torch.dtype = torch.float32, **config_overrides):
    """A transformers config object for a small model of ``arch``."""
    import transformers

    if arch not in ARCH_CONFIGS:
        raise ValueError(f"arch must be one of {sorted(ARCH_CONFIGS)}, got {arch!r}")
    config_cls = getattr(transformers, ARCH_CONFIGS[arch][0])
    kwargs = dict(SMALL_MODEL, vocab_size=vocab_size, tie_word_embeddings=tie_word_embeddings,
                  bos_token_id=0, eos_token_id=1)
    if arch == "qwen2":
        kwargs["attention_bias"] = True  # Qwen2's q/k/v projections carry biases; the loader must keep them
    kwargs.update(config_overrides)
    config = config_cls(**kwargs)
    config.architectures = [ARCH_CONFIGS[arch][1]]
    config.dtype = dtype
    return config


def make_hf_model(directory, arch: str = "llama", tie_word_embeddings: bool = False, dtype: torch.dtype = torch.float32,
                  seed: int = 0, max_shard_size: str | int | None = None, add_bos_token: bool | None = None,
                  generation_config: dict | None = None, **config_overrides) -> Path:
    """Build a small random-weight ``arch`` model with transformers and save it as an HF directory.

    Writes config.json, model.safetensors (or shards + model.safetensors.index.json when
    ``max_shard_size`` is small, e.g. "40KB"), the tokenizer files and generation_config.json.
    Weights are drawn from ``seed`` and scaled up from transformers' tiny init so that logits vary
    enough for greedy decoding to be a meaningful comparison.
    """
    import transformers

    directory = Path(directory)
    make_tokenizer(directory, add_bos_token=(arch in ("llama", "mistral")) if add_bos_token is None else add_bos_token)
    config = make_hf_config(arch, tokenizer_vocab_size(directory), tie_word_embeddings, dtype, **config_overrides)
    model_cls = getattr(transformers, ARCH_CONFIGS[arch][1])
    torch.manual_seed(seed)
    model = model_cls(config).to(dtype).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                param.copy_(1.0 + 0.1 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(torch.randn(param.shape, generator=generator) / param.shape[-1] ** 0.5)
    save_kwargs = {"max_shard_size": max_shard_size} if max_shard_size is not None else {}
    model.save_pretrained(directory, **save_kwargs)
    defaults = {"bos_token_id": 0, "eos_token_id": [1, 3], "do_sample": True, "temperature": 0.7, "top_p": 0.9}
    if generation_config is not None:
        defaults.update(generation_config)
    (directory / "generation_config.json").write_text(json.dumps(defaults, indent=2))
    return directory


def load_hf_model(directory):
    """The transformers model for an HF directory (the independent reference for loader/engine tests)."""
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(str(directory)).eval()


# GGUF: written independently of the loader (its own name table and permutation), as llama.cpp's converter
# writes them, so that loading a file back to the HF weights is a real check of the loader.
_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
_GGUF_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_GGUF_BLOCK = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def gguf_tensor_name(hf_name: str) -> str:
    stem, kind = hf_name.rsplit(".", 1)
    if stem in _GGUF_TOP:
        return f"{_GGUF_TOP[stem]}.{kind}"
    _, _, layer, rest = stem.split(".", 3)
    return f"blk.{layer}.{_GGUF_BLOCK[rest]}.{kind}"


def llama_cpp_permute(rows, num_heads: int):
    """llama.cpp's converter: within each head, rows of the two rope halves interleaved pairwise."""
    shape = rows.shape
    return rows.reshape(num_heads, 2, shape[0] // num_heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def random_k_quantizer(qtype, seed: int = 0):
    """A ``quantizer`` for :func:`make_gguf_model` that writes every 2-D weight but the embedding as random
    well-formed ``qtype`` blocks (the gguf package cannot quantize K-quants), and the dict it fills with
    the blocks it wrote, by tensor name."""
    from kernels.gguf_formats import random_blocks

    generator = torch.Generator().manual_seed(seed)
    written = {}

    def quantize(name, array):
        if array.ndim != 2 or name == "model.embed_tokens.weight":
            return None
        blocks = random_blocks(int(qtype), array.shape[0], array.shape[1], generator=generator).numpy()
        written[name] = blocks
        return blocks, qtype

    return quantize, written


def make_gguf_model(path, arch: str = "llama", qtype=None, hf_dir=None, embed_qtype=None, permute: bool = True,
                    tokenizer_metadata: bool = True, quantizer=None, extra_tensors: dict | None = None,
                    **hf_kwargs) -> Path:
    """Write a GGUF of a small ``arch`` model; 2-D weights quantized to ``qtype`` by gguf's own quantizer.

    ``qtype`` defaults to Q8_0 (any type ``gguf.quants.quantize`` implements: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
    BF16, F16, F32, TQ2_0, ...); norms stay F32. The HF model is built with ``make_hf_model`` into
    ``hf_dir`` (default: a sibling folder ``<stem>-hf``) so tests can compare against it. llama-arch q/k
    rows are permuted as llama.cpp's converter does (``permute=False`` writes them unpermuted).
    ``quantizer(hf_name, array)`` may return ``(uint8 blocks, qtype)`` to write a tensor some other way
    (e.g. random K-quant blocks, which gguf's Python quantizer cannot produce), or None for the default.
    ``extra_tensors`` (GGUF name -> float32 array) are written as they are (e.g. rope_freqs.weight).
    """
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    qtype = gguf.GGMLQuantizationType.Q8_0 if qtype is None else gguf.GGMLQuantizationType(qtype)
    embed_qtype = qtype if embed_qtype is None else gguf.GGMLQuantizationType(embed_qtype)
    hf_dir = Path(hf_dir) if hf_dir is not None else path.parent / f"{path.stem}-hf"
    if not (hf_dir / "config.json").exists():
        make_hf_model(hf_dir, arch=arch, **hf_kwargs)
    config = json.loads((hf_dir / "config.json").read_text())
    weights = {}
    for file in sorted(hf_dir.glob("*.safetensors")):
        weights.update(load_file(str(file)))

    writer = gguf.GGUFWriter(str(path), _GGUF_ARCH[arch])
    writer.add_name(f"tiny-{arch}")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_key_length(config["head_dim"])
    writer.add_value_length(config["head_dim"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_parameters"]["rope_theta"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    if tokenizer_metadata:
        _add_gguf_tokenizer(writer, hf_dir)

    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    for name, tensor in weights.items():
        array = tensor.float().numpy()
        if permute and _GGUF_ARCH[arch] == "llama" and ".self_attn.q_proj." in name:
            array = llama_cpp_permute(array, heads)
        elif permute and _GGUF_ARCH[arch] == "llama" and ".self_attn.k_proj." in name:
            array = llama_cpp_permute(array, kv_heads)
        target = embed_qtype if name == "model.embed_tokens.weight" else qtype
        custom = quantizer(name, array) if quantizer is not None else None
        if custom is not None:
            writer.add_tensor(gguf_tensor_name(name), custom[0], raw_dtype=gguf.GGMLQuantizationType(custom[1]))
        elif array.ndim == 2 and target != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_tensor_name(name), gguf.quants.quantize(np.ascontiguousarray(array), target),
                              raw_dtype=target)
        else:
            writer.add_tensor(gguf_tensor_name(name), np.ascontiguousarray(array, dtype=np.float32))
    for name, array in (extra_tensors or {}).items():
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_gguf_tokenizer(writer, hf_dir: Path) -> None:
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    tok_config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    vocab = dict(tok["model"]["vocab"])
    special = {t["id"] for t in tok["added_tokens"] if t["special"]}
    for t in tok["added_tokens"]:
        vocab[t["content"]] = t["id"]
    tokens = [None] * len(vocab)
    for text, i in vocab.items():
        tokens[i] = text
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_add_bos_token(bool(tok_config.get("add_bos_token")))
    if tok_config.get("chat_template"):
        writer.add_chat_template(tok_config["chat_template"])


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def hf_model_dir(tmp_path_factory) -> Path:
    """A small llama model directory (fp32, untied, one safetensors file)."""
    return make_hf_model(tmp_path_factory.mktemp("llama"), arch="llama")
