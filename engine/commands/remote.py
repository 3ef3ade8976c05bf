"""Clients of a running ``tritonforge serve``: ``status``, ``cancel``, and ``generate --url``.

    tritonforge status REQUEST_ID --url http://127.0.0.1:8000
    tritonforge cancel REQUEST_ID --url http://127.0.0.1:8000
    tritonforge generate --url http://127.0.0.1:8000 "Once upon a time" --max-tokens 64
    tritonforge generate --url http://127.0.0.1:8000 --chat --system "Be brief." "What is paged attention?"

``generate --url`` streams through ``POST /generate/stream`` (with ``--chat``: ``/v1/chat/completions``,
where the server applies the model's chat template), printing text as it arrives and the request id on
stderr (so another terminal can ``status`` or ``cancel`` it). The API key comes from ``--api-key`` (status
and cancel) or the TRITONFORGE_API_KEY environment variable. Exit codes: 0 done, 1 the server refused or failed,
2 bad usage, 3 the server could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

DEFAULT_URL = "http://127.0.0.1:8000"


def configure(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("request_id", help="the request's id (the X-Request-Id of its response)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server address (default {DEFAULT_URL})")
    parser.add_argument("--api-key", default=None, help="bearer key (default: $TRITONFORGE_API_KEY)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server")


def run(args) -> int:
    import httpx

    path = "status" if args.command == "status" else "cancel"
    method = "GET" if path == "status" else "POST"
    try:
        with httpx.Client(base_url=args.url, headers=_headers(args), timeout=args.timeout) as client:
            response = client.request(method, f"/{path}/{args.request_id}")
    except httpx.HTTPError as err:
        print(f"tritonforge {path}: cannot reach {args.url}: {err}", file=sys.stderr)
        return 3
    if response.status_code != 200:
        print(f"tritonforge {path}: {_error_message(response)}", file=sys.stderr)
        return 1
    print(json.dumps(response.json(), indent=2))
    return 0


def generate_remote(args) -> int:
    """``tritonforge generate --url``: one streamed request per prompt, printed in order."""
    import httpx

    prompts = args.prompts or [sys.stdin.read()]
    if not any(p.strip() for p in prompts):
        print("tritonforge generate: the prompt is empty", file=sys.stderr)
        return 2
    timeout = httpx.Timeout(10.0, read=args.timeout + 10 if args.timeout else None)
    try:
        with httpx.Client(base_url=args.url, headers=_headers(args), timeout=timeout) as client:
            for prompt in prompts:
                code = _stream_one(client, prompt, args)
                if code:
                    return code
    except httpx.HTTPError as err:
        print(f"\ntritonforge generate: lost the server at {args.url}: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


def _request_body(prompt: str, args) -> dict:
    body = {"prompt": prompt, "max_tokens": args.max_tokens if args.max_tokens is not None else 128,
            "stop": list(args.stop), "ignore_eos": bool(args.ignore_eos)}
    for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed", "timeout"):
        value = getattr(args, name, None)
        if value is not None:
            body[name] = value
    return body


def _stream_one(client, prompt: str, args) -> int:
    """Stream one prompt: ``/generate/stream``, or with ``--chat`` the chat-completions route (the server
    applies the model's chat template)."""
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": prompt}]
        body = {k: v for k, v in _request_body(prompt, args).items() if k != "prompt"}
        route, body = "/v1/chat/completions", {**body, "messages": messages, "stream": True,
                                                "stream_options": {"include_usage": True}}
    else:
        route, body = "/generate/stream", _request_body(prompt, args)
    with client.stream("POST", route, json=body) as response:
        if response.status_code != 200:
            response.read()
            print(f"tritonforge generate: {_error_message(response)}", file=sys.stderr)
            return 1
        print(f"[request {response.headers.get('x-request-id')}]", file=sys.stderr, flush=True)
        reason, tokens = None, 0
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                print(f"\ntritonforge generate: {event['error'].get('message')}", file=sys.stderr)
                return 1
            text, count, finish = _chat_piece(event) if args.chat else (
                event["text"], len(event["token_ids"]), event["finish_reason"])
            sys.stdout.write(text)
            sys.stdout.flush()
            tokens += count
            reason = finish or reason
    print(f"\n[{tokens} tokens, finish: {reason}]", file=sys.stderr)
    return 0


def _chat_piece(chunk: dict) -> tuple[str, int, str | None]:
    """(text, tokens, finish_reason) of a chat-completion chunk; the token count comes with the usage chunk."""
    if not chunk["choices"]:
        return "", (chunk.get("usage") or {}).get("completion_tokens", 0), None
    choice = chunk["choices"][0]
    return choice["delta"].get("content") or "", 0, choice["finish_reason"]


def _headers(args) -> dict:
    key = getattr(args, "api_key", None) or os.environ.get("TRITONFORGE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _error_message(response) -> str:
    try:
        return f"HTTP {response.status_code}: {response.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
