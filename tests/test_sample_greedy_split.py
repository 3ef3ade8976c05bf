"""The split-argmax variant of ``sample`` (kernels/sample_greedy_split.py): greedy batches against
torch's argmax and log_softmax, ties across chunk edges, invalid rows, and every other batch handed to
``sample`` unchanged. In the interpreter chunks are 64 tokens, so small vocabularies cross several."""

from __future__ import annotations

import pytest
import torch

from kernels import registry
from kernels._sampling_params import RequestParams as P
from kernels.sample_greedy_split import CHUNK_INTERPRETER
from kernels.sampling import SamplingTensors, sample

pytestmark = pytest.mark.sample


def _split(device):
    return registry.resolve("sample", "sample_greedy_split", device)


def _tensors(params, vocab, device):
    B = len(params)
    return SamplingTensors.build(params, [[]] * B, [[]] * B, list(range(B)), vocab, device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("vocab", [1, 63, 64, 65, 300, 1000])
def test_greedy_batches_match_argmax_and_log_softmax(device, dtype, vocab):
    g = torch.Generator(device=device).manual_seed(vocab)
    logits = (4 * torch.randn(5, vocab, generator=g, device=device)).to(dtype)
    out = _split(device)(logits, _tensors([P(temperature=0.0)] * 5, vocab, device))
    z = logits.float()
    want = z.argmax(1)
    assert out.token_ids.tolist() == want.tolist() == out.host_token_ids
    lp = torch.log_softmax(z.double(), 1).gather(1, want[:, None])[:, 0]
    torch.testing.assert_close(out.logprobs.double(), lp, rtol=1e-5, atol=1e-5)
    assert out.top_ids is None and out.top_logprobs is None


def test_ties_across_chunks_go_to_the_lowest_index(device):
    c = CHUNK_INTERPRETER if device.type == "cpu" else 4096
    vocab = 3 * c + 7
    logits = torch.zeros(3, vocab, device=device)
    logits[0, [c + 5, 2 * c + 1]] = 3.0            # in chunks 1 and 2: the first wins
    logits[1, [2 * c + 6, 5, c]] = 3.0             # three chunks: index 5
    logits[2, [vocab - 1]] = 1.0                   # the last token of a partial chunk
    logits[2, :3] = float("-inf")
    out = _split(device)(logits, _tensors([P(temperature=0.0)] * 3, vocab, device))
    assert out.token_ids.tolist() == [c + 5, 5, vocab - 1]


def test_invalid_rows_raise_naming_them(device):
    logits = torch.randn(4, 200, device=device)
    logits[1, 150] = float("nan")
    logits[3, :] = float("-inf")
    with pytest.raises(ValueError, match=r"rows \[1, 3\] hold NaN"):
        _split(device)(logits, _tensors([P(temperature=0.0)] * 4, 200, device))
    logits[2, 7] = float("inf")
    with pytest.raises(ValueError, match=r"rows \[1, 2, 3\]"):
        _split(device)(logits, _tensors([P(temperature=0.0)] * 4, 200, device))


@pytest.mark.parametrize("params", [
    [P(temperature=0.0), P(temperature=0.8, top_k=5)],            # not all greedy
    [P(temperature=0.0, repetition_penalty=1.3)],                 # an edit
    [P(temperature=0.0, logprobs=3)],                             # top logprobs asked
], ids=["mixed", "penalty", "top-logprobs"])
def test_other_batches_are_sample_unchanged(device, params):
    g = torch.Generator(device=device).manual_seed(7)
    logits = torch.randn(len(params), 300, generator=g, device=device)
    B = len(params)
    st = SamplingTensors.build(params, [[1, 2, 3]] * B, [[4, 4]] * B, list(range(B)), 300, device)
    got, want = _split(device)(logits, st), sample(logits, st)
    assert got.token_ids.tolist() == want.token_ids.tolist()
    torch.testing.assert_close(got.logprobs, want.logprobs)
    if want.top_ids is not None:
        assert torch.equal(got.top_ids, want.top_ids)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 64])
def test_model_vocabularies_on_the_gpu(device, batch):
    for vocab in (151936, 128256):
        g = torch.Generator(device=device).manual_seed(batch)
        logits = (3 * torch.randn(batch, vocab, generator=g, device=device)).to(torch.bfloat16)
        out = _split(device)(logits, _tensors([P(temperature=0.0)] * batch, vocab, device))
        assert out.token_ids.tolist() == logits.float().argmax(1).tolist()
        lp = torch.log_softmax(logits.double(), 1).gather(1, out.token_ids[:, None])[:, 0]
        torch.testing.assert_close(out.logprobs.double(), lp, rtol=1e-4, atol=1e-4)


def test_registered_as_a_variant_of_sample():
    op = registry.get("sample")
    assert "sample_greedy_split" in op.impls and op.impl_backends["sample_greedy_split"] == "triton"


@pytest.mark.engine
def test_engine_runs_with_the_variant(tmp_path):
    """Selected by name like any variant: the same greedy tokens as the engine's own sampler."""
    from engine.sampling_params import SamplingParams
    from tests.engine_helpers import make_engine, run_to_completion
    from tests.model_factory import make_hf_model

    model_dir = make_hf_model(tmp_path, arch="qwen2")
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    prompts = [([5, 6, 7], params), ([9, 10, 11, 12, 13], params)]
    plain = run_to_completion(make_engine(model_dir, "torch"), prompts)
    swapped = make_engine(model_dir, "torch", op_overrides={"sample": "sample_greedy_split"})
    assert swapped.stats()["ops"]["sample"] == "sample_greedy_split"
    got = run_to_completion(swapped, prompts)
    assert [r["tokens"] for r in got.values()] == [r["tokens"] for r in plain.values()]
