"""Request models of the OpenAI-compatible API, and OpenAI's error body.

Requests are parsed from raw JSON (so malformed JSON gets the same error body as everything else) into
pydantic models in strict mode: a string where a number belongs is refused rather than coerced, as
OpenAI's own server does. Unknown fields are ignored. Every refusal becomes an :class:`APIError`, whose
body is OpenAI's::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": null}}

The type follows the status: 401 ``authentication_error``, 408 ``timeout`` (the request was valid; it ran
out of time, so a client may retry it with a longer ``timeout``), 429 ``rate_limit_error``, 5xx
``server_error``, anything else ``invalid_request_error``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class APIError(Exception):
    """An HTTP error with OpenAI's body; ``param`` names the request field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or _default_type(status)
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _default_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 408:
        return "timeout"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class SamplingFields(_Strict):
    """Fields shared by completions and chat completions (OpenAI's, then the open-model extras)."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # Not in OpenAI's API; vLLM's names.
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    # Seconds before the request is cut off (default: the server's --request-timeout).
    timeout: float | None = Field(default=None, gt=0)


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None


class ChatMessage(_Strict):
    model_config = ConfigDict(strict=True, extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None


class GenerateRequest(_Strict):
    """Body of the simple ``POST /generate`` and ``/generate/stream`` routes."""

    prompt: str | list[int]
    max_tokens: int = 128
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = False
    timeout: float | None = Field(default=None, gt=0)


# Fields that accept several shapes: pydantic reports each alternative's failure; say what is accepted.
UNION_FIELDS = {
    "prompt": "a string, a list of strings, a list of token ids, or a list of token-id lists",
    "stop": "a string or a list of strings",
    "content": "a string or a list of content parts",
}


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"the request body is not valid JSON: {err}", code="invalid_json") from None


def parse_request(model: type[_Strict], raw: bytes) -> Any:
    """The parsed request, or an APIError(400) naming the first bad field."""
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else None
        if field in UNION_FIELDS and first["type"] != "missing":
            raise APIError(400, f"{field} must be {UNION_FIELDS[field]}", param=field) from None
        param = ".".join(str(p) for p in first["loc"]) or None
        given = f" (got {first['input']!r})" if "input" in first and first["type"] != "missing" else ""
        message = f"{param}: {first['msg']}{given}" if param else first["msg"]
        raise APIError(400, message, param=param.split(".")[0] if param else None) from None
