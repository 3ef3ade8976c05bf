"""``load_model_source``: turn a directory, a .gguf file or a hub id into a ModelSource.

A ModelSource knows the model's config, tokenizer and generation defaults up front (cheap: headers and
JSON only) and yields the weights on demand with ``iter_weights(device, dtype)``. All names and shapes
are checked against the config before the first tensor is copied.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.loader.errors import ModelLoadError
from engine.loader.paths import check_inside
from engine.model_config import ModelConfig
from engine.tokenizer import Tokenizer, TokenizerError

log = logging.getLogger(__name__)

# generation_config.json key -> SamplingParams field. Taken whatever ``do_sample`` says, as vLLM does:
# they are the model author's recommended sampling settings.
GENERATION_DEFAULT_KEYS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
    "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens",
}


@dataclass
class ModelSource:
    config: ModelConfig
    tokenizer: Tokenizer
    generation_defaults: dict
    path: Path
    format: str  # "safetensors" | "gguf"
    weight_files: list[Path] = field(default_factory=list)
    _iter_weights: Callable[..., Iterator] | None = field(default=None, repr=False)

    def iter_weights(self, device="cpu", dtype: torch.dtype | None = None) -> Iterator[tuple[str, object]]:
        """Yield ``(hf_name, tensor | GGUFWeight)``; float tensors cast to ``dtype`` (default: config.dtype)."""
        return self._iter_weights(torch.device(device), dtype or self.config.dtype)


def load_model_source(path_or_id: str, revision: str | None = None, offline: bool | None = None) -> ModelSource:
    """A local HF directory, a local .gguf file, or a hub id ("org/name", "org/name/file.gguf")."""
    from engine.loader.hub import resolve_model_path

    path = resolve_model_path(str(path_or_id), revision=revision, offline=offline)
    if path.is_dir() and not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:  # a directory holding one GGUF file (e.g. a downloaded GGUF repo)
            path = ggufs[0]
        elif ggufs:
            raise ModelLoadError(f"no config.json, and several GGUF files ({', '.join(g.name for g in ggufs)}); "
                                 "name the one to load", path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError("a model file must be a .gguf file; for safetensors pass the model directory", path)
        from engine.loader.gguf_loader import load_gguf_source

        return load_gguf_source(path)
    return load_hf_source(path)


def load_hf_source(model_dir: Path) -> ModelSource:
    """A Hugging Face model directory: config.json, safetensors, tokenizer files, generation_config.json."""
    from engine.loader import safetensors_loader as st
    from engine.loader.weights import check_weights

    model_dir = Path(model_dir)
    config_json = _read_json(model_dir, "config.json", required=True)
    generation = _read_json(model_dir, "generation_config.json", required=False)
    try:
        config = ModelConfig.from_hf(config_json, generation)
    except ModelLoadError as err:
        if err.path is not None:
            raise
        raise type(err)(err.problem, model_dir / "config.json") from err
    try:
        tokenizer = Tokenizer.from_dir(model_dir, eos_token_ids=config.eos_token_ids)
    except TokenizerError as err:
        raise ModelLoadError(str(err), model_dir) from err
    _merge_eos(config, tokenizer)
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(f"tokenizer has {tokenizer.vocab_size} tokens but the model's vocab_size is "
                             f"{config.vocab_size}; the tokenizer does not belong to this model", model_dir)

    files = st.find_weight_files(model_dir)
    found = st.tensor_shapes(files)
    names = check_weights(config, {name: shape for name, (shape, _) in found.items()}, model_dir)
    names_by_file: dict[Path, list[str]] = {}
    for name in names:
        names_by_file.setdefault(found[name][1], []).append(name)

    def iter_weights(device, dtype):
        return st.iter_safetensors(names_by_file, device, dtype)

    return ModelSource(config, tokenizer, generation_defaults(generation), model_dir, "safetensors", files,
                       iter_weights)


def generation_defaults(generation: dict) -> dict:
    """SamplingParams-named defaults from a parsed generation_config.json."""
    return {ours: generation[theirs] for theirs, ours in GENERATION_DEFAULT_KEYS.items()
            if generation.get(theirs) is not None}


def _merge_eos(config: ModelConfig, tokenizer: Tokenizer) -> None:
    """One EOS list for both: generation_config's, then config.json's, then the tokenizer's own."""
    merged = list(dict.fromkeys(config.eos_token_ids + tokenizer.eos_token_ids))
    config.eos_token_ids = merged
    tokenizer.eos_token_ids = merged
    if config.bos_token_id is None:
        config.bos_token_id = tokenizer.bos_token_id


def _read_json(model_dir: Path, name: str, required: bool) -> dict:
    path = model_dir / name
    if not path.exists():
        if required:
            raise ModelLoadError(f"no {name}; a Hugging Face model directory needs one", model_dir)
        return {}
    check_inside(model_dir, path, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot parse {name}: {err}", path) from err
    if not isinstance(data, dict):
        raise ModelLoadError(f"{name} must hold a JSON object", path)
    return data
