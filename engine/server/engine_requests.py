"""API requests -> engine requests: prompts tokenized and checked, sampling fields -> SamplingParams.

Fields the request leaves out fall back to the model's generation_config.json (temperature, top_p,
top_k, min_p, repetition_penalty), then to OpenAI's defaults. ``max_tokens`` defaults to 16 for
completions (OpenAI's default) and to the rest of the context for chat; a value larger than the room
left in the context is cut to fit (the choice then ends with ``length``). A request with ``n`` copies
becomes n engine requests; with a seed, copy i uses ``seed + i`` (as ``LLM.generate`` does), so the same
request with the same seed gives the same texts.
"""

from __future__ import annotations

import dataclasses

from engine.sampling_params import MAX_LOGPROBS, SamplingParams
from engine.server.async_engine import EngineRequest
from engine.server.protocol import APIError, ChatCompletionRequest, CompletionRequest, GenerateRequest
from engine.tokenizer import NoChatTemplateError, TokenizerError

MAX_N = 64
_SAMPLING_DEFAULT_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def completion_prompts(engine, body: CompletionRequest) -> list[list[int]]:
    prompt = body.prompt
    if isinstance(prompt, str):
        prompts = [prompt]
    elif not prompt:
        raise APIError(400, "prompt is empty; give a string, a list of strings or token ids", param="prompt")
    elif isinstance(prompt[0], (str, int)):
        prompts = list(prompt) if isinstance(prompt[0], str) else [prompt]
    else:
        prompts = list(prompt)
    ids = [engine.tokenizer.encode(p) if isinstance(p, str) else list(p) for p in prompts]
    return [_checked(engine, p, "prompt") for p in ids]


def chat_prompt(engine, body: ChatCompletionRequest) -> list[int]:
    messages = [_message(m.model_dump()) for m in body.messages]
    try:
        text = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except NoChatTemplateError as err:
        raise APIError(400, f"{err}", param="messages", code="no_chat_template") from None
    except (TokenizerError, TypeError) as err:
        raise APIError(400, f"messages: {err}", param="messages") from None
    # A rendered template already holds any BOS token it needs.
    return _checked(engine, engine.tokenizer.encode(text, add_special_tokens=False), "messages")


def generate_prompt(engine, body: GenerateRequest) -> list[int]:
    ids = engine.tokenizer.encode(body.prompt) if isinstance(body.prompt, str) else list(body.prompt)
    return _checked(engine, ids, "prompt")


def sampling_params(engine, body, max_tokens: int | None, logprobs: int | None) -> SamplingParams:
    """SamplingParams for one copy, validated; a ValueError becomes a 400 naming the field."""
    defaults = engine.generation_defaults
    picked = {name: getattr(body, name) if getattr(body, name) is not None else defaults[name]
              for name in _SAMPLING_DEFAULT_FIELDS if getattr(body, name) is not None or name in defaults}
    extra = {}
    if not isinstance(body, GenerateRequest):
        extra = dict(presence_penalty=body.presence_penalty, frequency_penalty=body.frequency_penalty,
                     logit_bias=body.logit_bias, stop_token_ids=tuple(body.stop_token_ids or ()))
    try:
        params = SamplingParams(max_tokens=max_tokens if max_tokens is not None else 16, seed=body.seed,
                                stop=body.stop if body.stop is not None else (), ignore_eos=body.ignore_eos,
                                logprobs=logprobs, **picked, **extra)
        return params.validate(engine.model_config.vocab_size)
    except ValueError as err:
        message = str(err)
        field = message.split(" ", 1)[0].split("[", 1)[0]
        raise APIError(400, message, param=field) from None


def copies(prompts: list[list[int]], params: SamplingParams, n: int) -> list[EngineRequest]:
    """n engine requests per prompt (prompt-major order: choice index = prompt * n + copy)."""
    if not 1 <= n <= MAX_N:
        raise APIError(400, f"n must be an integer in [1, {MAX_N}], got {n}", param="n")
    out = []
    for prompt in prompts:
        for i in range(n):
            seed = None if params.seed is None else params.seed + i
            out.append(EngineRequest(prompt, dataclasses.replace(params, seed=seed)))
    return out


def chat_max_tokens(engine, body: ChatCompletionRequest, prompt: list[int]) -> int:
    given = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if given is not None:
        if given < 1:
            name = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
            raise APIError(400, f"{name} must be an integer >= 1, got {given}", param=name)
        return given
    return max(1, engine.max_model_len - len(prompt))


def completion_logprobs(body: CompletionRequest) -> int | None:
    if body.logprobs is not None and not 0 <= body.logprobs <= MAX_LOGPROBS:
        raise APIError(400, f"logprobs must be an integer in [0, {MAX_LOGPROBS}], got {body.logprobs}",
                       param="logprobs")
    return body.logprobs


def chat_logprobs(body: ChatCompletionRequest) -> int | None:
    if body.top_logprobs is not None:
        if not body.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if not 0 <= body.top_logprobs <= MAX_LOGPROBS:
            raise APIError(400, f"top_logprobs must be an integer in [0, {MAX_LOGPROBS}], got {body.top_logprobs}",
                           param="top_logprobs")
    return (body.top_logprobs or 0) if body.logprobs else None


def unsupported(body: CompletionRequest) -> None:
    """Completion fields this server does not implement are refused rather than silently ignored."""
    if body.echo:
        raise APIError(400, "echo is not supported by this server", param="echo")
    if body.suffix:
        raise APIError(400, "suffix is not supported by this server", param="suffix")
    if body.best_of is not None and body.best_of != body.n:
        raise APIError(400, "best_of other than n is not supported by this server", param="best_of")


def _checked(engine, ids: list[int], param: str) -> list[int]:
    vocab, limit = engine.model_config.vocab_size, engine.max_model_len
    if not ids:
        raise APIError(400, f"{param} is empty after tokenization; give at least one token", param=param)
    bad = [t for t in ids if not 0 <= t < vocab]
    if bad:
        raise APIError(400, f"{param} holds token ids outside [0, {vocab}): {bad[:5]}", param=param)
    if len(ids) >= limit:
        raise APIError(400, f"{param} has {len(ids)} tokens but this model's context holds {limit} (prompt + "
                       "output); shorten it", param=param, code="context_length_exceeded")
    return ids


def _message(message: dict) -> dict:
    """Content given as a list of parts ([{"type": "text", "text": ...}]) is joined into one string."""
    content = message.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise APIError(400, f"messages: only text content parts are supported, got {part.get('type')!r}",
                               param="messages")
            texts.append(part["text"])
        message = dict(message, content="".join(texts))
    elif content is None:
        message = dict(message, content="")
    return message
