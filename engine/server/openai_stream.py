"""OpenAI's response shapes: server-sent-event chunks, whole responses, usage and logprobs.

Streams are ``data: <json>\\n\\n`` events ending with ``data: [DONE]\\n\\n``. A chat stream opens each
choice with a ``{"role": "assistant", "content": ""}`` delta; the last chunk of a choice carries its
``finish_reason``; with ``stream_options.include_usage`` every chunk has ``"usage": null`` and one more
chunk with no choices carries the usage. An error after the stream has started (a timeout, an engine
failure) is sent as ``data: {"error": {...}}`` before ``[DONE]``, which OpenAI's clients raise.

Finish reasons are OpenAI's ``stop`` and ``length``, plus the engine's ``abort`` (cancelled),
``timeout`` and ``error``.

Logprobs: completions use ``{"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}``;
chat uses ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}``.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring

DONE = "data: [DONE]\n\n"
_encode = json.JSONEncoder(ensure_ascii=False).encode   # one encoder, not one per call as json.dumps makes


def sse(payload: dict) -> str:
    return f"data: {_encode(payload)}\n\n"


def _string_or_null(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def generate_event(request_id: str, text: str, token_ids: list[int], finished: bool, finish_reason: str | None) -> str:
    """``sse({"id", "text", "token_ids", "finished", "finish_reason"})`` of /generate/stream, the same bytes,
    written out directly: this is built once per token per stream, where json.dumps is the larger cost."""
    return (f'data: {{"id": {encode_basestring(request_id)}, "text": {encode_basestring(text)}, '
            f'"token_ids": [{", ".join(map(str, token_ids))}], "finished": {"true" if finished else "false"}, '
            f'"finish_reason": {_string_or_null(finish_reason)}}}\n\n')


class ChunkEncoder:
    """One stream's SSE chunks, the same bytes as ``sse(completion_chunk(...))`` / ``sse(chat_chunk(...))``:
    the fields every chunk of the stream shares are encoded once, each chunk encodes only its own."""

    def __init__(self, response_id: str, created: int, model: str, chat: bool, with_usage: bool):
        head = (chat_chunk if chat else completion_chunk)(response_id, created, model, 0, "", None)
        del head["choices"]
        self._head = "data: " + _encode(head)[:-1] + ', "choices": [{"index": '
        self._tail = "}]" + (', "usage": null' if with_usage else "") + "}\n\n"
        self._body = '"delta": ' if chat else '"text": '

    def completion(self, index: int, text: str, finish_reason: str | None, logprobs: dict | None = None) -> str:
        return (f"{self._head}{index}, {self._body}{encode_basestring(text)}, "
                f"{self._rest(logprobs, finish_reason)}")

    def chat(self, index: int, delta: dict, finish_reason: str | None, logprobs: dict | None = None) -> str:
        return f"{self._head}{index}, {self._body}{_encode(delta)}, {self._rest(logprobs, finish_reason)}"

    def _rest(self, logprobs: dict | None, finish_reason: str | None) -> str:
        encoded = "null" if logprobs is None else _encode(logprobs)
        return f'"logprobs": {encoded}, "finish_reason": {_string_or_null(finish_reason)}{self._tail}'


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def completion_chunk(response_id: str, created: int, model: str, index: int, text: str,
                     finish_reason: str | None, logprobs: dict | None = None, with_usage: bool = False) -> dict:
    chunk = {"id": response_id, "object": "text_completion", "created": created, "model": model,
             "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def chat_chunk(response_id: str, created: int, model: str, index: int, delta: dict, finish_reason: str | None,
               logprobs: dict | None = None, with_usage: bool = False) -> dict:
    chunk = {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model,
             "system_fingerprint": None,
             "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(response_id: str, created: int, model: str, chat: bool, usage_body: dict) -> dict:
    return {"id": response_id, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model, "choices": [], "usage": usage_body}


def completion_response(response_id: str, created: int, model: str, choices: list[dict], usage_body: dict) -> dict:
    return {"id": response_id, "object": "text_completion", "created": created, "model": model,
            "choices": choices, "usage": usage_body}


def chat_response(response_id: str, created: int, model: str, choices: list[dict], usage_body: dict) -> dict:
    return {"id": response_id, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": None, "choices": choices, "usage": usage_body}


class LogprobFormatter:
    """Turns the engine's TokenLogprob entries into OpenAI's two logprobs shapes."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def completion(self, entries, text_offset: int = 0) -> dict:
        tokens, logprobs, tops, offsets = [], [], [], []
        for e in entries:
            text = self.token_text(e.token_id)
            tokens.append(text)
            logprobs.append(e.logprob)
            tops.append({self.token_text(t): lp for t, lp in e.top} if e.top else None)
            offsets.append(text_offset)
            text_offset += len(text)
        return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}

    def chat(self, entries) -> dict:
        content = []
        for e in entries:
            text = self.token_text(e.token_id)
            top = [{"token": (t_text := self.token_text(t)), "logprob": lp, "bytes": list(t_text.encode())}
                   for t, lp in e.top]
            content.append({"token": text, "logprob": e.logprob, "bytes": list(text.encode()), "top_logprobs": top})
        return {"content": content}
