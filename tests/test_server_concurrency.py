"""Many clients at once: 64 concurrent streams each get exactly what their request gives alone, while
/health and /metrics keep answering; the metrics count what was served."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import torch

from engine.sampling_params import SamplingParams
from tests.engine_helpers import (
    make_engine,
    prompt_batch,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import make_hf_model
from tests.server_harness import running_server

pytestmark = pytest.mark.server

CLIENTS = 64
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("conc") / "tiny-llama", arch="llama")


@pytest.fixture(scope="module")
def prompts():
    return prompt_batch(300, CLIENTS, seed=7, min_len=3, max_len=24)


@pytest.fixture(scope="module")
def alone(model_dir, prompts):
    """Each request run by itself on an offline engine: the reference for the concurrent run."""
    from engine.llm import LLM

    llm = LLM(str(model_dir), backend="torch", device="cpu", dtype=torch.float32, num_kv_blocks=16)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True)
    return [llm.generate([p], params)[0] for p in prompts]


async def _stream(client: httpx.AsyncClient, prompt: list[int]) -> dict:
    body = {"prompt": prompt, "temperature": 0, "max_tokens": MAX_TOKENS, "ignore_eos": True, "stream": True}
    text, reasons, done = [], [], False
    async with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                continue
            assert not done, "an event after [DONE]"
            choice = json.loads(data)["choices"][0]
            text.append(choice["text"])
            reasons.append(choice["finish_reason"])
    return {"text": "".join(text), "reasons": reasons, "done": done}


async def _watch(client: httpx.AsyncClient, stop: asyncio.Event) -> list[tuple[int, int]]:
    seen = []
    while not stop.is_set():
        health = await client.get("/health")
        metrics = await client.get("/metrics")
        seen.append((health.status_code, metrics.status_code))
        await asyncio.sleep(0.02)
    return seen


async def _run_all(url: str, prompts: list[list[int]]):
    limits = httpx.Limits(max_connections=CLIENTS + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch(client, stop))
        results = await asyncio.gather(*(_stream(client, p) for p in prompts))
        stop.set()
        return results, await watcher


@pytest.mark.parametrize("in_child", [False, True], ids=["engine-thread", "engine-process"])
def test_concurrent_streams_match_requests_run_alone(model_dir, prompts, alone, in_child):
    engine = make_engine(model_dir, num_kv_blocks=256, in_child=in_child)
    try:
        with running_server(engine) as server:
            results, probes = asyncio.run(_run_all(server.url, prompts))
            metrics = httpx.get(server.url + "/metrics").text
            stats = server.stats()
    finally:
        engine.close()
    for got, ref in zip(results, alone, strict=True):
        assert got["done"]
        assert got["text"] == ref.text
        assert got["reasons"][-1] == "length" and all(r is None for r in got["reasons"][:-1])
    assert probes and all(p == (200, 200) for p in probes)
    assert _sample(metrics, 'tritonforge_requests_total{finish_reason="length"}') == CLIENTS
    assert _sample(metrics, "tritonforge_generation_tokens_total") == CLIENTS * MAX_TOKENS
    assert _sample(metrics, "tritonforge_prompt_tokens_total") == sum(len(p) for p in prompts)
    assert _sample(metrics, "tritonforge_time_to_first_token_seconds_count") == CLIENTS
    assert _sample(metrics, "tritonforge_inter_token_latency_seconds_count") == CLIENTS * (MAX_TOKENS - 1)
    assert stats["num_running"] == 0 and stats["kv_free_blocks"] == stats["kv_total_blocks"]
    # One token per step for every request would mean the requests were never batched together.
    assert stats["num_steps"] < CLIENTS * MAX_TOKENS


def _sample(metrics_text: str, name: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")
