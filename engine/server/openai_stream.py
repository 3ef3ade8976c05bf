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

DONE = "data: [DONE]\n\n"


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


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
