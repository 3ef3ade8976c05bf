"""What the engine needs to know about a model, read from a Hugging Face config.json (or GGUF metadata).

All four supported architectures are the same decoder (RMSNorm -> attention with RoPE -> RMSNorm ->
SwiGLU MLP); they differ only in small switches recorded here: q/k/v biases (Qwen2), per-head RMSNorm
on q and k before RoPE (Qwen3), tied input/output embeddings, and the rope base and scaling.

Configs written by transformers >= 5 keep the rope base and scaling in ``rope_parameters``; older ones
use top-level ``rope_theta`` and ``rope_scaling``. Both are read; ``rope_scaling`` is None for plain
RoPE and otherwise a dict with a ``rope_type`` key ("linear", "dynamic", "yarn", "llama3", ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from engine.loader.errors import ModelLoadError, UnsupportedModelError

__all__ = ["SUPPORTED_ARCHITECTURES", "ModelConfig", "ModelLoadError", "UnsupportedModelError"]

# HF class name (config.json "architectures") -> the engine's architecture name.
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
_MODEL_TYPES = {arch: arch for arch in SUPPORTED_ARCHITECTURES.values()}

_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


@dataclass
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    qk_norm: bool
    dtype: torch.dtype
    bos_token_id: int | None
    eos_token_ids: list[int] = field(default_factory=list)
    # Mistral v0.1 attends within a 4096-token window; the engine attends to the whole context, which
    # is exact only below this length. None when the model has no window (or does not use it).
    sliding_window: int | None = None

    @classmethod
    def from_hf(cls, config: dict, generation_config: dict | None = None) -> ModelConfig:
        """Build from a parsed config.json (and optionally generation_config.json, for its EOS ids).

        Raises UnsupportedModelError for an architecture outside SUPPORTED_ARCHITECTURES and
        ModelLoadError for a missing or invalid hyper-parameter.
        """
        if not isinstance(config, dict):
            raise ModelLoadError(f"config.json must hold a JSON object, got {type(config).__name__}")
        arch = _architecture(config)
        heads = _positive_int(config, "num_attention_heads")
        hidden = _positive_int(config, "hidden_size")
        head_dim = config.get("head_dim") or hidden // heads
        rope_theta, rope_scaling = _rope(config)
        window = config.get("sliding_window")
        if arch == "qwen2" and not config.get("use_sliding_window", False):
            window = None
        eos = _token_ids((generation_config or {}).get("eos_token_id")) + _token_ids(config.get("eos_token_id"))
        made = cls(
            architecture=arch,
            vocab_size=_positive_int(config, "vocab_size"),
            hidden_size=hidden,
            intermediate_size=_positive_int(config, "intermediate_size"),
            num_hidden_layers=_positive_int(config, "num_hidden_layers"),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            # Qwen2 always has q/k/v biases (older Qwen2 configs do not even have the key).
            attention_bias=True if arch == "qwen2" else bool(config.get("attention_bias", False)),
            qk_norm=arch == "qwen3",
            dtype=_dtype(config.get("dtype") or config.get("torch_dtype") or "float32"),
            bos_token_id=_first(_token_ids(config.get("bos_token_id"))),
            eos_token_ids=list(dict.fromkeys(eos)),
            sliding_window=int(window) if window else None,
        )
        made.validate()
        return made

    def validate(self) -> None:
        """Check the relations the model relies on; ModelLoadError names the offending fields."""
        if self.num_attention_heads % self.num_key_value_heads:
            raise ModelLoadError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim <= 0 or self.head_dim % 2:
            raise ModelLoadError(f"head_dim must be a positive even number for RoPE, got {self.head_dim}")

    @property
    def num_parameters(self) -> int:
        """Parameter count implied by the shapes (embeddings counted once when tied)."""
        h, i, v, hd = self.hidden_size, self.intermediate_size, self.vocab_size, self.head_dim
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        attn = h * q + 2 * h * kv + q * h + (q + 2 * kv if self.attention_bias else 0) + (2 * hd if self.qk_norm else 0)
        layer = attn + 3 * h * i + 2 * h
        return v * h * (1 if self.tie_word_embeddings else 2) + self.num_hidden_layers * layer + h


def _architecture(config: dict) -> str:
    supported = ", ".join(f"{cls} ({name})" for cls, name in SUPPORTED_ARCHITECTURES.items())
    names = config.get("architectures") or []
    for name in names:
        if name in SUPPORTED_ARCHITECTURES:
            return SUPPORTED_ARCHITECTURES[name]
    model_type = config.get("model_type")
    if not names and model_type in _MODEL_TYPES:
        return _MODEL_TYPES[model_type]
    found = ", ".join(names) or f"model_type {model_type!r}"
    raise UnsupportedModelError(f"unsupported model architecture {found}; supported: {supported}")


def _rope(config: dict) -> tuple[float, dict | None]:
    params = dict(config.get("rope_parameters") or {})
    theta = params.pop("rope_theta", None) or config.get("rope_theta") or 10000.0
    scaling = config.get("rope_scaling") or params or None
    if scaling is not None:
        scaling = dict(scaling)
        scaling.pop("rope_theta", None)
        kind = scaling.pop("type", None)
        scaling.setdefault("rope_type", kind or "default")
        if scaling["rope_type"] == "default":
            scaling = None
    return float(theta), scaling


def _positive_int(config: dict, key: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelLoadError(f"config field {key!r} must be a positive integer, got {value!r}")
    return value


def _dtype(name) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    key = str(name).removeprefix("torch.")
    if key not in _DTYPES:
        raise ModelLoadError(f"config dtype {name!r} is not supported; expected one of float32, float16, bfloat16")
    return _DTYPES[key]


def _token_ids(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _first(ids: list[int]) -> int | None:
    return ids[0] if ids else None
