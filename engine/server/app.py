"""The HTTP app: ``create_app(engine, ...)`` wires the routes, the API key, request ids and metrics.

    GET  /health    200 {"status": "ok"} while the engine loop runs; 503 once it has died, is stopping, or
                    has been stuck in one step for over two minutes
    GET  /ready     200 when the engine accepts requests (503 otherwise), with the scheduler's counters
    GET  /stats     the scheduler's statistics as of the last step (KV blocks free/used, running, waiting)
    GET  /metrics   Prometheus text format (see engine.server.metrics)
    GET  /v1/models the one served model, in OpenAI's list shape
    POST /v1/completions, /v1/chat/completions      see engine.server.openai_routes
    POST /generate, /generate/stream, GET /status/{id}, POST /cancel/{id}   see engine.server.simple_routes

With an API key, every route except /health, /ready and /metrics needs ``Authorization: Bearer <key>``
(401 with OpenAI's error body otherwise). Errors are always OpenAI's body ``{"error": {...}}``.
The engine loop thread starts with the app (lifespan) and stops when uvicorn shuts down: uvicorn first
stops accepting connections and lets in-flight responses finish (up to its graceful-shutdown timeout,
after which their handlers are cancelled and their requests aborted), then the loop thread is stopped.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from engine.server import metrics as metrics_mod
from engine.server.async_engine import AsyncEngine
from engine.server.openai_routes import router as openai_router
from engine.server.openai_stream import LogprobFormatter
from engine.server.protocol import APIError, error_body
from engine.server.simple_routes import router as simple_router
from engine.server.state import ServerState, log

OPEN_PATHS = ("/health", "/ready", "/metrics")


def create_app(engine, model_name: str | None = None, api_key: str | None = None, max_queue: int = 1024,
               request_timeout_s: float | None = None, shutdown_timeout_s: float = 10.0,
               stream_interval_s: float = 0.0) -> FastAPI:
    """An app serving ``engine`` (an :class:`engine.llm_engine.LLMEngine`, owned by the app from now on)."""
    if max_queue < 1:
        raise ValueError(f"max_queue must be >= 1, got {max_queue}")
    if request_timeout_s is not None and request_timeout_s <= 0:
        raise ValueError(f"request_timeout_s must be > 0 when given, got {request_timeout_s}")
    if stream_interval_s < 0:
        raise ValueError(f"stream_interval_s must be >= 0, got {stream_interval_s}")
    async_engine = AsyncEngine(engine, max_queue=max_queue)
    name = model_name or Path(str(engine.config.model).rstrip("/")).name or str(engine.config.model)
    state = ServerState(async_engine, name, api_key or None, request_timeout_s, LogprobFormatter(engine.tokenizer),
                        int(time.time()), stream_interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async_engine.start()
        log.info("serving %s (%s, %d KV blocks)", name, engine.config.backend, engine.scheduler.kv.num_blocks)
        yield
        log.info("shutting down: stopping the engine loop")
        await async_engine.shutdown(shutdown_timeout_s)

    app = FastAPI(title="tritonforge", lifespan=lifespan)
    app.state.server = state
    app.add_middleware(_AccessMiddleware, state=state)
    app.include_router(openai_router)
    app.include_router(simple_router)

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body(f"internal error: {type(err).__name__}: {err}", "server_error"), 500)

    @app.get("/health")
    async def health():
        stalled = async_engine.stalled_for
        if async_engine.alive and not async_engine.stopping and not stalled:
            return {"status": "ok"}
        reason = (f"engine failed: {async_engine.error}" if async_engine.error
                  else f"engine loop stalled for {stalled:.0f}s" if stalled else "engine not running")
        return JSONResponse({"status": "unhealthy", "reason": reason}, status_code=503)

    @app.get("/ready")
    async def ready():
        ok = async_engine.alive and not async_engine.stopping
        return JSONResponse({"ready": ok, **async_engine.stats()}, status_code=200 if ok else 503)

    @app.get("/stats")
    async def stats():
        return {"model": name, "alive": async_engine.alive, **async_engine.stats()}

    @app.get("/metrics")
    async def metrics():
        return Response(async_engine.metrics.render(), media_type=metrics_mod.CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": state.created,
                                            "owned_by": "tritonforge", "max_model_len": engine.max_model_len}]}

    return app


class _AccessMiddleware:
    """Pure ASGI (so streaming responses and disconnects pass through untouched): API key, HTTP metrics."""

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        key = self.state.api_key
        if key is not None and not path.startswith(OPEN_PATHS) and not _authorized(scope, key):
            body = error_body("missing or wrong API key; send 'Authorization: Bearer <key>'", "authentication_error",
                              code="invalid_api_key")
            await JSONResponse(body, status_code=401)(scope, receive, send)
            self._count(scope, 401)
            return None
        status = [500]

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self._count(scope, status[0])
        return None

    def _count(self, scope, status: int) -> None:
        endpoint = scope.get("endpoint")
        route = getattr(endpoint, "__name__", "unknown")
        self.state.engine.metrics.http_requests.labels(route, str(status)).inc()


def _authorized(scope, key: str) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())
    return False


