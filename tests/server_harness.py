"""Test servers: the real app on uvicorn, in a thread of the test process, on a free loopback port.

    with running_server(engine, api_key="k") as server:
        httpx.get(server.url + "/health")

The engine is the test's own (tiny factory model, torch backend). ``slow_steps(engine, seconds)`` makes
every engine step take at least that long, so that timeouts, cancellation and queue limits can be
reached deterministically on a fast CPU model; ``fail_steps(engine)`` makes the next step raise.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass

import httpx

START_TIMEOUT_S = 30


@dataclass
class RunningServer:
    url: str
    app: object
    server: object
    thread: threading.Thread

    @property
    def async_engine(self):
        return self.app.state.server.engine

    def stats(self) -> dict:
        return httpx.get(self.url + "/stats", timeout=10).json()

    def wait_for(self, predicate, timeout_s: float = 10.0, what: str = "condition") -> dict:
        """Poll /stats until ``predicate(stats)`` holds; fail the test after ``timeout_s``."""
        end = time.monotonic() + timeout_s
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > end:
                raise AssertionError(f"{what} not reached within {timeout_s}s; last stats {stats}")
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(engine, **app_kwargs):
    import uvicorn

    from engine.server.app import create_app

    app = create_app(engine, **app_kwargs)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    end = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > end:
            raise RuntimeError(f"the test server did not start on port {port}")
        time.sleep(0.02)
    running = RunningServer(f"http://127.0.0.1:{port}", app, server, thread)
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)


def slow_steps(engine, seconds: float):
    """Every engine step takes at least ``seconds`` (a stand-in for a big model on a busy GPU)."""
    step = engine.step

    def slow_step():
        time.sleep(seconds)
        return step()

    engine.step = slow_step
    return engine


class InjectedFailure(RuntimeError):
    """Raised by a test-broken engine step."""


def fail_steps(engine, after: int = 0):
    """Steps after the first ``after`` ones raise InjectedFailure (an escaping engine bug)."""
    step, count = engine.step, [0]

    def failing_step():
        count[0] += 1
        if count[0] > after:
            raise InjectedFailure("injected engine failure")
        return step()

    engine.step = failing_step
    return engine
