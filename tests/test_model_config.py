"""ModelConfig.from_hf against configs written by transformers itself, old-style keys, and bad input."""

from __future__ import annotations

import pytest
import torch

from engine.loader.errors import ModelLoadError
from engine.model_config import SUPPORTED_ARCHITECTURES, ModelConfig, UnsupportedModelError
from tests.model_factory import make_hf_config

ARCHS = ["llama", "mistral", "qwen2", "qwen3"]


@pytest.mark.parametrize("arch", ARCHS)
def test_from_transformers_config(arch):
    hf = make_hf_config(arch, vocab_size=301, num_key_value_heads=1, rope_theta=50000.0)
    cfg = ModelConfig.from_hf(hf.to_dict())
    assert cfg.architecture == arch
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size) == (301, 64, 128)
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (2, 4, 1, 16)
    assert cfg.rope_theta == 50000.0 and cfg.rope_scaling is None
    assert cfg.attention_bias == (arch == "qwen2")
    assert cfg.qk_norm == (arch == "qwen3")
    assert cfg.dtype == torch.float32 and cfg.eos_token_ids == [1] and cfg.bos_token_id == 0


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tied", [False, True])
def test_parameter_count_matches_transformers(arch, tied):
    transformers = pytest.importorskip("transformers")
    hf = make_hf_config(arch, tie_word_embeddings=tied)
    model = getattr(transformers, hf.architectures[0])(hf)
    expected = sum(p.numel() for p in model.parameters())  # tied parameters are counted once
    assert ModelConfig.from_hf(hf.to_dict()).num_parameters == expected


def test_old_style_rope_keys_and_dtype():
    raw = {
        "architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 1, "num_attention_heads": 4, "rope_theta": 500000.0, "torch_dtype": "bfloat16",
        "rope_scaling": {"type": "linear", "factor": 2.0}, "max_position_embeddings": 8192, "eos_token_id": [7, 9],
    }
    cfg = ModelConfig.from_hf(raw)
    assert cfg.num_key_value_heads == 4 and cfg.head_dim == 16  # defaults: MHA, hidden / heads
    assert cfg.rope_theta == 500000.0 and cfg.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert cfg.dtype == torch.bfloat16 and cfg.eos_token_ids == [7, 9] and cfg.max_position_embeddings == 8192


def test_llama3_rope_parameters():
    raw = make_hf_config("llama").to_dict()
    raw["rope_parameters"] = {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    cfg = ModelConfig.from_hf(raw)
    assert cfg.rope_theta == 500000.0
    assert cfg.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def test_generation_config_eos_come_first_and_are_merged():
    cfg = ModelConfig.from_hf(make_hf_config("qwen2").to_dict(), {"eos_token_id": [3, 1]})
    assert cfg.eos_token_ids == [3, 1]


def test_old_qwen2_config_without_attention_bias_key_still_has_biases():
    raw = make_hf_config("qwen2").to_dict()
    raw.pop("attention_bias")
    assert ModelConfig.from_hf(raw).attention_bias


def test_mistral_sliding_window_is_recorded():
    assert ModelConfig.from_hf(make_hf_config("mistral", sliding_window=4096).to_dict()).sliding_window == 4096
    assert ModelConfig.from_hf(make_hf_config("mistral", sliding_window=None).to_dict()).sliding_window is None


def test_unsupported_architecture_lists_supported_ones():
    raw = make_hf_config("llama").to_dict()
    raw["architectures"] = ["GPT2LMHeadModel"]
    with pytest.raises(UnsupportedModelError, match="GPT2LMHeadModel") as err:
        ModelConfig.from_hf(raw)
    for name in SUPPORTED_ARCHITECTURES:
        assert name in str(err.value)


@pytest.mark.parametrize(("key", "value"), [("hidden_size", None), ("num_hidden_layers", 0), ("vocab_size", "many"),
                                            ("num_attention_heads", True)])
def test_invalid_field_is_named(key, value):
    raw = make_hf_config("llama").to_dict()
    raw[key] = value
    with pytest.raises(ModelLoadError, match=key):
        ModelConfig.from_hf(raw)


def test_heads_must_group_evenly():
    raw = make_hf_config("llama").to_dict()
    raw["num_key_value_heads"] = 3
    with pytest.raises(ModelLoadError, match="num_key_value_heads"):
        ModelConfig.from_hf(raw)


def test_unknown_dtype_is_named():
    raw = make_hf_config("llama").to_dict()
    raw["dtype"] = "float8"
    with pytest.raises(ModelLoadError, match="float8"):
        ModelConfig.from_hf(raw)
