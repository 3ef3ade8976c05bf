"""The engine in a child process, for the server: HTTP work and the engine's host work stop sharing a GIL.

In one process the server's event loop (parsing, SSE writes for every stream) and the engine loop thread
(scheduling, metadata, launches) take turns on the GIL, and every GPU wait hands it to the HTTP side,
which keeps it up to a switch interval. On an H200 that held 64 streams to 0.62-0.74x of the same
workload run offline (bench/results/NVIDIA_H200/run5_notes.md). :class:`EngineProcess` runs the
:class:`LLMEngine` in a spawned child and stands in for it in the server's loop thread:

    loop thread:  add_request / abort (checked here)  --commands (a sender thread)-->  child: apply them,
                  step() <--- (outputs, stats, last command applied, busy) ---------  LLMEngine.step(), again
                                                                                     while it has work

The child steps on its own while it has work, taking whatever commands have arrived between steps, and
sends each step's outputs, at most AHEAD of them unread (a semaphore the parent releases per read);
``step()`` here returns the next of them. So the engine's cadence does not wait
for the server's side: the loop thread receives and publishes with the GIL contended by the HTTP work,
while the child's Python runs in parallel. Commands go through a sender thread, so that a child blocked
on sending outputs never waits on a parent blocked on sending commands. Every command batch is numbered
and every outputs message says the last batch applied: the parent knows exactly when one more message
is due. Requests are checked in the parent by the same ``check_request`` the engine uses (the parent
loads the tokenizer and config, not the weights), so a bad request still fails at once with its message.
The child ignores SIGINT (the parent drains and stops it), exits when the parent's end of the pipe
closes, and a start-up failure there (a bad model file, no GPU memory) is raised in the parent as the
same exception.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
import uuid
from types import SimpleNamespace

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine, RequestOutput, check_request
from engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0
# How many steps the child may run ahead of what the parent has read: enough to keep it busy while the
# parent publishes, few enough that an abort (a client gone) lands within a few steps and a slow parent
# slows the engine instead of piling up outputs.
AHEAD = 3


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
        self._conn, child_out = ctx.Pipe(duplex=False)     # child -> parent: start-up, then outputs
        child_in, self._commands = ctx.Pipe(duplex=False)  # parent -> child: command batches
        self._slots = ctx.Semaphore(AHEAD)                 # outputs messages the child may send unread
        self._proc = ctx.Process(target=_child_main, args=(config, child_in, child_out, self._slots, log_level),
                                 name="tritonforge-engine", daemon=True)
        self._proc.start()
        child_in.close()
        child_out.close()
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
        self._sent = 0      # command batches sent
        self._applied = 0   # the last batch the child reported applied
        self.closed = False
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, name="engine-commands", daemon=True)
        self._sender.start()

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
        return bool(self._adds or self._aborts or self._child_busy or self._applied < self._sent)

    def step(self) -> list[RequestOutput]:
        """Send the queued adds and aborts, then return the child's next step's outputs (none when the
        child is idle and owes no answer)."""
        self._check_open()
        if self._adds or self._aborts:
            self._sent += 1
            self._outbox.put(("commands", self._sent, self._adds, self._aborts))
            self._adds, self._aborts = [], []
        if not (self._child_busy or self._applied < self._sent):
            return []
        kind, *payload = self._recv()
        if kind == "error":
            raise EngineProcessError(f"the engine process failed: {payload[0]}")
        self._slots.release()  # one read: the child may run one more step ahead
        outputs, self._stats, self.num_steps, self._applied, self._child_busy = payload
        for out in outputs:
            if out.finished:
                self._live.discard(out.request_id)
        return outputs

    def close(self) -> None:
        """Stop the child (its unfinished requests are dropped) and wait for it; calling again does nothing."""
        if self.closed:
            return
        self.closed = True
        self._slots.release()  # a child waiting for a slot must get to read "stop"
        self._outbox.put(("stop",))
        self._sender.join(STOP_TIMEOUT_S)
        self._proc.join(STOP_TIMEOUT_S)
        if self._proc.is_alive():
            log.error("the engine process did not stop within %.0f s; killing it", STOP_TIMEOUT_S)
            self._proc.kill()
            self._proc.join()
        self._conn.close()
        self._commands.close()

    # --- the pipe -----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this engine was closed (EngineProcess.close); create a new one")

    def _send_loop(self) -> None:
        """The sender thread: command batches to the child, in order, until "stop" (sent too)."""
        while True:
            message = self._outbox.get()
            try:
                self._commands.send(message)
            except (OSError, ValueError):
                return  # the child is gone: the receiving side reports it
            if message[0] == "stop":
                return

    def _recv(self) -> tuple:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as err:
            self._proc.join(1)
            raise EngineProcessError(f"the engine process died (exit code {self._proc.exitcode}); see its log "
                                     "lines above") from err


def _child_main(config: EngineConfig, commands, out, slots, log_level: str) -> None:
    """The child: build the engine, then step while there is work, taking commands between steps."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    from engine.commands.serve import configure_logging

    configure_logging(log_level)
    try:
        engine = LLMEngine(config)
    except BaseException as err:  # handed to the parent, which raises it where the server starts
        out.send(("error", _picklable(err)))
        return
    out.send(("ready", {"max_model_len": engine.max_model_len, "eos_token_ids": engine.eos_token_ids,
                        "dtype": engine.dtype, "num_blocks": engine.runner.num_blocks,
                        "stats": engine.scheduler.stats()}))
    applied = 0
    try:
        while True:
            slots.acquire()  # at most AHEAD outputs messages unread by the parent
            try:
                # Idle: wait for a command batch. Busy: take only the batches that have arrived, then step.
                while not engine.has_unfinished() or commands.poll():
                    message = commands.recv()
                    if message[0] == "stop":
                        return
                    applied = _apply(engine, message)
                    if not engine.has_unfinished():  # e.g. aborts of finished requests: answer the batch
                        break
                outputs = engine.step() if engine.has_unfinished() else []
                out.send(("outputs", outputs, engine.scheduler.stats(), engine.num_steps, applied,
                          engine.has_unfinished()))
            except EOFError:  # the parent went away
                return
            except Exception as err:  # the parent marks the engine dead and fails its requests
                log.exception("the engine failed")
                out.send(("error", f"{type(err).__name__}: {err}"))
                return
    finally:
        engine.close()


def _apply(engine: LLMEngine, message: tuple) -> int:
    """One command batch: its adds (checked by the parent already), then its aborts; returns its number."""
    _, number, adds, aborts = message
    for request_id, token_ids, params, timeout_s in adds:
        engine.add_request(token_ids, params, request_id=request_id, timeout_s=timeout_s)
    for request_id in aborts:
        engine.abort(request_id)
    return number


def _picklable(err: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # an exception that cannot cross the pipe goes as its type and message
        return EngineProcessError(f"{type(err).__name__}: {err}")
