"""The server that ``bench/serve_bench.py`` measures: ``tritonforge serve`` started as a subprocess on a free
loopback port (so the load generator never competes with the engine loop for the GIL), logging at INFO with
timestamps into a file, waited for until ``/health`` answers, read (``/stats``) and stopped with SIGTERM
(graceful drain, then kill).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SERVER_START_TIMEOUT_S = 600


def missing_server_modules() -> list[str]:
    """What the spawned server needs and cannot import here, with the reason (a missing package, or a carried
    wheel that does not fit the machine's packages): carry their wheels, see README, lent GPU."""
    import importlib

    missing = []
    for name in ("fastapi", "uvicorn", "pydantic", "httpx"):
        try:
            importlib.import_module(name)
        except Exception as err:  # any failure to import means the server cannot start: report it, whatever it is
            missing.append(f"{name} ({type(err).__name__}: {err})")
    return missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_server(model_dir: Path, settings: dict, log_path: Path, stream_interval: float,
                 ops: dict[str, str] | None = None, switch_interval: float | None = None,
                 engine_in_process: bool = False) -> tuple[subprocess.Popen, str]:
    """``tritonforge serve`` on a free loopback port with the engine ``settings`` (EngineConfig fields), the
    kernel overrides ``ops`` (op name -> registered implementation) and, when given, its GIL switch interval."""
    port = free_port()
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "info", "--max-queue", "100000",
           "--stream-interval", str(stream_interval)]
    for key, value in settings.items():
        cmd += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    for name, impl in (ops or {}).items():
        cmd += ["--op", f"{name}={impl}"]
    if switch_interval is not None:
        cmd += ["--switch-interval", str(switch_interval)]
    if engine_in_process:
        cmd.append("--engine-in-process")
    return start_logged(cmd, log_path), f"http://127.0.0.1:{port}"


def start_logged(cmd: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``cmd`` with its stdout and stderr in ``log_path``, unbuffered (a killed server still leaves
    its lines: start-up phases with their timestamps, slow steps)."""
    log = open(log_path, "w")  # noqa: SIM115  (kept open for the server's lifetime, closed by the OS at exit)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def wait_healthy(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    import httpx

    end = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:  # not listening yet (still loading): poll again
            pass
        time.sleep(1)
    raise RuntimeError(f"the server did not become healthy in {SERVER_START_TIMEOUT_S}s")


def server_stats(url: str) -> dict:
    """The server's /stats after the run (steps, scheduler counters), or why it could not be read."""
    import httpx

    try:
        return httpx.get(url + "/stats", timeout=10).json()
    except (httpx.HTTPError, ValueError) as err:
        return {"error": f"{type(err).__name__}: {err}"}


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
