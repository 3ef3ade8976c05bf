"""The simple JSON routes (the earlier engine's), used by ``tritonforge generate --url``, ``status`` and ``cancel``.

    POST /generate          {"prompt": "text" | [token ids], "max_tokens": 128, "temperature", "top_p", "top_k",
                             "min_p", "repetition_penalty", "seed", "stop": str | [str], "ignore_eos", "timeout"}
                            -> {"id", "text", "token_ids", "finish_reason", "num_prompt_tokens", "num_output_tokens"}
    POST /generate/stream   same body -> server-sent events, one per engine output (those of one step in one write):
                            data: {"id", "text": <new text>, "token_ids": <new ids>, "finished", "finish_reason"}
                            ... ending with data: [DONE] (an error mid-stream: data: {"error": {...}})
    GET  /status/{id}       -> {"id", "state": queued|running|finished|cancelled|failed, "created",
                                "num_prompt_tokens", "num_output_tokens", "finish_reasons", "error"}
                               (finished requests are remembered for a while; 404 otherwise)
    POST /cancel/{id}       -> {"id", "cancelled": true if it was still running, "state"}

The id is the ``X-Request-Id`` header of any generation response (OpenAI routes included).
Errors use OpenAI's error body, as everywhere else; a timed-out /generate answers 408.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engine.server import engine_requests as er
from engine.server import openai_stream as fmt
from engine.server.protocol import APIError, GenerateRequest, parse_request
from engine.server.state import (
    ClientGone,
    GroupStreamingResponse,
    ServerState,
    event_batches,
    events,
    log,
    new_id,
    timeout_error,
)

router = APIRouter()


async def _submit(request: Request):
    state: ServerState = request.app.state.server
    body = parse_request(GenerateRequest, await request.body())
    prompt = er.generate_prompt(state.llm, body)
    params = er.sampling_params(state.llm, body, body.max_tokens, None)
    group = state.engine.submit(new_id("gen"), er.copies([prompt], params, 1), state.timeout_for(body.timeout))
    log.info("request %s: generate, %d prompt tokens, max_tokens %d", group.id, len(prompt), params.max_tokens)
    return state, group, len(prompt)


@router.post("/generate")
async def generate(request: Request):
    state, group, prompt_tokens = await _submit(request)
    text, ids, reason = [], [], None
    try:
        async for _, out in events(state, group, request):
            text.append(out.new_text)
            ids += out.new_token_ids
            reason = out.finish_reason if out.finished else reason
    except ClientGone:
        return JSONResponse(APIError(499, "client closed the request").body(), status_code=499)
    finally:
        state.engine.abort(group)
    if reason == "timeout":
        raise timeout_error(group)
    return JSONResponse({"id": group.id, "text": "".join(text), "token_ids": ids, "finish_reason": reason,
                         "num_prompt_tokens": prompt_tokens, "num_output_tokens": len(ids)},
                        headers={"X-Request-Id": group.id})


@router.post("/generate/stream")
async def generate_stream(request: Request):
    state, group, _ = await _submit(request)

    async def stream():
        try:
            async for batch in event_batches(state, group):
                chunk = []
                for _, out in batch:
                    chunk.append(fmt.generate_event(group.id, out.new_text, out.new_token_ids, out.finished,
                                                    out.finish_reason))
                    if out.finish_reason == "timeout":
                        chunk.append(fmt.sse(timeout_error(group).body()))
                yield "".join(chunk)
            yield fmt.DONE
        except APIError as err:
            yield fmt.sse(err.body())
            yield fmt.DONE

    return GroupStreamingResponse(state, group, stream(), {"X-Request-Id": group.id})


@router.get("/status/{request_id}")
async def status(request: Request, request_id: str):
    group = request.app.state.server.engine.find(request_id)
    if group is None:
        raise APIError(404, f"no request {request_id!r} on this server (finished requests are kept for a while)",
                       param="request_id", code="request_not_found")
    return group.status()


@router.post("/cancel/{request_id}")
async def cancel(request: Request, request_id: str):
    engine = request.app.state.server.engine
    group = engine.find(request_id)
    if group is None:
        raise APIError(404, f"no request {request_id!r} on this server", param="request_id", code="request_not_found")
    was_running = not group.done
    engine.abort(group)
    log.info("request %s: cancel asked (was %s)", request_id, "running" if was_running else "done")
    return {"id": request_id, "cancelled": was_running, "state": group.status()["state"]}
