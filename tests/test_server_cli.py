"""The command-line clients against a running test server: ``generate --url``, ``status``, ``cancel``."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from engine.cli import main
from tests.engine_helpers import (
    hf_greedy,
    make_engine,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import load_hf_model, make_hf_model
from tests.server_harness import free_port, running_server, slow_steps

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("cli") / "tiny", arch="llama")


@pytest.fixture(scope="module")
def server(model_dir):
    with running_server(slow_steps(make_engine(model_dir, num_kv_blocks=64), 0.01), api_key="k3y") as s:
        yield s


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("TRITONFORGE_API_KEY", "k3y")


def test_generate_url_streams_the_greedy_text(server, model_dir, capsys):
    code = main(["generate", "--url", server.url, "--max-tokens", "6", "--temperature", "0", "--ignore-eos",
                 "The quick brown fox"])
    out = capsys.readouterr()
    assert code == 0, out.err
    tokenizer = server.async_engine.engine.tokenizer
    expected = tokenizer.decode(hf_greedy(load_hf_model(model_dir), tokenizer.encode("The quick brown fox"), 6))
    assert out.out.rstrip("\n") == expected
    assert "6 tokens, finish: length" in out.err and "[request gen-" in out.err


def test_status_of_a_finished_request(server, capsys):
    response = httpx.post(server.url + "/generate", json={"prompt": "Hi", "max_tokens": 2, "ignore_eos": True},
                          headers={"Authorization": "Bearer k3y"}, timeout=30)
    request_id = response.headers["x-request-id"]
    assert main(["status", request_id, "--url", server.url]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "finished" and status["num_output_tokens"] == 2


def test_cancel_a_running_request(server, capsys):
    headers = {"Authorization": "Bearer k3y"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client, \
            client.stream("POST", "/generate/stream", json={"prompt": "Hi", "max_tokens": 200,
                                                            "ignore_eos": True}) as response:
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: "))
        assert main(["cancel", request_id, "--url", server.url]) == 0
        assert json.loads(capsys.readouterr().out)["cancelled"] is True
        events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert events[-1]["finish_reason"] == "abort"
    assert main(["status", request_id, "--url", server.url]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "cancelled"


def test_client_errors_are_reported(server, capsys, monkeypatch):
    assert main(["status", "no-such-id", "--url", server.url]) == 1
    assert "no request 'no-such-id'" in capsys.readouterr().err
    monkeypatch.setenv("TRITONFORGE_API_KEY", "wrong")
    assert main(["generate", "--url", server.url, "Hello"]) == 1
    assert "HTTP 401" in capsys.readouterr().err
    assert main(["cancel", "x", "--url", f"http://127.0.0.1:{free_port()}"]) == 3
    assert "cannot reach" in capsys.readouterr().err


def test_serve_command_starts_and_stops(model_dir, monkeypatch):
    """``tritonforge serve`` end to end: uvicorn on a loopback port, stopped through its exit flag."""
    import uvicorn

    port = free_port()
    started: list = []

    def run_in_test(app, **kwargs):
        config = uvicorn.Config(app, **kwargs)
        server = uvicorn.Server(config)
        started.append(server)
        server.run()

    monkeypatch.setattr(uvicorn, "run", run_in_test)
    args = ["serve", "--model", str(model_dir), "--port", str(port), "--backend", "torch", "--device", "cpu",
                "--num-kv-blocks", "16", "--log-level", "warning"]
    thread = threading.Thread(target=main, args=(args,), daemon=True)
    thread.start()
    for _ in range(600):
        if started and started[0].started:
            break
        thread.join(0.05)
    assert started and started[0].started
    body = httpx.post(f"http://127.0.0.1:{port}/v1/completions",
                      json={"prompt": "Hi", "max_tokens": 2, "ignore_eos": True}, timeout=30).json()
    assert body["model"] == "tiny" and body["usage"]["completion_tokens"] == 2
    started[0].should_exit = True
    thread.join(30)
    assert not thread.is_alive()


def test_serve_reports_a_missing_model(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err
