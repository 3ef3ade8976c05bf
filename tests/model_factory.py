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


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def hf_model_dir(tmp_path_factory) -> Path:
    """A small llama model directory (fp32, untied, one safetensors file)."""
    return make_hf_model(tmp_path_factory.mktemp("llama"), arch="llama")
