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
    Starlette never started (the client left first) has no ``finally`` of its own to run.

    ``content`` yields one string per batch of events (see :func:`event_batches`): one write per engine
    step per stream, and fewer when the handler falls behind. With ``stream_interval_s`` > 0 the stream
    waits that long after each write, so that the events of several steps go out together (fewer writes
    per token, coarser arrival of tokens; the first write is not delayed).
    """

    def __init__(self, state: ServerState, group: RequestGroup, content, headers: dict[str, str]):
        if state.stream_interval_s > 0:
            content = _paced(group, content, state.stream_interval_s)
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.state, self.group = state, group

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self.group.done:
                log.info("request %s: stream ended before the request did (client gone?); aborting", self.group.id)
            self.state.engine.abort(self.group)


async def _paced(group: RequestGroup, chunks, interval_s: float):
    async for chunk in chunks:
        yield chunk
        if not group.done:
            await asyncio.sleep(interval_s)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


async def event_batches(state: ServerState, group: RequestGroup, request=None):
    """Yield lists of (index, RequestOutput): every event that has arrived since the last batch (one
    engine step's, or several steps' when the handler fell behind), until every request of the group
    has finished.

    Raises the APIError an event carries, APIError(500) when the engine dies, APIError(408) when the
    backstop deadline passes, and ClientGone when ``request`` (given for non-streaming handlers) has
    disconnected; in the last two cases the group is aborted first. Events before a failing one are
    yielded first. The deadline and the client are checked each time the engine pokes the group (every
    ``POKE_S``), not at every event.
    """
    remaining = len(group.request_ids)
    deadline = (group.submitted + group.timeout_s + DEADLINE_GRACE_S) if group.timeout_s is not None else None
    while remaining:
        await group.wait()
        if group.poked:
            group.poked = False
            if request is not None and await request.is_disconnected():
                state.engine.abort(group)
                log.info("request %s: client disconnected; aborted", group.id)
                raise ClientGone(group.id)
            if deadline is not None and time.monotonic() > deadline:
                state.engine.abort(group)
                raise APIError(408, f"request timed out after {group.timeout_s}s", code="timeout")
        batch = []
        for index, item in group.take():
            failure = _failure(item)
            if failure is not None:
                if batch:
                    yield batch
                raise failure
            remaining -= item.finished
            batch.append((index, item))
        if batch:
            yield batch


async def events(state: ServerState, group: RequestGroup, request=None):
    """Yield (index, RequestOutput) one at a time; see :func:`event_batches`."""
    async for batch in event_batches(state, group, request):
        for event in batch:
            yield event


def _failure(item) -> APIError | None:
    """The APIError that an event stands for, or None for a good output."""
    if isinstance(item, APIError):
        return item
    if isinstance(item, EngineDeadError):
        return APIError(500, f"{item}", code="engine_error")
    if isinstance(item, Exception):
        return APIError(500, f"internal error: {item}", code="engine_error")
    if item.finished and item.finish_reason == "error":
        return APIError(500, f"the engine failed on this request: {item.error}", code="engine_error")
    return None


def timeout_error(group: RequestGroup) -> APIError:
    return APIError(408, f"request {group.id} timed out after {group.timeout_s}s (set \"timeout\" in the request, "
                    "or the server's --request-timeout)", code="timeout")
