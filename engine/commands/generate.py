"""``tritonforge generate``: generate from a local model, a GGUF file or a hub id, streaming to the terminal.

    tritonforge generate --model ./my-model "Once upon a time" --max-tokens 64 --temperature 0.7
    tritonforge generate --model ./my-model --chat "What is paged attention?"
    tritonforge generate --model ./my-model --op rmsnorm=my_rmsnorm "Hello"      # a hot-swapped kernel
    tritonforge generate --model ./my-model --n 3 --seed 1 --logprobs 2 "Hello"   # 3 samples, top-2 logprobs
    tritonforge generate --model ./my-model --logit-bias 42=-100,7=5 "Hello"      # bias tokens 42 and 7
    tritonforge generate --url http://localhost:8000 "Hello"                      # a running server

One prompt streams its text as it is produced; several prompts, or ``--n`` completions of each, run as one
batch, with a progress line on stderr, and are printed in order when done (copy i of a seeded prompt uses
seed + i, as the server does). ``--logprobs N`` prints, after each completion, every generated token with
its log-probability and the top N alternatives. With no prompt argument the prompt is read from stdin.
Sampling settings not given on the command line come from the model's generation_config.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

# Flags that only the local engine path implements (``--url`` sends the simple /generate/stream body).
LOCAL_ONLY = ("presence_penalty", "frequency_penalty", "n", "logprobs", "logit_bias")


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
    parser.add_argument("--presence-penalty", type=float, default=None, help="OpenAI's, in [-2, 2] (default 0)")
    parser.add_argument("--frequency-penalty", type=float, default=None, help="OpenAI's, in [-2, 2] (default 0)")
    parser.add_argument("--logit-bias", action="append", default=[], metavar="TOKEN_ID=BIAS,...",
                        help="add BIAS (in [-100, 100]) to the logit of TOKEN_ID (repeatable, comma-separated)")
    parser.add_argument("--n", type=int, default=None, help="completions per prompt (default 1)")
    parser.add_argument("--logprobs", type=int, default=None, metavar="N",
                        help="print each generated token's logprob and its top N alternatives (0: the token's only)")
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


def op_override(text: str) -> tuple[str, str]:
    """An argparse ``type`` for one ``NAME=IMPL`` (``dict(args.op)`` then gives the overrides)."""
    try:
        return next(iter(parse_op_overrides([text]).items()))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_op_overrides(items: list[str]) -> dict[str, str]:
    overrides = {}
    for item in items:
        name, sep, impl = item.partition("=")
        if not sep or not name or not impl:
            raise ValueError(f"--op expects NAME=IMPL (e.g. rmsnorm=my_rmsnorm), got {item!r}")
        overrides[name.strip()] = impl.strip()
    return overrides


def parse_logit_bias(items: list[str]) -> dict[int, float] | None:
    """``["42=-100,7=5", "9=1.5"]`` -> ``{42: -100.0, 7: 5.0, 9: 1.5}``; None when no flag was given."""
    bias: dict[int, float] = {}
    for item in items:
        for pair in item.split(","):
            token, sep, value = pair.partition("=")
            try:
                if not sep:
                    raise ValueError
                bias[int(token)] = float(value)
            except ValueError:
                raise ValueError(f"--logit-bias expects TOKEN_ID=BIAS pairs separated by commas (e.g. 42=-100,7=5), "
                                 f"got {pair!r}") from None
    return bias or None


def sampling_params(args, defaults: dict):
    from engine.sampling_params import SamplingParams

    def pick(name, cli_value, fallback):
        return cli_value if cli_value is not None else defaults.get(name, fallback)

    return SamplingParams(
        max_tokens=pick("max_tokens", args.max_tokens, 128), temperature=pick("temperature", args.temperature, 1.0),
        top_p=pick("top_p", args.top_p, 1.0), top_k=pick("top_k", args.top_k, 0), min_p=pick("min_p", args.min_p, 0.0),
        repetition_penalty=pick("repetition_penalty", args.repetition_penalty, 1.0), seed=args.seed,
        presence_penalty=args.presence_penalty if args.presence_penalty is not None else 0.0,
        frequency_penalty=args.frequency_penalty if args.frequency_penalty is not None else 0.0,
        logit_bias=parse_logit_bias(args.logit_bias), stop=tuple(args.stop), ignore_eos=args.ignore_eos,
        logprobs=args.logprobs, n=args.n if args.n is not None else 1,
    )


def run(args) -> int:
    if args.url:
        from engine.commands.remote import generate_remote  # written with the server; imported only here

        given = [name for name in LOCAL_ONLY if getattr(args, name) not in (None, [])]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            print(f"tritonforge generate: {flags} work with --model only; against a server, use its "
                  "/v1/completions route", file=sys.stderr)
            return 2
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
        if len(inputs) == 1 and params.n == 1:
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
    reason, logprobs = None, []
    while engine.has_unfinished():
        for out in engine.step():
            if out.new_token_ids and first is None:
                first = time.monotonic() - start
            n = out.num_output_tokens
            sys.stdout.write(out.new_text)
            sys.stdout.flush()
            logprobs += out.logprobs or []
            reason = out.finish_reason if out.finished else reason
    elapsed = time.monotonic() - start
    rate = (n - 1) / (elapsed - first) if first is not None and n > 1 and elapsed > first else 0.0
    print(f"\n[{n} tokens, finish: {reason}, first token {1000 * (first or 0):.0f} ms, {rate:.1f} tok/s]",
          file=sys.stderr)
    if params.logprobs is not None:
        _print_logprobs(engine.tokenizer, logprobs)


def _batch(engine, texts: list[str], inputs: list, params, timeout) -> None:
    # The engine takes one completion per request: n copies of each prompt, copy i seeded seed + i.
    copies = [params] if params.n == 1 else [
        dataclasses.replace(params, n=1, seed=None if params.seed is None else params.seed + i)
        for i in range(params.n)]
    ids = [[engine.add_request(p, c, timeout_s=timeout) for c in copies] for p in inputs]
    chunks: dict[str, list[str]] = {i: [] for group in ids for i in group}
    logprobs: dict[str, list] = {i: [] for i in chunks}
    reasons: dict[str, str] = {}
    start, tokens = time.monotonic(), 0
    while engine.has_unfinished():
        for out in engine.step():
            chunks[out.request_id].append(out.new_text)
            logprobs[out.request_id] += out.logprobs or []
            tokens += len(out.new_token_ids)
            if out.finished:
                reasons[out.request_id] = out.finish_reason
        elapsed = time.monotonic() - start
        print(f"\r{len(reasons)}/{len(chunks)} done, {tokens} tokens, {tokens / max(elapsed, 1e-9):.1f} tok/s",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    for n, (group, text) in enumerate(zip(ids, texts, strict=True)):
        for k, i in enumerate(group):
            which = f", completion {k + 1}/{len(group)}" if len(group) > 1 else ""
            print(f"--- [{n}] {text!r}{which} (finish: {reasons.get(i)})")
            print("".join(chunks[i]))
            if params.logprobs is not None:
                _print_logprobs(engine.tokenizer, logprobs[i])


def _print_logprobs(tokenizer, logprobs: list) -> None:
    """One line per generated token: its text, id and logprob, then the top alternatives, if asked for."""
    def show(token_id: int) -> str:
        return f"{tokenizer.decode([token_id], skip_special_tokens=False)!r} ({token_id})"

    print("logprobs:")
    for lp in logprobs:
        top = ", ".join(f"{show(t)} {v:.4f}" for t, v in lp.top)
        print(f"  {show(lp.token_id)} {lp.logprob:.4f}" + (f"   top: {top}" if top else ""))
