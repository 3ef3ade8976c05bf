"""``tritonforge generate``: generate from a local model, a GGUF file or a hub id, streaming to the terminal.

    tritonforge generate --model ./my-model "Once upon a time" --max-tokens 64 --temperature 0.7
    tritonforge generate --model ./my-model --chat "What is paged attention?"
    tritonforge generate --model ./my-model --op rmsnorm=my_rmsnorm "Hello"      # a hot-swapped kernel
    tritonforge generate --url http://localhost:8000 "Hello"                      # a running server

One prompt streams its text as it is produced; several prompts run as one batch, with a progress line on
stderr, and are printed in order when done. With no prompt argument the prompt is read from stdin.
Sampling settings not given on the command line come from the model's generation_config.json.
"""

from __future__ import annotations

import argparse
import sys
import time


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompts", nargs="*", help="prompt text(s); read from stdin when none is given")
    parser.add_argument("--model", "-m", help="model directory, .gguf file or hub id")
    parser.add_argument("--url", help="generate on a running tritonforge server instead of locally")
    parser.add_argument("--max-tokens", type=int, default=None, help="tokens to generate per prompt (default 128)")
    parser.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None, help="0 = off")
    parser.add_argument("--min-p", type=float, default=None)
    parser.add_argument("--repetition-penalty", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None, help="per-request seed (reproducible sampling)")
    parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    parser.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-sequence tokens")
    parser.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the chat template")
    parser.add_argument("--system", help="system message for --chat")
    parser.add_argument("--backend", choices=["triton", "torch"], help="default: triton on a GPU, torch on a CPU")
    parser.add_argument("--op", action="append", default=[], metavar="NAME=IMPL",
                        help="use a registered implementation for one op (repeatable), e.g. rmsnorm=my_rmsnorm")
    parser.add_argument("--device", help="e.g. cuda, cuda:1, cpu")
    parser.add_argument("--dtype", help="float32, float16 or bfloat16 (default: the model's; float32 on a CPU)")
    parser.add_argument("--max-model-len", type=int, help="cap on prompt + output tokens per sequence")
    parser.add_argument("--num-kv-blocks", type=int, help="KV cache size in blocks (default: from free memory)")
    parser.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit)")
    parser.add_argument("--timeout", type=float, help="per-request timeout in seconds")


def parse_op_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        name, sep, impl = item.partition("=")
        if not sep or not name or not impl:
            raise ValueError(f"--op expects NAME=IMPL (e.g. rmsnorm=my_rmsnorm), got {item!r}")
        overrides[name.strip()] = impl.strip()
    return overrides


def sampling_params(args, defaults: dict):
    from engine.sampling_params import SamplingParams

    def pick(name, cli_value, fallback):
        return cli_value if cli_value is not None else defaults.get(name, fallback)

    return SamplingParams(
        max_tokens=pick("max_tokens", args.max_tokens, 128), temperature=pick("temperature", args.temperature, 1.0),
        top_p=pick("top_p", args.top_p, 1.0), top_k=pick("top_k", args.top_k, 0), min_p=pick("min_p", args.min_p, 0.0),
        repetition_penalty=pick("repetition_penalty", args.repetition_penalty, 1.0), seed=args.seed,
        stop=tuple(args.stop), ignore_eos=args.ignore_eos,
    )


def run(args) -> int:
    if args.url:
        from engine.commands.remote import generate_remote  # written with the server; imported only here

        return generate_remote(args)
    if not args.model:
        print("tritonforge generate: give --model (a directory, .gguf file or hub id) or --url", file=sys.stderr)
        return 2
    from engine.loader.errors import ModelLoadError

    prompts = args.prompts or [sys.stdin.read()]
    if not any(p.strip() for p in prompts):
        print("tritonforge generate: the prompt is empty", file=sys.stderr)
        return 2
    try:
        overrides = parse_op_overrides(args.op)
        engine = _load(args, overrides)
        params = sampling_params(args, engine.generation_defaults)
        params.validate(engine.model_config.vocab_size)
        # A rendered chat template already holds any BOS token: encode it without adding another.
        inputs = [engine.tokenizer.encode(_chat(engine, p, args.system), add_special_tokens=False) if args.chat else p
                  for p in prompts]
        if len(inputs) == 1:
            _stream(engine, inputs[0], params, args.timeout)
        else:
            _batch(engine, prompts, inputs, params, args.timeout)
    except (ModelLoadError, ValueError, TypeError, OSError, MemoryError) as err:
        print(f"tritonforge generate: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


def _load(args, overrides):
    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine

    start = time.monotonic()
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    config = EngineConfig(model=args.model, backend=args.backend, device=args.device, dtype=args.dtype,
                          op_overrides=overrides, max_model_len=args.max_model_len, num_kv_blocks=args.num_kv_blocks,
                          enforce_eager=args.enforce_eager, revision=args.revision)
    engine = LLMEngine(config)
    s = engine.stats()
    print(f"loaded in {time.monotonic() - start:.1f}s: {engine.model_config.architecture}, backend {s['backend']} "
          f"on {s['device']} ({s['dtype']}), KV cache {s['kv_total_blocks']} blocks of {s['kv_block_size']}",
          file=sys.stderr, flush=True)
    return engine


def _chat(engine, prompt: str, system: str | None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)


def _stream(engine, prompt, params, timeout) -> None:
    engine.add_request(prompt, params, timeout_s=timeout)
    start, first, n = time.monotonic(), None, 0
    reason = None
    while engine.has_unfinished():
        for out in engine.step():
            if out.new_token_ids and first is None:
                first = time.monotonic() - start
            n = out.num_output_tokens
            sys.stdout.write(out.new_text)
            sys.stdout.flush()
            reason = out.finish_reason if out.finished else reason
    elapsed = time.monotonic() - start
    rate = (n - 1) / (elapsed - first) if first is not None and n > 1 and elapsed > first else 0.0
    print(f"\n[{n} tokens, finish: {reason}, first token {1000 * (first or 0):.0f} ms, {rate:.1f} tok/s]",
          file=sys.stderr)


def _batch(engine, texts: list[str], inputs: list, params, timeout) -> None:
    ids = [engine.add_request(p, params, timeout_s=timeout) for p in inputs]
    chunks: dict[str, list[str]] = {i: [] for i in ids}
    reasons: dict[str, str] = {}
    start, tokens = time.monotonic(), 0
    while engine.has_unfinished():
        for out in engine.step():
            chunks[out.request_id].append(out.new_text)
            tokens += len(out.new_token_ids)
            if out.finished:
                reasons[out.request_id] = out.finish_reason
        elapsed = time.monotonic() - start
        print(f"\r{len(reasons)}/{len(ids)} done, {tokens} tokens, {tokens / max(elapsed, 1e-9):.1f} tok/s",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    for n, (i, text) in enumerate(zip(ids, texts, strict=True)):
        print(f"--- [{n}] {text!r} (finish: {reasons.get(i)})")
        print("".join(chunks[i]))
