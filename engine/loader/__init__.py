"""Model loading: local HF directories (safetensors), GGUF files, and hub ids through the hub cache.

``load_model_source(path_or_id)`` returns a ``ModelSource`` whose ``iter_weights(device, dtype)`` yields
``(hf_name, tensor | GGUFWeight)``. Names are exported lazily so that importing the errors module (as
engine.model_config does) does not pull in safetensors, gguf or huggingface_hub.
"""

from __future__ import annotations

from engine.loader.errors import ModelLoadError, ModelNotFoundError, UnsupportedModelError

__all__ = [
    "GGUFWeight", "ModelLoadError", "ModelNotFoundError", "ModelSource", "UnsupportedModelError",
    "load_model_source",
]

_LAZY = {
    "GGUFWeight": "engine.loader.weights",
    "ModelSource": "engine.loader.source",
    "load_model_source": "engine.loader.source",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
