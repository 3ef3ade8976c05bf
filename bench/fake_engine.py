"""A stand-in for ``LLMEngine`` that costs the server nothing but its own work: the server's overhead, measured.

``FakeEngine`` has the surface that ``engine.server`` uses (add_request, abort, has_unfinished, step, the
scheduler's stats, the model's limits) and no model. Each ``step()`` gives one token to every running
request after ``device_s`` of sleep (the GIL is released, as while a GPU step runs) and ``host_s`` of
busy Python (the GIL held, as the engine's own per-step host work). So a server over it reaches at
most ``min(running, max_num_seqs) / (device_s + host_s)`` tokens per second; what it loses against that
is the cost of the HTTP side (event loop, routes, SSE writes) and of the hand-over between the two threads.

    python -m bench.fake_engine --port 8000 --device-ms 3        # a server over a fake engine

``bench/serve_overhead.py`` spawns that server and drives it with streaming clients.
"""

from __future__ import annotations

import argparse
import collections
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from engine.llm_engine import RequestOutput
from engine.sampling_params import SamplingParams

VOCAB = 32000
TOKEN_TEXT = " tok"   # the text of every generated token


@dataclass
class _FakeRequest:
    request_id: str
    prompt_len: int
    params: SamplingParams
    deadline: float | None
    generated: int = 0
    abort: bool = field(default=False)


class _FakeScheduler:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.kv = SimpleNamespace(num_blocks=engine.num_kv_blocks)

    def stats(self) -> dict:
        e = self.engine
        return {"num_waiting": len(e.waiting), "num_running": len(e.running), "num_preemptions": 0,
                "num_finished": e.num_finished, "kv_usage": len(e.running) / max(1, e.max_num_seqs),
                "kv_free_blocks": 0, "kv_total_blocks": e.num_kv_blocks}


class FakeEngine:
    """Generates ``TOKEN_TEXT`` (token id 42) for every request until its ``max_tokens``; see the module doc."""

    def __init__(self, device_s: float = 0.003, host_s: float = 0.0, max_num_seqs: int = 256,
                 max_model_len: int = 4096):
        self.device_s, self.host_s = device_s, host_s
        self.max_num_seqs, self.max_model_len = max_num_seqs, max_model_len
        self.num_kv_blocks = max_num_seqs * max_model_len // 16
        self.config = SimpleNamespace(model="fake-engine", backend="fake", device="cpu")
        self.model_config = SimpleNamespace(vocab_size=VOCAB)
        self.generation_defaults: dict = {}
        self.tokenizer = None
        self.scheduler = _FakeScheduler(self)
        self.waiting: collections.deque[_FakeRequest] = collections.deque()
        self.running: dict[str, _FakeRequest] = {}
        self.num_steps = self.num_finished = 0

    def add_request(self, prompt: list[int], params: SamplingParams | None = None, request_id: str | None = None,
                    timeout_s: float | None = None) -> str:
        if not prompt:
            raise ValueError("prompt is empty")
        request_id = request_id or f"fake-{self.num_steps}-{len(self.waiting)}"
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        self.waiting.append(_FakeRequest(request_id, len(prompt), params or SamplingParams(), deadline))
        return request_id

    def abort(self, request_id: str) -> bool:
        for req in (*self.running.values(), *self.waiting):
            if req.request_id == request_id:
                req.abort = True
                return True
        return False

    def has_unfinished(self) -> bool:
        return bool(self.running or self.waiting)

    def step(self) -> list[RequestOutput]:
        while self.waiting and len(self.running) < self.max_num_seqs:
            req = self.waiting.popleft()
            self.running[req.request_id] = req
        if self.device_s > 0:
            time.sleep(self.device_s)
        if self.host_s > 0:
            end = time.perf_counter() + self.host_s
            while time.perf_counter() < end:
                pass
        self.num_steps += 1
        now = time.monotonic()
        outputs = [self._advance(req, now) for req in list(self.running.values())]
        aborted = [req for req in self.waiting if req.abort]
        for req in aborted:
            self.waiting.remove(req)
            outputs.append(self._output(req, [], "abort"))
        return outputs

    def _advance(self, req: _FakeRequest, now: float) -> RequestOutput:
        if req.abort:
            return self._output(req, [], "abort")
        if req.deadline is not None and now > req.deadline:
            return self._output(req, [], "timeout")
        req.generated += 1
        done = req.generated >= req.params.max_tokens
        return self._output(req, [42], "length" if done else None)

    def _output(self, req: _FakeRequest, new: list[int], reason: str | None) -> RequestOutput:
        if reason is not None:
            self.running.pop(req.request_id, None)
            self.num_finished += 1
        return RequestOutput(req.request_id, TOKEN_TEXT * len(new), new, reason is not None, reason, None,
                             req.prompt_len, req.generated)


def main(argv=None) -> int:
    from engine.commands.serve import configure_logging, serve_app
    from engine.server.app import create_app

    p = argparse.ArgumentParser(description="serve the HTTP API over a fake engine (no model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device-ms", type=float, default=3.0, help="sleep per step (GIL released)")
    p.add_argument("--host-ms", type=float, default=0.0, help="busy Python per step (GIL held)")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--stream-interval", type=float, default=0.0)
    p.add_argument("--switch-interval", type=float, default=None, help="seconds (default: tritonforge serve's)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    configure_logging(args.log_level)
    engine = FakeEngine(args.device_ms / 1000, args.host_ms / 1000, args.max_num_seqs)
    app = create_app(engine, max_queue=100000, stream_interval_s=args.stream_interval)
    switch = {} if args.switch_interval is None else {"switch_interval_s": args.switch_interval}
    serve_app(app, args.host, args.port, args.log_level, shutdown_timeout_s=5, **switch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
