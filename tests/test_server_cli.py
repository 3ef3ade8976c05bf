"""The command-line clients against a running test server: ``generate --url``, ``status``, ``cancel``."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time

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


def test_serve_command_drains_in_flight_streams_on_sigterm(model_dir):
    """``tritonforge serve`` as a real process: serves, and on SIGTERM finishes the stream in flight, then exits."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--model", str(model_dir), "--port",
                             str(port), "--backend", "torch", "--device", "cpu", "--num-kv-blocks", "32"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(1200):
            if proc.poll() is not None:
                raise AssertionError(f"serve exited early:\n{proc.stdout.read()}")
            with contextlib.suppress(httpx.HTTPError):  # not listening yet: the server is still starting
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        body = {"prompt": "Hi", "max_tokens": 200, "ignore_eos": True, "stream": True}
        with httpx.Client(base_url=url, timeout=60) as client, \
                client.stream("POST", "/v1/completions", json=body) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        chunks = [json.loads(x[6:]) for x in [first, *rest[:-1]]]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        # uvicorn re-raises the signal it caught once shutdown is complete, so the exit status is SIGTERM's.
        assert proc.wait(60) in (0, -signal.SIGTERM)
        log = proc.stdout.read()
        assert "shutting down: stopping the engine loop" in log and "Traceback" not in log, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("flags,message", [(["--port", "0"], "--port must be in 1..65535"),
                                           (["--switch-interval", "0"], "--switch-interval must be > 0")])
def test_serve_refuses_bad_settings_before_loading(tmp_path, capsys, flags, message):
    assert main(["serve", "--model", str(tmp_path / "never-loaded"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_serve_reports_a_missing_model(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err


def test_generate_url_chat_uses_the_servers_template(server, model_dir, capsys):
    code = main(["generate", "--url", server.url, "--chat", "--system", "Be brief.", "--max-tokens", "5",
                 "--temperature", "0", "--ignore-eos", "Hello, world!"])
    out = capsys.readouterr()
    assert code == 0, out.err
    tokenizer = server.async_engine.engine.tokenizer
    rendered = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello, world!<|im_end|>\n"
                "<|im_start|>assistant\n")
    expected = hf_greedy(load_hf_model(model_dir), tokenizer.encode(rendered, add_special_tokens=False), 5)
    assert out.out.rstrip("\n") == tokenizer.decode(expected)
    assert "5 tokens, finish: length" in out.err and "[request chatcmpl-" in out.err
