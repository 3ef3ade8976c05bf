"""``tritonforge demo``: the whole engine in under a minute, on any machine, with nothing to download.

It builds a small model of a real architecture (Qwen3 by default: 4 layers, hidden 256, random weights)
with a byte-level BPE tokenizer trained on the spot, saves it as a Hugging Face directory (config.json,
model.safetensors, tokenizer files), loads it back through the engine's normal loader, and generates:
a greedy batch, samples of one prompt with a seed each, a stop string, a chat-formatted prompt and a
batch that shares a prefix (served from the prefix cache). It prints the text and the throughput. On a
GPU the same command runs the Triton kernels; on a CPU the pure-torch references of the same ops.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=["qwen3", "llama"], default="qwen3")
    parser.add_argument("--dir", help="where to write the demo model (default: a temporary directory)")
    parser.add_argument("--backend", choices=["triton", "torch"], help="default: triton on a GPU, torch on a CPU")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=60,
                        help="steps of training on the demo text before saving (0 = random weights)")
    parser.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")


def run(args) -> int:
    import torch

    from engine.demo_model import build_demo_model
    from engine.llm import LLM
    from engine.sampling_params import SamplingParams

    if not torch.cuda.is_available():
        # The demo model is tiny: per-op overhead dominates, and more CPU threads only contend.
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="tritonforge-demo-") as tmp:
        model_dir = Path(args.dir) if args.dir else Path(tmp) / "demo-model"
        t0 = time.monotonic()
        build_demo_model(model_dir, arch=args.arch, train_steps=args.train_steps)
        trained = f"trained for {args.train_steps} steps on the demo text" if args.train_steps else "random weights"
        print(f"built a small {args.arch} model ({trained}) and a BPE tokenizer in {model_dir} "
              f"({time.monotonic() - t0:.1f}s)")
        t0 = time.monotonic()
        try:
            llm = LLM(str(model_dir), backend=args.backend, enforce_eager=args.enforce_eager)
        except (ValueError, OSError, MemoryError) as err:
            print(f"tritonforge demo: {err}", file=sys.stderr)
            return 1
        s = llm.engine.stats()
        print(f"loaded through the engine in {time.monotonic() - t0:.1f}s: backend {s['backend']} on {s['device']} "
              f"({s['dtype']}), KV cache {s['kv_total_blocks']} blocks of {s['kv_block_size']} tokens\n")
        n = args.max_tokens
        prompts = ["Once upon a time", "The engine batches", "Triton kernels compute", "The quick brown fox"]
        greedy = SamplingParams(temperature=0, max_tokens=n)
        outs = _show(llm, "greedy (temperature 0), 4 prompts in one batch", prompts, greedy)
        # The demo model has learned its text well, so its next-token distributions are sharp: at a usual
        # temperature (0.8) sampling retraces the greedy text. 1.5 flattens them enough for seeds to part ways.
        _show(llm, "sampled (temperature 1.5, top-k 50), n=4 of the first prompt, seeds 0..3", prompts[:1],
              SamplingParams(temperature=1.5, top_k=50, seed=0, n=4, max_tokens=n),
              greedy={p: o.text for p, o in zip(prompts, outs, strict=True)})
        _show(llm, "stop string '.' (not included in the text)", prompts[:2],
              SamplingParams(temperature=0, max_tokens=n, stop=(".",)))
        chat = llm.tokenizer.apply_chat_template([{"role": "user", "content": "Count the stars."}])
        _show(llm, "chat template (ChatML)", [llm.tokenizer.encode(chat, add_special_tokens=False)],
              SamplingParams(temperature=0.7, seed=1, max_tokens=n))
        shared = "The engine batches many requests together, keeps their keys and values in a paged cache, and"
        _show(llm, "16 requests sharing a long prefix (prefix cache)", [f"{shared} {i}" for i in range(16)],
              SamplingParams(temperature=0, max_tokens=n), brief=True)
        s = llm.engine.stats()
        print(f"engine: {s['num_steps']} steps, {s['num_preemptions']} preemptions, "
              f"{s['prefix_cache_blocks']} blocks in the prefix cache")
    return 0


def _show(llm, title: str, prompts, params, brief: bool = False, greedy: dict | None = None) -> list:
    """Generate and print one line per completion (n > 1: one per copy); ``greedy`` (prompt -> greedy
    text) marks the samples that came out the same as the greedy continuation."""
    start = time.monotonic()
    outs = llm.generate(prompts, params)
    elapsed = time.monotonic() - start
    flat = [(prompt, o, f" (copy {k})" if isinstance(out, list) else "")
            for prompt, out in zip(prompts, outs, strict=True)
            for k, o in enumerate(out if isinstance(out, list) else [out])]
    tokens = sum(len(o.token_ids) for _, o, _ in flat)
    print(f"== {title}: {tokens} tokens in {elapsed:.2f}s ({tokens / elapsed:.0f} tok/s)")
    for prompt, out, copy in flat[: 2 if brief else None]:
        shown = prompt if isinstance(prompt, str) else llm.tokenizer.decode(prompt, skip_special_tokens=False)
        same = "  (same as greedy)" if greedy is not None and greedy.get(prompt) == out.text else ""
        print(f"  {shown!r}{copy} -> {out.text!r} [{out.finish_reason}]{same}")
    print()
    return outs
