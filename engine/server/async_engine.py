"""The one engine loop thread, and the asyncio side that HTTP handlers talk to.

    HTTP handlers (event loop) --submit/abort--> inbox (SimpleQueue) --drained at the top of each step-->
    engine loop thread: add/abort -> LLMEngine.step() -> outputs --call_soon_threadsafe--> per-request mailboxes

Only the loop thread touches the :class:`LLMEngine` (its scheduler and KV cache take no locks: they have
one owner). Under ``tritonforge serve`` that engine is an :class:`engine.engine_process.EngineProcess`:
the same calls, with the engine itself stepping in a child process. Handlers never block it: they put a
command in the inbox, set a wake-up event, and await their group's mailbox, which the loop thread fills
through ``loop.call_soon_threadsafe`` (one callback per step for all requests). An HTTP request with
several completions (``n > 1``, several prompts) is one :class:`RequestGroup` of several engine requests
sharing one mailbox.

The mailbox is a deque and one future: a step's events for a group wake its handler once, and the handler
takes everything pending at once (one SSE write per step per stream, or fewer when it falls behind). No
timer is armed per wait: every ``POKE_S`` one callback pokes all live groups, and a poked handler checks
its deadline and whether its client is still there.

A step longer than ``SLOW_STEP_S`` is logged as a warning (with the running and waiting counts), so that
stalls (first launches of a new shape, a busy GPU) show in the server's log.

Failure handling: an exception escaping ``LLMEngine.step`` marks the engine dead (``/health`` -> 503) and
every request still in flight gets an :class:`EngineDeadError` event (-> HTTP 500) instead of hanging;
new submissions are refused with 503. Requests are bounded: once more than ``max_queue`` requests wait
for a slot, ``submit`` answers 429 with ``Retry-After``; a request whose own completions (prompts x n)
outnumber ``max_queue`` could never be admitted, so it gets 400 naming the limit instead.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from engine.sampling_params import SamplingParams
from engine.server.metrics import ServerMetrics
from engine.server.protocol import APIError

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5          # how long an idle loop sleeps before looking at the inbox again
STATS_INTERVAL_S = 0.05    # scheduler statistics are mirrored at most this often while busy
FINISHED_KEPT = 1024       # finished groups remembered for GET /status
POKE_S = 0.5               # how often waiting handlers are woken to check their deadline and client
SLOW_STEP_S = 1.0          # an engine step longer than this is logged as a warning
STALL_S = 120.0            # a loop iteration longer than this marks the engine unhealthy (first-launch
                           # autotuning of a new shape can take tens of seconds, a hung GPU forever)


class EngineDeadError(RuntimeError):
    """The engine loop stopped (an internal error, or the server is shutting down)."""


@dataclass
class EngineRequest:
    prompt_token_ids: list[int]
    params: SamplingParams


@dataclass
class RequestGroup:
    """One HTTP request's engine requests; events arrive as (index, RequestOutput | Exception)."""

    id: str
    request_ids: list[str]
    requests: list[EngineRequest]
    timeout_s: float | None
    created: float = field(default_factory=time.time)
    submitted: float = field(default_factory=time.monotonic)
    pending: collections.deque = field(default_factory=collections.deque)   # (index, output) not yet taken
    poked: bool = False
    finish_reasons: list = field(default_factory=list)
    num_output_tokens: list = field(default_factory=list)
    cancelled: bool = False
    error: str | None = None

    def __post_init__(self) -> None:
        self.finish_reasons = [None] * len(self.request_ids)
        self.num_output_tokens = [0] * len(self.request_ids)
        self._waiter: asyncio.Future | None = None

    # --- the mailbox (event loop only) ---

    def put(self, event: tuple[int, object]) -> None:
        self.pending.append(event)
        self._wake()

    def poke(self) -> None:
        """Wake the handler even without an event (it then checks its deadline and client)."""
        self.poked = True
        self._wake()

    def take(self) -> list[tuple[int, object]]:
        """Every event that has arrived and not been taken, oldest first."""
        events = list(self.pending)
        self.pending.clear()
        return events

    async def wait(self) -> None:
        """Until an event is pending or the group has been poked."""
        if self.pending or self.poked:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def done(self) -> bool:
        return self.error is not None or all(r is not None for r in self.finish_reasons)

    def status(self) -> dict:
        started = any(self.num_output_tokens)
        state = ("failed" if self.error else "cancelled" if self.cancelled else "finished" if self.done
                 else "running" if started else "queued")
        return {"id": self.id, "state": state, "created": int(self.created),
                "num_prompt_tokens": sum(len(r.prompt_token_ids) for r in self.requests),
                "num_output_tokens": sum(self.num_output_tokens), "finish_reasons": list(self.finish_reasons),
                "error": self.error}


@dataclass
class _Timing:
    group: RequestGroup
    index: int
    first_token: float | None = None
    last_token: float | None = None


class AsyncEngine:
    def __init__(self, engine, max_queue: int = 1024, metrics: ServerMetrics | None = None):
        self.engine = engine
        self.max_queue = max_queue
        self.metrics = metrics or ServerMetrics()
        self.error: BaseException | None = None
        self.stopping = False
        self.groups: dict[str, RequestGroup] = {}                       # event-loop side: live groups
        self.finished: collections.OrderedDict[str, RequestGroup] = collections.OrderedDict()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._live: dict[str, _Timing] = {}                              # loop-thread side
        self._stats: dict = dict(engine.scheduler.stats(), num_steps=engine.num_steps)
        self._stats_time = 0.0
        self.heartbeat = time.monotonic()   # written by the loop thread at every iteration
        self._poke_timer: asyncio.TimerHandle | None = None

    # --- lifecycle (event loop) --------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()
        self.metrics.alive.set(1)
        self._poke_timer = self._loop.call_later(POKE_S, self._poke)

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """Abort what is still in flight, stop the loop thread and wait for it (at most ``timeout_s``)."""
        self.stopping = True
        self._send(("stop",))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, timeout_s)
            if self._thread.is_alive():
                log.error("the engine loop did not stop within %.0fs", timeout_s)
        self._fail_all("the server is shutting down")
        if self._poke_timer is not None:
            self._poke_timer.cancel()

    @property
    def alive(self) -> bool:
        return self.error is None and self._thread is not None and self._thread.is_alive()

    @property
    def stalled_for(self) -> float:
        """Seconds since the loop last came round, when that is more than STALL_S; else 0."""
        quiet = time.monotonic() - self.heartbeat
        return quiet if quiet > STALL_S else 0.0

    def stats(self) -> dict:
        """The scheduler statistics as of the last step (a snapshot published by the loop thread)."""
        return dict(self._stats)

    # --- requests (event loop) ---------------------------------------------------------------------

    def submit(self, group_id: str, requests: list[EngineRequest], timeout_s: float | None) -> RequestGroup:
        if self.error is not None or self.stopping or not self.alive:
            reason = "the engine has stopped after an internal error" if self.error else "the server is stopping"
            raise APIError(503, f"{reason}; no new requests are accepted", code="engine_unavailable")
        if len(requests) > self.max_queue:
            self.metrics.rejected.labels("too_many_completions").inc()
            raise APIError(400, f"this request asks for {len(requests)} completions (prompts x n), more than the "
                           f"server ever queues at once ({self.max_queue}, its --max-queue); ask for at most "
                           f"{self.max_queue}", param="n", code="too_many_completions")
        waiting = sum(len(g.request_ids) for g in self.groups.values()) - int(self._stats.get("num_running", 0))
        if waiting + len(requests) > self.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            raise APIError(429, f"the server's queue is full ({waiting} requests waiting, at most {self.max_queue}); "
                           "retry later", code="queue_full", headers={"Retry-After": "1"})
        ids = [group_id if len(requests) == 1 else f"{group_id}-{i}" for i in range(len(requests))]
        group = RequestGroup(group_id, ids, requests, timeout_s)
        self.groups[group_id] = group
        self._send(("add", group))
        return group

    def abort(self, group: RequestGroup) -> None:
        if not group.done:
            group.cancelled = True
            self._send(("abort", group.request_ids))

    def find(self, group_id: str) -> RequestGroup | None:
        return self.groups.get(group_id) or self.finished.get(group_id)

    def _send(self, command: tuple) -> None:
        self._inbox.put(command)
        self._wake.set()

    def _poke(self) -> None:
        """Event loop, every POKE_S: wake every live group's handler."""
        for group in self.groups.values():
            group.poke()
        self._poke_timer = self._loop.call_later(POKE_S, self._poke)

    def _dispatch(self, events: list[tuple[RequestGroup, int, object]]) -> None:
        """Event loop: hand the loop thread's events to their groups' mailboxes."""
        for group, index, item in events:
            if isinstance(item, Exception):
                group.error = group.error or str(item)
            else:
                group.num_output_tokens[index] = item.num_output_tokens
                if item.finished:
                    group.finish_reasons[index] = item.finish_reason
            group.put((index, item))
            if group.done and self.groups.pop(group.id, None) is not None:
                self._remember(group)

    def _remember(self, group: RequestGroup) -> None:
        self.finished[group.id] = group
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)

    def _fail_all(self, reason: str) -> None:
        """Event loop: every group still waiting gets an error event (nothing is left hanging)."""
        failure = EngineDeadError(reason)
        self._dispatch([(g, 0, failure) for g in list(self.groups.values())])

    def _on_death(self, err: BaseException) -> None:
        self.error = err
        self.metrics.alive.set(0)
        self._fail_all(f"the engine failed: {type(err).__name__}: {err}")

    # --- the loop thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        engine = self.engine
        try:
            while True:
                self.heartbeat = time.monotonic()
                self._wake.clear()
                if not self._drain_inbox():
                    break
                if engine.has_unfinished():
                    start = time.monotonic()
                    self._publish(engine.step())
                    if time.monotonic() - start > SLOW_STEP_S:
                        self._warn_slow_step(time.monotonic() - start)
                    self._refresh_stats(force=False)
                else:
                    self._refresh_stats(force=True)
                    self._wake.wait(IDLE_WAIT_S)
            self._stop_engine()
        except Exception as err:  # anything escaping the engine: mark it dead, fail requests, never hang
            log.exception("the engine loop died; %d requests in flight fail", len(self._live))
            self._post(self._on_death, err)
            return
        self._post(self._fail_all, "the server is shutting down")

    def _warn_slow_step(self, seconds: float) -> None:
        stats = self.engine.scheduler.stats()
        log.warning("engine step %d took %.2f s (%d running, %d waiting after it)", self.engine.num_steps, seconds,
                    stats.get("num_running", 0), stats.get("num_waiting", 0))

    def _drain_inbox(self) -> bool:
        """Apply queued adds and aborts; False once a stop command arrives."""
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                return True
            if command[0] == "stop":
                return False
            if command[0] == "add":
                self._add(command[1])
            else:
                for request_id in command[1]:
                    self.engine.abort(request_id)

    def _add(self, group: RequestGroup) -> None:
        for index, (request_id, req) in enumerate(zip(group.request_ids, group.requests, strict=True)):
            try:
                self.engine.add_request(req.prompt_token_ids, req.params, request_id=request_id,
                                        timeout_s=group.timeout_s)
            except ValueError as err:
                for earlier in group.request_ids[:index]:
                    self.engine.abort(earlier)
                self._post(self._dispatch, [(group, index, APIError(400, str(err)))])
                return
            self.metrics.prompt_tokens.inc(len(req.prompt_token_ids))
        for index, request_id in enumerate(group.request_ids):
            self._live[request_id] = _Timing(group, index)

    def _publish(self, outputs) -> None:
        if not outputs:
            return
        now = time.monotonic()
        events = []
        for out in outputs:
            timing = self._live.get(out.request_id)
            if timing is None:
                continue
            self._observe(timing, out, now)
            if out.finished:
                del self._live[out.request_id]
            events.append((timing.group, timing.index, out))
        self._post(self._dispatch, events)

    def _observe(self, timing: _Timing, out, now: float) -> None:
        m, new = self.metrics, len(out.new_token_ids)
        if new:
            m.generation_tokens.inc(new)
            if timing.first_token is None:
                timing.first_token = now
                m.ttft.observe(now - timing.group.submitted)
                new -= 1
            if new > 0 and timing.last_token is not None:
                gap = (now - timing.last_token) / new
                for _ in range(new):
                    m.itl.observe(gap)
            timing.last_token = now
        if out.finished:
            m.requests.labels(out.finish_reason or "unknown").inc()
            m.e2e.observe(now - timing.group.submitted)

    def _refresh_stats(self, force: bool) -> None:
        now = time.monotonic()
        if force or now - self._stats_time >= STATS_INTERVAL_S:
            stats = dict(self.engine.scheduler.stats(), num_steps=self.engine.num_steps)
            self._stats = stats
            self._stats_time = now
            self.metrics.observe_stats(stats)

    def _stop_engine(self) -> None:
        """Abort every request still in flight and flush their final outputs."""
        for request_id in list(self._live):
            self.engine.abort(request_id)
        while self.engine.has_unfinished():
            self._publish(self.engine.step())
        self._refresh_stats(force=True)

    def _post(self, fn, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop has closed: nobody is left to tell
            log.debug("event loop closed; dropped %s", getattr(fn, "__name__", fn))
