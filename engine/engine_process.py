"""The engine in a child process, for the server: HTTP work and the engine's host work stop sharing a GIL.

In one process the server's event loop (parsing, SSE writes for every stream) and the engine loop thread
(scheduling, metadata, launches) take turns on the GIL, and every GPU wait hands it to the HTTP side,
which keeps it up to a switch interval. On an H200 that held 64 streams to 0.62-0.74x of the same
workload run offline (bench/results/NVIDIA_H200/run5_notes.md). :class:`EngineProcess` runs the
:class:`LLMEngine` in a spawned child and stands in for it in the server's loop thread:

    loop thread:  add_request / abort (checked here, queued) -> step() ---- one message ---->  child:
                                                                                   apply adds and aborts,
                  outputs, scheduler stats, num_steps, has_unfinished  <--- one message ---- LLMEngine.step()

One round trip per step; the loop thread waits on the pipe with the GIL released, so the HTTP side runs
meanwhile, and the child's Python runs in parallel with it. Requests are checked in the parent by the same
``check_request`` the engine uses (the parent loads the tokenizer and config, not the weights), so a bad
request still fails at once with its message. The child ignores SIGINT (the parent drains and stops it),
exits when the parent's end of the pipe closes, and a start-up failure there (a bad model file, no GPU
memory) is raised in the parent as the same exception.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import uuid
from types import SimpleNamespace

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine, RequestOutput, check_request
from engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0


class EngineProcessError(RuntimeError):
    """The child engine failed or went away."""


class EngineProcess:
    """An :class:`LLMEngine` in a child process, with the surface the server uses (one caller thread)."""

    def __init__(self, config: EngineConfig, log_level: str = "info"):
        from engine.loader import load_model_source

        self.config = cfg = config.resolved()
        source = load_model_source(cfg.model, revision=cfg.revision, offline=cfg.offline)
        self.model_config = source.config
        self.tokenizer = source.tokenizer
        self.generation_defaults = dict(source.generation_defaults or {})
        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be initialised again in a forked child
        self._conn, child_end = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(config, child_end, log_level),
                                 name="tritonforge-engine", daemon=True)
        self._proc.start()
        child_end.close()
        kind, *payload = self._recv()  # the child's start-up: weights, KV cache, warm-up, graphs
        if kind == "error":
            self._proc.join(5)
            raise payload[0]
        facts = payload[0]
        self.max_model_len = facts["max_model_len"]
        self.eos_token_ids = facts["eos_token_ids"]
        self.dtype = facts["dtype"]
        self.scheduler = SimpleNamespace(kv=SimpleNamespace(num_blocks=facts["num_blocks"]),
                                         stats=lambda: dict(self._stats))
        self._stats: dict = facts["stats"]
        self.num_steps = 0
        self._adds: list[tuple] = []
        self._aborts: list[str] = []
        self._live: set[str] = set()
        self._child_busy = False
        self.closed = False

    # --- the LLMEngine surface (the server's loop thread) -------------------------------------------

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, timeout_s: float | None = None) -> str:
        self._check_open()
        token_ids, params, timeout_s = check_request(self, prompt, params, timeout_s)
        request_id = request_id or uuid.uuid4().hex
        if request_id in self._live:
            raise ValueError(f"request id {request_id!r} is already in use")
        self._adds.append((request_id, token_ids, params, timeout_s))
        self._live.add(request_id)
        return request_id

    def abort(self, request_id: str) -> bool:
        if request_id not in self._live:
            return False
        self._aborts.append(request_id)
        return True

    def has_unfinished(self) -> bool:
        return bool(self._adds or self._aborts or self._child_busy)

    def step(self) -> list[RequestOutput]:
        self._check_open()
        adds, aborts, self._adds, self._aborts = self._adds, self._aborts, [], []
        self._send(("step", adds, aborts))
        kind, *payload = self._recv()
        if kind == "error":
            raise EngineProcessError(f"the engine process failed: {payload[0]}")
        outputs, self._stats, self.num_steps, self._child_busy = payload
        for out in outputs:
            if out.finished:
                self._live.discard(out.request_id)
        return outputs

    def close(self) -> None:
        """Stop the child (its unfinished requests are dropped) and wait for it; calling again does nothing."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError, ValueError):  # the child may be gone already
            self._conn.send(("stop",))
        self._proc.join(STOP_TIMEOUT_S)
        if self._proc.is_alive():
            log.error("the engine process did not stop within %.0f s; killing it", STOP_TIMEOUT_S)
            self._proc.kill()
            self._proc.join()
        self._conn.close()

    # --- the pipe -----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this engine was closed (EngineProcess.close); create a new one")

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError) as err:
            raise EngineProcessError(f"the engine process is gone (exit code {self._proc.exitcode}): {err}") from err

    def _recv(self) -> tuple:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as err:
            self._proc.join(1)
            raise EngineProcessError(f"the engine process died (exit code {self._proc.exitcode}); see its log "
                                     "lines above") from err


def _child_main(config: EngineConfig, conn, log_level: str) -> None:
    """The child: build the engine, then one step per message until "stop" or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    from engine.commands.serve import configure_logging

    configure_logging(log_level)
    try:
        engine = LLMEngine(config)
    except BaseException as err:  # handed to the parent, which raises it where the server starts
        conn.send(("error", _picklable(err)))
        return
    conn.send(("ready", {"max_model_len": engine.max_model_len, "eos_token_ids": engine.eos_token_ids,
                         "dtype": engine.dtype, "num_blocks": engine.runner.num_blocks,
                         "stats": engine.scheduler.stats()}))
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the parent went away
                break
            if message[0] == "stop":
                break
            _, adds, aborts = message
            try:
                for request_id, token_ids, params, timeout_s in adds:
                    engine.add_request(token_ids, params, request_id=request_id, timeout_s=timeout_s)
                for request_id in aborts:
                    engine.abort(request_id)
                outputs = engine.step() if engine.has_unfinished() else []
                conn.send(("ok", outputs, engine.scheduler.stats(), engine.num_steps, engine.has_unfinished()))
            except Exception as err:  # the parent marks the engine dead and fails its requests
                log.exception("the engine failed")
                conn.send(("error", f"{type(err).__name__}: {err}"))
                break
    finally:
        engine.close()


def _picklable(err: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return EngineProcessError(f"{type(err).__name__}: {err}")
