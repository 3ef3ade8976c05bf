"""Model architectures by name. Every supported family is the one decoder in :mod:`.transformer`, with
flags from its config; an unknown architecture is refused with the list of supported ones."""

from __future__ import annotations

import torch

from engine.models.transformer import Transformer

ARCHITECTURES: dict[str, type] = {
    "llama": Transformer,    # Llama 2, 3, 3.1, 3.2 (llama3 RoPE scaling via the config)
    "mistral": Transformer,
    "qwen2": Transformer,    # Qwen2 and Qwen2.5: q/k/v biases
    "qwen3": Transformer,    # per-head q/k RMSNorm
}


def model_class(architecture: str) -> type:
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        from engine.model_config import UnsupportedModelError

        raise UnsupportedModelError(
            f"architecture {architecture!r} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}"
        ) from None


def build_model(config, ops, device: torch.device, dtype: torch.dtype):
    """An unloaded model for ``config`` (an :class:`engine.model_config.ModelConfig`)."""
    return model_class(config.architecture)(config, ops, device, dtype)
