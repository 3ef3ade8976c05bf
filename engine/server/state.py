"""What every route shares: the async engine, the served model's name, the defaults; and the one way a
handler waits for its request's events (with disconnect checks and a last-resort deadline)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass

from fastapi.responses import StreamingResponse

from engine.server.async_engine import AsyncEngine, EngineDeadError, RequestGroup
from engine.server.openai_stream import LogprobFormatter
from engine.server.protocol import APIError

log = logging.getLogger("engine.server")

POLL_S = 0.5          # how often a waiting non-streaming handler checks that its client is still there
DEADLINE_GRACE_S = 5  # the engine enforces timeouts; this backstop only fires if the engine loop is stuck


class ClientGone(Exception):
    """The client closed the connection; its request has been aborted."""


@dataclass
class ServerState:
    engine: AsyncEngine
    model_name: str
    api_key: str | None
    request_timeout_s: float | None
    formatter: LogprobFormatter
    created: int
    stream_interval_s: float = 0.0   # least time between two writes of one stream (0: write as tokens come)

    @property
    def llm(self):
        return self.engine.engine

    def check_model(self, name: str | None) -> None:
        if name and name != self.model_name:
            raise APIError(404, f"model {name!r} does not exist; this server serves {self.model_name!r} "
                           "(see GET /v1/models)", param="model", code="model_not_found")

    def timeout_for(self, requested: float | None) -> float | None:
        return requested if requested is not None else self.request_timeout_s


class GroupStreamingResponse(StreamingResponse):
    """A streaming response that aborts its request group however the response ends: a generator that
    Starlette never started (the client left first) has no ``finally`` of its own to run."""

    def __init__(self, state: ServerState, group: RequestGroup, content, headers: dict[str, str]):
        super().__init__(_coalesce(group, content, state.stream_interval_s), media_type="text/event-stream",
                         headers=headers)
        self.state, self.group = state, group

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.group.done:
                log.info("request %s: stream ended before the request did (client gone?); aborting", self.group.id)
            self.state.engine.abort(self.group)


async def _coalesce(group: RequestGroup, chunks, interval_s: float):
    """Join the SSE events that are ready together into one write.

    Each write costs a socket send and the HTTP layer's framing, a large share of the server's work per
    token. A client that keeps up gets one event per write; when the handler falls behind (many
    streams, fast steps), the events already queued for its group go out in one write instead of many.
    With ``interval_s`` > 0 a stream waits that long after each write, so that the events of several
    steps go out together (fewer writes per token, coarser arrival of tokens; the first write is not
    delayed).
    """
    pending: list[str] = []
    async for chunk in chunks:
        pending.append(chunk)
        if group.queue.empty():
            yield "".join(pending)
            pending.clear()
            if interval_s > 0 and not group.done:
                await asyncio.sleep(interval_s)
    if pending:
        yield "".join(pending)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def events(state: ServerState, group: RequestGroup, request=None):
    """Yield (index, RequestOutput) until every request of the group has finished.

    Raises the APIError an event carries, APIError(500) when the engine dies, APIError(408) when the
    backstop deadline passes, and ClientGone when ``request`` (given for non-streaming handlers) has
    disconnected; in the last two cases the group is aborted first.
    """
    remaining = len(group.request_ids)
    deadline = (group.submitted + group.timeout_s + DEADLINE_GRACE_S) if group.timeout_s is not None else None
    while remaining:
        try:
            index, item = await _get(group.queue, POLL_S)
        except asyncio.TimeoutError:  # not the builtin before Python 3.11
            if request is not None and await request.is_disconnected():
                state.engine.abort(group)
                log.info("request %s: client disconnected; aborted", group.id)
                raise ClientGone(group.id) from None
            if deadline is not None and time.monotonic() > deadline:
                state.engine.abort(group)
                raise APIError(408, f"request timed out after {group.timeout_s}s", code="timeout") from None
            continue
        if isinstance(item, APIError):
            raise item
        if isinstance(item, EngineDeadError):
            raise APIError(500, f"{item}", code="engine_error")
        if isinstance(item, Exception):
            raise APIError(500, f"internal error: {item}", code="engine_error")
        if item.finished:
            remaining -= 1
            if item.finish_reason == "error":
                raise APIError(500, f"the engine failed on this request: {item.error}", code="engine_error")
        yield index, item


async def _get(queue: asyncio.Queue, timeout: float):
    """``queue.get()`` with a timeout; asyncio.timeout (3.11+) costs no extra task per call, unlike wait_for."""
    if not queue.empty():
        return queue.get_nowait()
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(timeout):
            return await queue.get()
    return await asyncio.wait_for(queue.get(), timeout)


def timeout_error(group: RequestGroup) -> APIError:
    return APIError(408, f"request {group.id} timed out after {group.timeout_s}s (set \"timeout\" in the request, "
                    "or the server's --request-timeout)", code="timeout")
