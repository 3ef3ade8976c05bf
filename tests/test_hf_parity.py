"""The engine's model against Hugging Face transformers, which nobody here wrote.

For each supported architecture (Llama, Llama 3 with its rope scaling, Mistral, Qwen2 with q/k/v biases,
Qwen3 with q/k norms; tied and untied embeddings) a small random-weight model is built with
transformers' own classes and saved, then loaded by tritonforge. Compared: next-token logits on a batch
of prompts of different lengths, and greedy continuations of 32 tokens decoded through the paged KV
cache (prefill, then decode steps), which must be identical.

Tolerances for the logits: float32 with the torch references: 1e-4 absolute (observed ~3e-6 on logits of
magnitude ~4). On the GPU the Triton kernels compute float32 products in TF32 (10-bit mantissa), so the
bound there is 2e-2 absolute; bf16 models are compared on the GPU only, within 1.5e-1 absolute (bf16 has
an 8-bit mantissa and each layer rounds its activations).
"""

from __future__ import annotations

import pytest
import torch

from tests.engine_helpers import (
    BACKENDS,
    engine_device,
    hf_greedy,
    hf_next_logits,
    make_engine,
    prompt_batch,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import load_hf_model, make_hf_model

pytestmark = pytest.mark.engine

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}

MODELS = {
    "llama": dict(arch="llama"),
    "llama-tied": dict(arch="llama", tie_word_embeddings=True),
    "llama3-scaled": dict(arch="llama", rope_scaling=LLAMA3_SCALING, rope_theta=500000.0),
    "mistral": dict(arch="mistral"),
    "qwen2": dict(arch="qwen2"),
    "qwen2-tied": dict(arch="qwen2", tie_word_embeddings=True),
    "qwen3": dict(arch="qwen3"),
    "qwen3-tied": dict(arch="qwen3", tie_word_embeddings=True),
}
LOGIT_ATOL = {("torch", torch.float32): 1e-4, ("triton", torch.float32): 2e-2, ("triton", torch.bfloat16): 1.5e-1}


@pytest.fixture(scope="module", params=list(MODELS))
def model_case(request, tmp_path_factory):
    name = request.param
    path = make_hf_model(tmp_path_factory.mktemp(name), **MODELS[name])
    return name, path


def _hf(path, backend, dtype):
    return load_hf_model(path).to(engine_device(backend), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_next_token_logits_match_transformers(model_case, backend):
    _, path = model_case
    engine = make_engine(path, backend)
    vocab = engine.model_config.vocab_size
    prompts = prompt_batch(vocab, 5, seed=1, max_len=70)  # past 64 tokens: llama3 scaling's long wavelengths
    ours = engine.runner.prompt_logits(prompts).cpu()
    ref = hf_next_logits(_hf(path, backend, torch.float32), prompts).cpu()
    assert ref.abs().max() > 1.0, "reference logits too flat to be a meaningful comparison"
    torch.testing.assert_close(ours, ref, atol=LOGIT_ATOL[(backend, torch.float32)], rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_continuation_matches_transformers(model_case, backend):
    from engine.sampling_params import SamplingParams
    from tests.engine_helpers import run_to_completion

    _, path = model_case
    engine = make_engine(path, backend)
    hf = _hf(path, backend, torch.float32)
    prompts = prompt_batch(engine.model_config.vocab_size, 3, seed=2)
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    results = run_to_completion(engine, [(p, params) for p in prompts])
    for prompt, result in zip(prompts, results.values(), strict=True):
        assert result["reason"] == "length"
        assert result["tokens"] == hf_greedy(hf, prompt, 32)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["llama", "qwen2-tied", "qwen3"])
def test_bf16_logits_close_to_transformers(name, tmp_path):
    path = make_hf_model(tmp_path / name, **MODELS[name])
    engine = make_engine(path, "triton", dtype=torch.bfloat16)
    prompts = prompt_batch(engine.model_config.vocab_size, 4, seed=3)
    ours = engine.runner.prompt_logits(prompts).cpu()
    ref = hf_next_logits(_hf(path, "triton", torch.bfloat16), prompts).cpu()
    torch.testing.assert_close(ours, ref, atol=LOGIT_ATOL[("triton", torch.bfloat16)], rtol=0)
