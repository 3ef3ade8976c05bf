"""POST /v1/completions and /v1/chat/completions, streaming and not.

Each HTTP request becomes one request group in the engine (n copies of each prompt); the response id
(``cmpl-...`` / ``chatcmpl-...``) is also the group's id, sent back as the ``X-Request-Id`` header and
usable with ``GET /status/{id}`` and ``POST /cancel/{id}``.

Timeouts (the request's ``timeout`` field, else the server's ``--request-timeout``): a non-streaming
request that runs out of time gets HTTP 408 with OpenAI's error body (type and code ``timeout``); a streaming one
gets its choices' final chunks with finish_reason ``timeout`` and then an error event. A client that
disconnects has its request aborted, which frees its KV-cache blocks at once.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engine.server import engine_requests as er
from engine.server import openai_stream as fmt
from engine.server.protocol import APIError, ChatCompletionRequest, CompletionRequest, parse_request
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


@router.post("/v1/completions")
async def completions(request: Request):
    state: ServerState = request.app.state.server
    body = parse_request(CompletionRequest, await request.body())
    state.check_model(body.model)
    er.unsupported(body)
    prompts = er.completion_prompts(state.llm, body)
    params = er.sampling_params(state.llm, body, body.max_tokens, er.completion_logprobs(body))
    return await _serve(request, state, body, prompts, params, chat=False)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    state: ServerState = request.app.state.server
    body = parse_request(ChatCompletionRequest, await request.body())
    state.check_model(body.model)
    prompt = er.chat_prompt(state.llm, body)
    params = er.sampling_params(state.llm, body, er.chat_max_tokens(state.llm, body, prompt), er.chat_logprobs(body))
    return await _serve(request, state, body, [prompt], params, chat=True)


async def _serve(request: Request, state: ServerState, body, prompts, params, chat: bool):
    group_id = new_id("chatcmpl" if chat else "cmpl")
    group = state.engine.submit(group_id, er.copies(prompts, params, body.n), state.timeout_for(body.timeout))
    log.info("request %s: %d prompt(s) x n=%d, prompt tokens %s, max_tokens %d", group_id, len(prompts), body.n,
             [len(p) for p in prompts], params.max_tokens)
    prompt_tokens = sum(len(p) for p in prompts)
    headers = {"X-Request-Id": group_id}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = _stream(state, group, chat, params.logprobs is not None, include_usage, prompt_tokens)
        return GroupStreamingResponse(state, group, stream, headers)
    try:
        result = await _collect(state, group, request, chat, params.logprobs is not None, prompt_tokens, body.n)
    except ClientGone:
        return JSONResponse(APIError(499, "client closed the request").body(), status_code=499)
    finally:
        state.engine.abort(group)  # a no-op once the group is done
    return JSONResponse(result, headers=headers)


async def _collect(state, group, request, chat: bool, want_logprobs: bool, prompt_tokens: int, n: int) -> dict:
    size = len(group.request_ids)
    texts, entries, reasons, counts = [[] for _ in range(size)], [[] for _ in range(size)], [None] * size, [0] * size
    cached = [0] * size
    async for index, out in events(state, group, request):
        texts[index].append(out.new_text)
        entries[index] += out.logprobs or []
        counts[index], cached[index] = out.num_output_tokens, out.num_cached_tokens
        if out.finished:
            reasons[index] = out.finish_reason
    if "timeout" in reasons:
        raise timeout_error(group)
    choices = []
    for i in range(size):
        text = "".join(texts[i])
        logprobs = None
        if want_logprobs:
            logprobs = state.formatter.chat(entries[i]) if chat else state.formatter.completion(entries[i])
        if chat:
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                            "finish_reason": reasons[i]})
        else:
            choices.append({"index": i, "text": text, "logprobs": logprobs, "finish_reason": reasons[i]})
    usage = fmt.usage(prompt_tokens, sum(counts), sum(cached[::n]))  # the first copy of each prompt
    build = fmt.chat_response if chat else fmt.completion_response
    return build(group.id, int(group.created), state.model_name, choices, usage)


async def _stream(state, group, chat: bool, want_logprobs: bool, include_usage: bool, prompt_tokens: int):
    """The SSE stream: one string per batch of events (see event_batches), so one write per step."""
    size = len(group.request_ids)
    encoder = fmt.ChunkEncoder(group.id, int(group.created), state.model_name, chat, include_usage)
    counts, offsets = [0] * size, [0] * size
    timed_out = False
    try:
        if chat:
            yield "".join(encoder.chat(i, {"role": "assistant", "content": ""}, None) for i in range(size))
        async for batch in event_batches(state, group):
            chunk = []
            for index, out in batch:
                counts[index] = out.num_output_tokens
                reason = out.finish_reason if out.finished else None
                timed_out = timed_out or reason == "timeout"
                if not (out.new_text or out.finished or (want_logprobs and out.logprobs)):
                    continue
                if chat:
                    logprobs = state.formatter.chat(out.logprobs or []) if want_logprobs else None
                    delta = {"content": out.new_text} if out.new_text else {}
                    chunk.append(encoder.chat(index, delta, reason, logprobs))
                else:
                    logprobs = (state.formatter.completion(out.logprobs or [], offsets[index]) if want_logprobs
                                else None)
                    offsets[index] += len(out.new_text)
                    chunk.append(encoder.completion(index, out.new_text, reason, logprobs))
            if chunk:
                yield "".join(chunk)
        if timed_out:
            yield fmt.sse(timeout_error(group).body())
        if include_usage:
            model, created = state.model_name, int(group.created)
            yield fmt.sse(fmt.usage_chunk(group.id, created, model, chat, fmt.usage(prompt_tokens, sum(counts))))
        yield fmt.DONE
    except APIError as err:
        log.warning("request %s failed mid-stream: %s", group.id, err.message)
        yield fmt.sse(err.body())
        yield fmt.DONE
