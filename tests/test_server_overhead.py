"""The server's per-token path: the SSE encoders write the same bytes as json does, a group's mailbox hands
over everything pending at once, slow engine steps are logged, and the overhead benchmark (a fake engine
behind the real app) runs end to end and loses no token."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from bench.fake_engine import TOKEN_TEXT, FakeEngine
from engine.server import async_engine as async_engine_mod
from engine.server import openai_stream as fmt
from engine.server.async_engine import RequestGroup
from tests.server_harness import running_server, slow_steps

pytestmark = pytest.mark.server

TEXTS = ["", "plain", 'quote " and \\ backslash', "new\nline\ttab", "héllo wörld", "emoji \U0001f600", "\u2028\x00"]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("finish_reason", [None, "stop", "length"])
def test_generate_event_is_the_json_encoding(text, finish_reason):
    payload = {"id": "gen-abc", "text": text, "token_ids": [0, 17, 31999], "finished": finish_reason is not None,
               "finish_reason": finish_reason}
    assert fmt.generate_event(*payload.values()) == fmt.sse(payload)
    assert fmt.generate_event("gen-abc", text, [], False, None) == fmt.sse(dict(payload, token_ids=[], finished=False,
                                                                                finish_reason=None))


@pytest.mark.parametrize("with_usage", [False, True])
@pytest.mark.parametrize("model", ["tiny", 'mo"del / ü'])
def test_chunk_encoder_matches_the_chunk_dicts(with_usage, model):
    completion = fmt.ChunkEncoder("cmpl-1", 1700000000, model, chat=False, with_usage=with_usage)
    chat = fmt.ChunkEncoder("chatcmpl-1", 1700000000, model, chat=True, with_usage=with_usage)
    logprobs = {"tokens": ["a"], "token_logprobs": [-0.5], "top_logprobs": [{"a": -0.5}], "text_offset": [0]}
    for text in TEXTS:
        for reason in (None, "length"):
            for lp in (None, logprobs):
                expected = fmt.completion_chunk("cmpl-1", 1700000000, model, 3, text, reason, lp, with_usage)
                assert completion.completion(3, text, reason, lp) == fmt.sse(expected)
            for delta in ({"role": "assistant", "content": ""}, {"content": text}, {}):
                expected = fmt.chat_chunk("chatcmpl-1", 1700000000, model, 0, delta, reason, None, with_usage)
                assert chat.chat(0, delta, reason) == fmt.sse(expected)


def test_mailbox_wakes_once_and_hands_over_everything_pending():
    async def scenario():
        group = RequestGroup("g", ["g"], [], None)
        waiter = asyncio.ensure_future(group.wait())
        await asyncio.sleep(0)
        assert not waiter.done()
        for i in range(3):
            group.put((0, i))
        await waiter
        assert group.take() == [(0, 0), (0, 1), (0, 2)] and group.take() == []
        waiter = asyncio.ensure_future(group.wait())
        await asyncio.sleep(0)
        group.poke()
        await waiter
        assert group.poked and group.take() == []

    asyncio.run(scenario())


def _stream_tokens(url: str, max_tokens: int) -> tuple[int, str, bool]:
    body = {"prompt": [5, 6, 7], "max_tokens": max_tokens, "ignore_eos": True}
    count, text, done = 0, [], False
    with httpx.stream("POST", url + "/generate/stream", json=body, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                count += len(event["token_ids"])
                text.append(event["text"])
    return count, "".join(text), done


def test_fake_engine_behind_the_app_streams_every_token():
    with running_server(FakeEngine(device_s=0.001)) as server:
        async def many():
            loop = asyncio.get_running_loop()
            return await asyncio.gather(*(loop.run_in_executor(None, _stream_tokens, server.url, 20 + i)
                                          for i in range(8)))

        results = asyncio.run(many())
    for i, (count, text, done) in enumerate(results):
        assert (count, text, done) == (20 + i, TOKEN_TEXT * (20 + i), True)


def test_a_slow_step_is_logged_with_the_queue_sizes(monkeypatch, caplog):
    monkeypatch.setattr(async_engine_mod, "SLOW_STEP_S", 0.02)
    engine = slow_steps(FakeEngine(device_s=0.0), 0.05)
    with caplog.at_level(logging.WARNING, logger="engine.server.async_engine"), running_server(engine) as server:
        assert _stream_tokens(server.url, 2)[0] == 2
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert slow and "1 running, 0 waiting" in slow[0], caplog.text


def test_serve_overhead_runs_end_to_end(tmp_path):
    from bench import serve_overhead

    code = serve_overhead.main(["--concurrency", "4", "--num-prompts", "6", "--output-len", "5", "--input-len", "8",
                                "--device-ms", "1", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "serve_overhead.json").read_text())
    (level,) = report["levels"]
    assert level["failed"] == 0 and level["steps"] >= 5 and level["tok_per_s"] > 0
    log = (tmp_path / "serve_overhead_server.log").read_text()
    assert "INFO engine.server: serving fake-engine" in log   # the server logs at INFO, with timestamps
