"""Clients of a running ``tritonforge serve``: ``status``, ``cancel``, and ``generate --url``.

    tritonforge status REQUEST_ID --url http://127.0.0.1:8000
    tritonforge cancel REQUEST_ID --url http://127.0.0.1:8000
    tritonforge generate --url http://127.0.0.1:8000 "Once upon a time" --max-tokens 64

``generate --url`` streams through ``POST /generate/stream``, printing text as it arrives and the request
id on stderr (so another terminal can ``status`` or ``cancel`` it). The API key comes from ``--api-key``
or the TRITONFORGE_API_KEY environment variable. Exit codes: 0 done, 1 the server refused or failed,
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
    if args.chat:
        print("tritonforge generate: --chat is not available with --url; use the /v1/chat/completions API",
              file=sys.stderr)
        return 2
    with client.stream("POST", "/generate/stream", json=_request_body(prompt, args)) as response:
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
            sys.stdout.write(event["text"])
            sys.stdout.flush()
            tokens += len(event["token_ids"])
            reason = event["finish_reason"] if event["finished"] else reason
    print(f"\n[{tokens} tokens, finish: {reason}]", file=sys.stderr)
    return 0


def _headers(args) -> dict:
    key = getattr(args, "api_key", None) or os.environ.get("TRITONFORGE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _error_message(response) -> str:
    try:
        return f"HTTP {response.status_code}: {response.json()['error']['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
