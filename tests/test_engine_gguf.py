"""GGUF models: quantized weights kept in their blocks (``gguf_linear``) give the dequantized model's output.

The file is written with the gguf package and quantized by its own quantizer (tests/model_factory.py).
The reference is the original transformers model with every 2-D weight replaced by
``dequantize(quantize(w))``, computed with the gguf package: independent of the engine's loader and of
its GGUF kernels. Logits must agree to float32 rounding (the quantization error is the same on both
sides), greedy continuations exactly.
"""

from __future__ import annotations

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

pytestmark = pytest.mark.engine


def _roundtrip_reference(hf_dir, qtype):
    model = load_hf_model(hf_dir)
    with torch.no_grad():
        for _, param in model.named_parameters():
            if param.dim() == 2:
                q = gguf.quants.quantize(param.detach().float().numpy(), qtype)
                param.copy_(torch.from_numpy(gguf.quants.dequantize(q, qtype)).reshape(param.shape))
    return model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qtype,arch", [(gguf.GGMLQuantizationType.Q8_0, "llama"),
                                        (gguf.GGMLQuantizationType.Q4_0, "qwen2")])
def test_gguf_model_matches_dequantized_reference(tmp_path, backend, qtype, arch):
    from tests.model_factory import make_gguf_model

    path = make_gguf_model(tmp_path / f"{arch}.gguf", arch=arch, qtype=qtype)
    engine = make_engine(path, backend)
    ref = _roundtrip_reference(tmp_path / f"{arch}-hf", qtype).to(engine_device(backend))
    prompts = prompt_batch(engine.model_config.vocab_size, 4, seed=8)
    ours = engine.runner.prompt_logits(prompts).cpu()
    expected = hf_next_logits(ref, prompts).cpu()
    torch.testing.assert_close(ours, expected, atol=1e-3 if backend == "torch" else 3e-2, rtol=0)
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    results = run_to_completion(engine, [(p, params) for p in prompts[:2]])
    for prompt, result in zip(prompts[:2], results.values(), strict=True):
        assert result["tokens"] == hf_greedy(ref, prompt, 16)
