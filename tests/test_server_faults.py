"""What goes wrong around a server: clients leaving, timeouts, a full queue, bad keys, an engine that
breaks, and shutdown. Steps are slowed down (``slow_steps``) so that requests are still running when the
test acts on them; every wait is bounded."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.engine_helpers import (
    make_engine,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import make_hf_model
from tests.server_harness import fail_steps, running_server, slow_steps

pytestmark = pytest.mark.server

LONG = {"prompt": "Once upon a time", "max_tokens": 200, "ignore_eos": True, "temperature": 0}
SHORT = {"prompt": "Hello", "max_tokens": 4, "ignore_eos": True, "temperature": 0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("faults") / "tiny", arch="llama")


@pytest.fixture(scope="module", params=[False, True], ids=["engine-thread", "engine-process"])
def slow_server(model_dir, request):
    """The server over an engine in its loop thread, and over one in a child process (the serve command's
    default), whose step the parent slows the same way."""
    engine = slow_steps(make_engine(model_dir, num_kv_blocks=64, in_child=request.param), 0.01)
    try:
        with running_server(engine) as server:
            yield server
    finally:
        engine.close()


def _events(lines, count: int) -> list[dict]:
    """Up to ``count`` events from ``lines``, an iterator kept by the caller: httpx closes the connection
    when a response's line iterator is dropped, and some tests must keep it open."""
    out = []
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line.removeprefix("data: ")))
            if len(out) == count:
                break
    return out


def _all_free(stats: dict) -> bool:
    return stats["num_running"] == 0 and stats["num_waiting"] == 0 and stats["kv_free_blocks"] == stats[
        "kv_total_blocks"]


def test_disconnect_mid_stream_frees_the_blocks(slow_server):
    with httpx.Client(base_url=slow_server.url, timeout=30) as client:
        with client.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as response:
            request_id = response.headers["x-request-id"]
            lines = response.iter_lines()
            assert len(_events(lines, 3)) == 3
            # /stats is a snapshot the loop publishes at most every few tens of ms: poll it.
            slow_server.wait_for(lambda s: s["num_running"] == 1 and s["kv_free_blocks"] < s["kv_total_blocks"],
                                 what="the streaming request holding KV blocks")
        # Leaving the block closed the connection mid-stream.
        slow_server.wait_for(_all_free, what="blocks freed after the disconnect")
        assert client.get(f"/status/{request_id}").json()["finish_reasons"] == ["abort"]
        assert client.post("/v1/completions", json=SHORT).status_code == 200


def test_disconnect_while_waiting_for_a_non_streaming_answer(slow_server):
    with httpx.Client(base_url=slow_server.url, timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/v1/completions", json=LONG)
    slow_server.wait_for(_all_free, what="blocks freed after the client gave up")


def test_timeout_gives_408_and_the_server_keeps_serving(slow_server):
    with httpx.Client(base_url=slow_server.url, timeout=30) as client:
        response = client.post("/v1/completions", json={**LONG, "timeout": 0.3})
        assert response.status_code == 408
        error = response.json()["error"]
        assert error["type"] == "timeout" and error["code"] == "timeout" and "timed out" in error["message"]
        with client.stream("POST", "/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 200, "ignore_eos": True,
                "stream": True, "timeout": 0.3}) as stream:
            events = _events(stream.iter_lines(), 1000)
        reasons = [c["finish_reason"] for e in events for c in e.get("choices", [])]
        assert reasons[-1] == "timeout" and events[-1]["error"]["code"] == "timeout"
        assert events[-1]["error"]["type"] == "timeout"
        timed_out = client.post("/generate", json={**LONG, "timeout": 0.3})
        assert timed_out.status_code == 408 and timed_out.json()["error"]["type"] == "timeout"
        slow_server.wait_for(_all_free, what="blocks freed after the timeouts")
        assert client.post("/v1/completions", json=SHORT).json()["choices"][0]["finish_reason"] == "length"


def test_cancel_by_id_and_status(slow_server):
    with httpx.Client(base_url=slow_server.url, timeout=30) as client:
        with client.stream("POST", "/generate/stream", json=LONG) as response:
            request_id = response.headers["x-request-id"]
            lines = response.iter_lines()
            _events(lines, 2)
            assert client.get(f"/status/{request_id}").json()["state"] == "running"
            assert client.post(f"/cancel/{request_id}").json()["cancelled"] is True
            rest = _events(lines, 1000)
        assert rest[-1]["finished"] and rest[-1]["finish_reason"] == "abort"
        status = client.get(f"/status/{request_id}").json()
        assert status["state"] == "cancelled" and status["finish_reasons"] == ["abort"]
        assert client.get("/status/nope").status_code == 404
        assert client.post("/cancel/nope").json()["error"]["code"] == "request_not_found"


def test_full_queue_answers_429_with_retry_after(model_dir):
    engine = slow_steps(make_engine(model_dir, num_kv_blocks=64, max_num_seqs=1), 0.01)
    with running_server(engine, max_queue=2) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        # More completions than the queue ever holds: no retry can help, so 400 naming the limit, not 429.
        for body in ({**SHORT, "n": 3}, {**SHORT, "prompt": ["a", "b", "c"]}):
            too_many = client.post("/v1/completions", json=body)
            assert too_many.status_code == 400 and "retry-after" not in too_many.headers
            error = too_many.json()["error"]
            assert error["type"] == "invalid_request_error" and error["code"] == "too_many_completions"
            assert "3 completions" in error["message"] and "(2, its --max-queue)" in error["message"]
        assert client.post("/v1/completions", json={**SHORT, "n": 2}).status_code == 200  # exactly the limit fits
        with client.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as running:
            running_lines = running.iter_lines()
            _events(running_lines, 1)
            server.wait_for(lambda s: s["num_running"] == 1, what="one running request")
            with client.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as w1, \
                    client.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as w2:
                assert w1.status_code == w2.status_code == 200
                server.wait_for(lambda s: s["num_waiting"] == 2, what="two waiting requests")
                refused = client.post("/v1/completions", json=SHORT)
                assert refused.status_code == 429 and refused.headers["retry-after"]
                error = refused.json()["error"]
                assert error["code"] == "queue_full" and error["type"] == "rate_limit_error"
        server.wait_for(_all_free, what="all requests gone")
        assert client.post("/v1/completions", json=SHORT).status_code == 200


def test_api_key(model_dir):
    with running_server(make_engine(model_dir, num_kv_blocks=16), api_key="s3cret") as server:
        no_key = httpx.post(server.url + "/v1/completions", json=SHORT)
        assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
        wrong = httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = httpx.post(server.url + "/v1/completions", json=SHORT, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(server.url + "/health").status_code == 200  # probes need no key


def test_a_dead_engine_process_fails_requests_and_health(model_dir):
    """The child engine killed mid-request: the request gets a 500 naming it, /health turns 503, new
    requests are refused with 503, and the server itself stays up."""
    engine = slow_steps(make_engine(model_dir, num_kv_blocks=16, in_child=True), 0.01)
    try:
        with running_server(engine) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/health").status_code == 200
            with client.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as response:
                lines = response.iter_lines()
                assert len(_events(lines, 2)) == 2
                engine._proc.kill()
                rest = [line for line in lines if line.startswith("data: ")]
            assert any("engine process died" in line for line in rest)
            health = client.get("/health")
            assert health.status_code == 503 and "engine process died" in health.json()["reason"]
            assert client.post("/v1/completions", json=SHORT).status_code == 503
    finally:
        engine.close()


def test_engine_failure_fails_requests_and_health(model_dir):
    engine = fail_steps(slow_steps(make_engine(model_dir, num_kv_blocks=16), 0.01), after=3)
    with running_server(engine) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health").status_code == 200
        response = client.post("/v1/completions", json=LONG)
        assert response.status_code == 500
        assert "injected engine failure" in response.json()["error"]["message"]
        health = client.get("/health")
        assert health.status_code == 503 and "injected" in health.json()["reason"]
        refused = client.post("/v1/completions", json=SHORT)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_unavailable"
        assert "tritonforge_engine_alive 0.0" in client.get("/metrics").text


def test_shutdown_lets_in_flight_streams_finish_then_stops_the_loop(model_dir):
    engine = slow_steps(make_engine(model_dir, num_kv_blocks=16), 0.01)
    with running_server(engine) as server:
        async_engine = server.async_engine
        with httpx.Client(base_url=server.url, timeout=30) as client, \
                client.stream("POST", "/v1/completions", json={**SHORT, "max_tokens": 40, "stream": True}) as resp:
            lines = resp.iter_lines()
            first = _events(lines, 1)
            threading.Thread(target=lambda: setattr(server.server, "should_exit", True)).start()
            rest = _events(lines, 1000)
        server.thread.join(30)
        assert not server.thread.is_alive()
    chunks = first + rest
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(1 for c in chunks if c["choices"][0]["text"]) >= 1
    assert not async_engine.alive and async_engine.stopping
    assert not engine.has_unfinished()


def test_a_stuck_step_makes_health_fail_until_it_returns(model_dir, monkeypatch):
    import engine.server.async_engine as async_engine_module

    monkeypatch.setattr(async_engine_module, "STALL_S", 0.3)
    engine = make_engine(model_dir, num_kv_blocks=16)
    release, step = threading.Event(), engine.step

    def stuck_step():
        release.wait(30)
        return step()

    engine.step = stuck_step
    with running_server(engine) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("POST", "/v1/completions", json={**SHORT, "stream": True}) as response:
            for _ in range(200):
                health = client.get("/health")
                if health.status_code == 503:
                    break
                time.sleep(0.05)
            assert health.status_code == 503 and "stalled" in health.json()["reason"]
            release.set()
            events = _events(response.iter_lines(), 1000)
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        assert client.get("/health").status_code == 200


def test_engine_failure_mid_stream_sends_an_error_event(model_dir):
    engine = fail_steps(slow_steps(make_engine(model_dir, num_kv_blocks=16), 0.01), after=3)
    with running_server(engine) as server, httpx.Client(base_url=server.url, timeout=30) as client, \
            client.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as response:
        lines = list(response.iter_lines())
    events = [line for line in lines if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and "injected engine failure" in error["message"]


def test_stream_interval_batches_writes_without_changing_the_stream(model_dir):
    engine = slow_steps(make_engine(model_dir, num_kv_blocks=16), 0.005)
    body = {**SHORT, "max_tokens": 20}
    with running_server(engine, stream_interval_s=0.05) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        whole = client.post("/generate", json=body).json()
        with client.stream("POST", "/generate/stream", json=body) as response:
            events = _events(response.iter_lines(), 1000)
    assert "".join(e["text"] for e in events) == whole["text"]
    assert [t for e in events for t in e["token_ids"]] == whole["token_ids"] and len(whole["token_ids"]) == 20
    assert events[-1]["finish_reason"] == "length"
