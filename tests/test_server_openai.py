"""The OpenAI-compatible endpoints driven by the official ``openai`` client, against independent references.

References: greedy tokens from transformers (full recomputation, no KV cache) for the first requests;
log-probabilities from transformers' logits; for the rest, the same request run alone on a separate
offline engine.
"""

from __future__ import annotations

import pytest
import torch

from tests.engine_helpers import (
    hf_greedy,
    hf_next_logits,
    make_engine,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import load_hf_model, make_hf_model
from tests.server_harness import running_server

pytestmark = pytest.mark.server

MODEL = "tiny-qwen2"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("srv") / MODEL, arch="qwen2")


@pytest.fixture(scope="module")
def server(model_dir):
    with running_server(make_engine(model_dir, num_kv_blocks=128)) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=60, max_retries=0)


@pytest.fixture(scope="module")
def hf(model_dir):
    return load_hf_model(model_dir)


@pytest.fixture(scope="module")
def tokenizer(server):
    return server.async_engine.engine.tokenizer


@pytest.fixture(scope="module")
def offline(model_dir):
    """A second engine on the same model: what a request gives when run alone."""
    from engine.llm import LLM

    return LLM(str(model_dir), backend="torch", device="cpu", dtype=torch.float32, num_kv_blocks=64)


GREEDY = dict(temperature=0, max_tokens=8, extra_body={"ignore_eos": True})


def test_models_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_completion_matches_transformers_greedy(client, hf, tokenizer):
    prompt = "The quick brown fox"
    out = client.completions.create(model=MODEL, prompt=prompt, **GREEDY)
    expected = hf_greedy(hf, tokenizer.encode(prompt), 8)
    assert out.choices[0].text == tokenizer.decode(expected)
    assert out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == len(tokenizer.encode(prompt)) and out.usage.completion_tokens == 8
    assert out.id.startswith("cmpl-") and out.object == "text_completion"


def test_completion_stream_equals_non_stream(client):
    prompt = "Paged attention stores keys"
    whole = client.completions.create(model=MODEL, prompt=prompt, **GREEDY)
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert all(c.id == chunks[0].id for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_token_id_prompts_batch(client, hf, tokenizer):
    prompts = [[10, 20, 30, 40], [50, 60, 70]]
    out = client.completions.create(model=MODEL, prompt=prompts, temperature=0, max_tokens=5,
                                    extra_body={"ignore_eos": True})
    assert [c.index for c in out.choices] == [0, 1]
    for prompt, choice in zip(prompts, out.choices, strict=True):
        assert choice.text == tokenizer.decode(hf_greedy(hf, prompt, 5))
    assert out.usage.prompt_tokens == 7 and out.usage.completion_tokens == 10


def test_chat_matches_transformers_greedy_on_the_template(client, hf, tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, world!"}]
    out = client.chat.completions.create(model=MODEL, messages=messages, **GREEDY)
    rendered = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello, world!<|im_end|>\n"
                "<|im_start|>assistant\n")
    expected = hf_greedy(hf, tokenizer.encode(rendered, add_special_tokens=False), 8)
    assert out.choices[0].message.content == tokenizer.decode(expected)
    assert out.choices[0].message.role == "assistant" and out.object == "chat.completion"
    streamed = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True, **GREEDY))
    assert streamed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == out.choices[0].message.content
    assert streamed[-1].choices[0].finish_reason == "length"


def test_n_with_seed_is_reproducible_and_each_copy_is_seed_plus_i(client, offline):
    from engine.sampling_params import SamplingParams

    kw = dict(model=MODEL, prompt="Once upon a time", n=3, temperature=1.0, seed=11, max_tokens=10,
              extra_body={"ignore_eos": True})
    first = client.completions.create(**kw)
    again = client.completions.create(**kw)
    texts = [c.text for c in first.choices]
    assert len(texts) == 3 and texts == [c.text for c in again.choices]
    alone = offline.generate("Once upon a time", SamplingParams(temperature=1.0, seed=12, max_tokens=10,
                                                                ignore_eos=True, top_p=0.9))
    assert len(set(texts)) > 1  # different seeds, different draws
    assert texts[1] == alone[0].text  # generation_config's top_p=0.9 applies when the request leaves it out
    streamed = list(client.completions.create(stream=True, **kw))
    for i in range(3):
        assert "".join(c.choices[0].text for c in streamed if c.choices[0].index == i) == texts[i]


def test_stop_string_cuts_the_text(client):
    prompt = "Numbers: 0 1 2"
    full = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=16,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = full[4:7]
    assert stop and full.find(stop) >= 0
    out = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=16, stop=[stop],
                                    extra_body={"ignore_eos": True})
    assert out.choices[0].text == full[:full.find(stop)]
    assert out.choices[0].finish_reason == "stop"
    streamed = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=16, stop=stop,
                                         stream=True, extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].text for c in streamed) == full[:full.find(stop)]


def test_completion_logprobs_match_transformers(client, hf, tokenizer):
    prompt = "Hello, world!"
    out = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=3, logprobs=2,
                                    extra_body={"ignore_eos": True})
    lp = out.choices[0].logprobs
    ids = tokenizer.encode(prompt)
    generated = hf_greedy(hf, ids, 3)
    reference = torch.log_softmax(hf_next_logits(hf, [ids + generated[:i] for i in range(3)]), dim=-1)
    assert lp.tokens == [tokenizer.decode([t], skip_special_tokens=False) for t in generated]
    for i, token in enumerate(generated):
        assert lp.token_logprobs[i] == pytest.approx(reference[i, token].item(), abs=1e-3)
        top = reference[i].topk(2)
        expected = {tokenizer.decode([int(t)], skip_special_tokens=False): v.item()
                    for v, t in zip(top.values, top.indices, strict=True)}
        assert lp.top_logprobs[i] == pytest.approx(expected, abs=1e-3)
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])


def test_chat_logprobs_shape(client, hf, tokenizer):
    messages = [{"role": "user", "content": "Paris?"}]
    out = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=4,
                                         logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = out.choices[0].logprobs.content
    assert len(content) == 4
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob == pytest.approx(max(t.logprob for t in entry.top_logprobs), abs=1e-5)  # greedy
        assert entry.bytes == list(entry.token.encode())
    assert "".join(e.token for e in content) == out.choices[0].message.content
