"""Bad requests get a 4xx with OpenAI's error body naming the field, and the server serves the next one."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from tests.engine_helpers import (
    make_engine,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import make_hf_model
from tests.server_harness import running_server

pytestmark = pytest.mark.server

GOOD = {"prompt": "Hello", "max_tokens": 3, "temperature": 0, "ignore_eos": True}
LONG_PROMPT = list(range(4, 260))  # the factory model's context holds 256 tokens


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("errors") / "tiny", arch="qwen2")


@pytest.fixture(scope="module")
def client(model_dir):
    with running_server(make_engine(model_dir, num_kv_blocks=32)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


CASES = [
    # (route, body, status, param or None, words the message must hold)
    ("/v1/completions", b"{not json", 400, None, "not valid JSON"),
    ("/v1/completions", b"[1, 2]", 400, None, "JSON object"),
    ("/v1/completions", {"max_tokens": 3}, 400, "prompt", "prompt"),
    ("/v1/completions", {**GOOD, "temperature": "hot"}, 400, "temperature", "number"),
    ("/v1/completions", {**GOOD, "max_tokens": "5"}, 400, "max_tokens", "integer"),
    ("/v1/completions", {**GOOD, "max_tokens": -1}, 400, "max_tokens", ">= 1"),
    ("/v1/completions", {**GOOD, "temperature": -0.5}, 400, "temperature", ">= 0"),
    ("/v1/completions", {**GOOD, "top_p": 1.5}, 400, "top_p", "top_p"),
    ("/v1/completions", {**GOOD, "n": 0}, 400, "n", "n must be"),
    ("/v1/completions", {**GOOD, "logprobs": 50}, 400, "logprobs", "logprobs"),
    ("/v1/completions", {**GOOD, "logit_bias": {"abc": 1}}, 400, "logit_bias", "token ids"),
    ("/v1/completions", {**GOOD, "logit_bias": {"5": 500}}, 400, "logit_bias", "[-100"),
    ("/v1/completions", {**GOOD, "presence_penalty": 3}, 400, "presence_penalty", "presence_penalty"),
    ("/v1/completions", {**GOOD, "stop": [""]}, 400, "stop", "non-empty"),
    ("/v1/completions", {**GOOD, "prompt": ""}, 400, "prompt", "empty"),
    ("/v1/completions", {**GOOD, "prompt": [5, 999999]}, 400, "prompt", "outside"),
    ("/v1/completions", {**GOOD, "prompt": LONG_PROMPT}, 400, "prompt", "context"),
    ("/v1/completions", {**GOOD, "model": "gpt-4"}, 404, "model", "does not exist"),
    ("/v1/completions", {**GOOD, "echo": True}, 400, "echo", "not supported"),
    ("/v1/completions", {**GOOD, "timeout": 0}, 400, "timeout", "greater than 0"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages", "at least 1"),
    ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, 400, "messages", "role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, 400,
     "top_logprobs", "logprobs: true"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}, 400,
     "max_completion_tokens", ">= 1"),
    ("/generate", {"prompt": "hi", "max_tokens": -3}, 400, "max_tokens", ">= 1"),
    ("/generate", {"prompt": 5}, 400, "prompt", "prompt"),
]


@pytest.mark.parametrize(("route", "body", "status", "param", "words"), CASES,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_bad_request_is_refused_clearly_and_the_next_one_served(client, route, body, status, param, words):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post(route, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words in error["message"], error["message"]
    good = client.post("/v1/completions", json=GOOD)
    assert good.status_code == 200 and good.json()["choices"][0]["finish_reason"] == "length"


def test_unknown_fields_are_ignored(client):
    response = client.post("/v1/completions", json={**GOOD, "frobnicate": 3, "service_tier": "auto"})
    assert response.status_code == 200


def test_max_tokens_beyond_the_context_is_cut_to_fit(client):
    prompt = list(range(4, 250))
    body = client.post("/v1/completions", json={**GOOD, "prompt": prompt, "max_tokens": 100}).json()
    assert body["usage"]["completion_tokens"] == 256 - len(prompt)
    assert body["choices"][0]["finish_reason"] == "length"


def test_unknown_route_is_404(client):
    assert client.get("/v1/nothing").status_code == 404


def test_model_without_chat_template_gets_a_clear_400(model_dir, tmp_path):
    bare = tmp_path / "no-template"
    shutil.copytree(model_dir, bare)
    config_path = bare / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    del config["chat_template"]
    config_path.write_text(json.dumps(config))
    with running_server(make_engine(bare, num_kv_blocks=16)) as server:
        response = httpx.post(server.url + "/v1/chat/completions",
                              json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "no_chat_template" and "chat template" in error["message"]
        assert httpx.post(server.url + "/v1/completions", json=GOOD, timeout=30).status_code == 200
