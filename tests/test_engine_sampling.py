"""Per-request behaviour through the engine: sampling parameters, stops, limits, logprobs, abort, timeout.

Expected values come from the Hugging Face model (argmax and log_softmax of its logits) or from the
engine's own greedy output fed back as a stop string, never from the code path under test alone.
"""

from __future__ import annotations

import pytest
import torch

from engine.sampling_params import SamplingParams
from tests.engine_helpers import (
    BACKENDS,
    engine_device,
    hf_next_logits,
    make_engine,
    prompt_batch,
    run_to_completion,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import load_hf_model, make_hf_model

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("sampling"), arch="llama")


@pytest.fixture(scope="module", params=BACKENDS)
def engine(request, model_dir):
    return make_engine(model_dir, request.param)


@pytest.fixture(scope="module")
def prompts():
    return prompt_batch(300, 6, seed=11, min_len=4, max_len=20)


def _one(engine, prompt, params):
    (result,) = run_to_completion(engine, [(prompt, params)]).values()
    return result


def test_temperature_zero_is_argmax_of_reference_logits(engine, model_dir, prompts):
    hf = load_hf_model(model_dir).to(engine_device(engine.config.backend))
    expected = hf_next_logits(hf, prompts).argmax(-1).tolist()
    results = run_to_completion(engine, [(p, SamplingParams(temperature=0, max_tokens=1)) for p in prompts])
    assert [r["tokens"][0] for r in results.values()] == expected


def test_seeded_requests_reproduce_across_batches(engine, prompts):
    params = [SamplingParams(temperature=1.0, top_k=50, seed=100 + i, max_tokens=10, ignore_eos=True)
              for i in range(len(prompts))]
    batched = [r["tokens"] for r in run_to_completion(engine, list(zip(prompts, params, strict=True))).values()]
    alone = [_one(engine, p, sp)["tokens"] for p, sp in zip(prompts, params, strict=True)]
    assert batched == alone
    other_seed = _one(engine, prompts[0], SamplingParams(temperature=1.0, top_k=50, seed=7, max_tokens=10,
                                                         ignore_eos=True))["tokens"]
    assert other_seed != alone[0], "a different seed should give a different sample at temperature 1"


def test_params_are_per_request_in_one_batch(engine, prompts):
    forced = SamplingParams(temperature=0.8, seed=1, max_tokens=6, logit_bias={42: 100.0}, ignore_eos=True)
    plain = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    alone_plain = _one(engine, prompts[1], plain)["tokens"]
    a, b = run_to_completion(engine, [(prompts[0], forced), (prompts[1], plain)]).values()
    assert a["tokens"] == [42] * 6
    assert b["tokens"] == alone_plain


def test_max_tokens_and_length_reason(engine, prompts):
    r = _one(engine, prompts[0], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True))
    assert len(r["tokens"]) == 5 and r["reason"] == "length"


def test_stop_token_ids(engine, prompts):
    free = _one(engine, prompts[2], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))["tokens"]
    r = _one(engine, prompts[2], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True,
                                                stop_token_ids=(free[3],)))
    assert r["tokens"] == free[: free.index(free[3]) + 1] and r["reason"] == "stop"


def test_stop_string_spanning_tokens_is_cut(engine, prompts):
    free = _one(engine, prompts[3], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
    text = free["text"]
    assert len(text) > 12, "need some generated text to pick a stop string from"
    stop = text[5:9]  # likely straddles a token boundary; anything after it must not be returned
    r = _one(engine, prompts[3], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, stop=(stop,)))
    assert r["reason"] == "stop"
    assert r["text"] == text[: text.index(stop)]


def test_logprobs_match_reference_log_softmax(engine, model_dir, prompts):
    hf = load_hf_model(model_dir).to(engine_device(engine.config.backend))
    ref = torch.log_softmax(hf_next_logits(hf, prompts[:2]), -1).cpu()
    results = run_to_completion(engine, [(p, SamplingParams(temperature=0, max_tokens=3, logprobs=5))
                                         for p in prompts[:2]])
    atol = 1e-4 if engine.config.backend == "torch" else 2e-2
    for row, r in enumerate(results.values()):
        assert len(r["logprobs"]) == 3
        first = r["logprobs"][0]
        assert first.token_id == r["tokens"][0] == int(ref[row].argmax())
        assert abs(first.logprob - float(ref[row].max())) < atol
        # The top 5 by value (near-ties may order differently from torch's topk: compare values, and
        # check each returned token's own logprob).
        assert len(first.top) == 5
        top_values = torch.tensor([lp for _, lp in first.top], dtype=torch.float64)
        torch.testing.assert_close(top_values, ref[row].topk(5).values.double(), atol=atol, rtol=0)
        for token_id, lp in first.top:
            assert abs(lp - float(ref[row, token_id])) < atol


def test_abort_frees_blocks(engine, prompts):
    rid = engine.add_request(prompts[0], SamplingParams(temperature=0, max_tokens=50, ignore_eos=True))
    engine.step()
    engine.step()
    assert engine.stats()["kv_free_blocks"] < engine.stats()["kv_total_blocks"]
    assert engine.abort(rid)
    assert engine.stats()["kv_free_blocks"] == engine.stats()["kv_total_blocks"]
    (out,) = engine.step()
    assert out.request_id == rid and out.finished and out.finish_reason == "abort"
    assert not engine.has_unfinished()
    assert not engine.abort(rid)
    engine.scheduler.check_invariants()


def test_timeout_finishes_request(engine, prompts):
    rid = engine.add_request(prompts[0], SamplingParams(temperature=0, max_tokens=50), timeout_s=1e-9)
    (out,) = engine.step()
    assert out.request_id == rid and out.finish_reason == "timeout"
    assert engine.stats()["kv_free_blocks"] == engine.stats()["kv_total_blocks"]


def test_bad_requests_raise_clear_errors(engine):
    with pytest.raises(ValueError, match="temperature"):
        engine.add_request([5, 6], SamplingParams(temperature=-1.0))
    with pytest.raises(ValueError, match="token ids"):
        engine.add_request([5, 10**6], SamplingParams())
    with pytest.raises(ValueError, match="empty"):
        engine.add_request([], SamplingParams())
    with pytest.raises(ValueError, match="at most"):
        engine.add_request([5] * 300, SamplingParams())
    assert not engine.has_unfinished()
