"""GGUF models: quantized weights kept in their blocks (``gguf_linear``) give the dequantized model's output.

Q8_0 and Q4_0 files are written with the gguf package and quantized by its own quantizer
(tests/model_factory.py); the reference is the original transformers model with every 2-D weight replaced
by ``dequantize(quantize(w))``. gguf's Python quantizer cannot produce K-quants, so Q4_K and Q6_K files
carry random well-formed blocks in every 2-D weight but the embedding, and the reference holds
``dequantize(blocks)`` of those same blocks. Either way the reference comes from the gguf package:
independent of the engine's loader and of its GGUF kernels. Logits must agree to float32 rounding (the
quantization error is the same on both sides), greedy continuations exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.sampling_params import SamplingParams
from tests.engine_helpers import (
    BACKENDS,
    engine_device,
    hf_greedy,
    hf_next_logits,
    make_engine,
    prompt_batch,
    run_to_completion,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import load_hf_model

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed")
Q = gguf.GGMLQuantizationType

pytestmark = pytest.mark.engine

# K-quant super-blocks span 256 weights along a row, so the K-quant models are this wide.
K_QUANT_WIDE = dict(hidden_size=256, intermediate_size=256, head_dim=64)


def _roundtrip_reference(hf_dir, qtype):
    model = load_hf_model(hf_dir)
    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.dim() == 2:
                q = gguf.quants.quantize(param.detach().float().numpy(), qtype)
                param.copy_(torch.from_numpy(gguf.quants.dequantize(q, qtype)).reshape(param.shape))
    return model


def _unpermute(rows: np.ndarray, num_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's q/k row permutation (``llama_cpp_permute``): back to the HF row order."""
    shape = rows.shape
    return rows.reshape(num_heads, shape[0] // num_heads // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _k_quant_model(tmp_path, arch, qtype):
    """A GGUF whose 2-D weights (the embedding aside) are random ``qtype`` blocks, and its reference:
    the transformers model holding ``gguf.quants.dequantize`` of those very blocks, in HF row order."""
    from tests.model_factory import make_gguf_model, random_k_quantizer

    k_quant, written = random_k_quantizer(qtype, seed=int(qtype))
    path = make_gguf_model(tmp_path / f"{arch}.gguf", arch=arch, qtype=Q.F32, quantizer=k_quant, **K_QUANT_WIDE)
    ref = load_hf_model(tmp_path / f"{arch}-hf")
    config = ref.config
    params = dict(ref.named_parameters())
    assert len(written) == sum(p.dim() == 2 for p in params.values()) - 1, "every 2-D weight but the embedding"
    with torch.no_grad():
        for name, blocks in written.items():
            dense = gguf.quants.dequantize(blocks, qtype).astype(np.float32)
            if arch == "llama" and ".self_attn.q_proj." in name:  # written permuted, as llama.cpp does
                dense = _unpermute(dense, config.num_attention_heads)
            elif arch == "llama" and ".self_attn.k_proj." in name:
                dense = _unpermute(dense, config.num_key_value_heads)
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(dense)).reshape(params[name].shape))
    return path, ref


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qtype,arch", [(Q.Q8_0, "llama"), (Q.Q4_0, "qwen2"), (Q.Q4_K, "llama"), (Q.Q6_K, "qwen2")])
def test_gguf_model_matches_dequantized_reference(tmp_path, backend, qtype, arch):
    from tests.model_factory import make_gguf_model

    if qtype in (Q.Q4_K, Q.Q6_K):
        path, ref = _k_quant_model(tmp_path, arch, qtype)
    else:
        path = make_gguf_model(tmp_path / f"{arch}.gguf", arch=arch, qtype=qtype)
        ref = _roundtrip_reference(tmp_path / f"{arch}-hf", qtype)
    engine = make_engine(path, backend)
    ref = ref.to(engine_device(backend))
    prompts = prompt_batch(engine.model_config.vocab_size, 4, seed=8)
    ours = engine.runner.prompt_logits(prompts).cpu()
    expected = hf_next_logits(ref, prompts).cpu()
    assert expected.std(dim=-1).min() > 0.1, "reference logits too flat to be a meaningful comparison"
    torch.testing.assert_close(ours, expected, atol=1e-3 if backend == "torch" else 3e-2, rtol=0)
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    results = run_to_completion(engine, [(p, params) for p in prompts[:2]])
    for prompt, result in zip(prompts[:2], results.values(), strict=True):
        assert result["tokens"] == hf_greedy(ref, prompt, 16)
