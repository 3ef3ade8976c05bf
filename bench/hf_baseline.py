"""The HF transformers baseline of ``bench/engine_bench.py``: the same prompt and requests through
``AutoModelForCausalLM.generate`` (greedy, no early stop, its default attention), timed on the same device.

Single stream: ``new_tokens / generate time`` of the engine's single-stream prompt. Offline: the first
``--hf-requests`` of the engine's offline requests in left-padded batches of ``--hf-batch``, each batch
generating its longest output; only each request's own tokens count, and the rate stands for all requests.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def hf_generate_time(model, batch: list[list[int]], new_tokens: int) -> float:
    """Seconds for HF ``generate`` (greedy, no early stop) of a left-padded batch."""
    device = next(model.parameters()).device
    width = max(len(p) for p in batch)
    ids = torch.zeros(len(batch), width, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(batch):
        ids[row, width - len(p):] = torch.tensor(p, device=device)
        mask[row, width - len(p):] = 1
    synchronize(device)
    t = time.perf_counter()
    model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                   do_sample=False, pad_token_id=0, eos_token_id=None)
    synchronize(device)
    return time.perf_counter() - t


def hf_offline(model, requests, subset: int, batch_size: int) -> dict:
    reqs = requests[:subset]
    elapsed, useful = 0.0, 0
    for i in range(0, len(reqs), batch_size):
        group = reqs[i:i + batch_size]
        elapsed += hf_generate_time(model, [p for p, _ in group], max(n for _, n in group))
        useful += sum(n for _, n in group)
    return {"requests_run": len(reqs), "batch_size": batch_size, "elapsed_s": elapsed, "output_tokens": useful,
            "output_tok_per_s": useful / elapsed,
            "note": f"run on the first {len(reqs)} of {len(requests)} requests; rate extrapolated to all"}


def hf_baseline(model_dir: Path, prompt: list[int], requests, device: torch.device, args, result: dict) -> None:
    """HF transformers on the same single-stream prompt and offline requests; speedups of the engine."""
    import transformers

    decode_tok_s, offline = result["single_stream"]["decode_tok_per_s"], result["offline"]
    new_tokens = result["single_stream"]["output_tokens"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16).to(device).eval()
    attn = getattr(hf.config, "_attn_implementation", "default")
    hf_generate_time(hf, [prompt], 8)  # warm-up
    hf_single = new_tokens / hf_generate_time(hf, [prompt], new_tokens)
    hf_off = hf_offline(hf, requests, args.hf_requests, args.hf_batch)
    del hf  # the speedups below need nothing of it; free its memory before the next model
    result["hf"] = {"attention": attn, "single_stream_tok_per_s": hf_single, "offline": hf_off}
    result["speedup_single_stream"] = decode_tok_s / hf_single
    result["speedup_offline"] = offline["output_tok_per_s"] / hf_off["output_tok_per_s"]
    print(f"[{result['model']}] HF eager: {hf_single:.0f} tok/s single stream, {hf_off['output_tok_per_s']:.0f} tok/s "
          f"offline ({hf_off['note']}); speedups {result['speedup_single_stream']:.1f}x / "
          f"{result['speedup_offline']:.1f}x", file=sys.stderr, flush=True)
