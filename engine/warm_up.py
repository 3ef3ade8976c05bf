"""Warm-up: the first launch of every autotuning bucket, made at start-up instead of by a live request.

Autotuned kernels time their configs at the first launch of each shape bucket (the token count's power of
two, the sampler's batch size class). On a live server that first launch stalls every request in the step
for seconds, so on a GPU the runner calls :func:`warm_up` once its KV cache exists: one cache-less forward
per prefill token bucket (:func:`warm_up_token_counts`), the attention variants a cache-less prefill does
not meet, and one sampling per sampler path and variant per batch class (:func:`warm_up_sample_batches`),
plus the ``greedy`` op. Nothing is timed with ``TRITONFORGE_TUNE=first`` (kernels.tuning), so nothing is
warmed then.
"""

from __future__ import annotations

import logging
import math
import time

import torch

log = logging.getLogger(__name__)


@torch.inference_mode()
def warm_up(runner, force: bool = False) -> None:
    """Make the first launch of every autotuning bucket now, before a request waits on it: the prefill
    token-count buckets, the attention variants, and each sampler variant (edits, top logprobs) per batch
    class. Only on a GPU with autotuning on, unless ``force`` (tests run it on a CPU)."""
    from kernels.tuning import tune_mode

    if not force and (runner.device.type != "cuda" or tune_mode() == "first"):
        return
    top = min(runner.config.max_num_batched_tokens, runner.config.max_num_seqs * runner.max_model_len)
    dev, vocab = runner.device, runner.model_config.vocab_size
    start = time.perf_counter()
    for tokens in warm_up_token_counts(top):
        seqlen = min(tokens, runner.max_model_len)
        lens = [seqlen] * (tokens // seqlen) + ([tokens % seqlen] if tokens % seqlen else [])
        t = time.perf_counter()
        runner._cacheless_prefill(torch.randint(0, vocab, (tokens,), device=dev), lens)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        log.info("warm-up: prefill of %d tokens in %.1f s", tokens, time.perf_counter() - t)
    warm_up_attention(runner)
    from engine.sampling_params import SamplingParams
    from kernels.sampling import SamplingTensors

    # The sampler's variants, with and without logit edits (penalties), on each of its paths
    # (kernels/sampling.py): greedy rows take the split kernels (compiled, not autotuned); top-p without
    # top-k, and top logprobs, take the autotuned row-wise kernel, whose key tells the two apart.
    variants = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.0, repetition_penalty=1.1),
                SamplingParams(temperature=1.0, top_p=0.9),
                SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.1),
                SamplingParams(temperature=0.0, logprobs=1),
                SamplingParams(temperature=0.0, repetition_penalty=1.1, logprobs=1)]
    for batch in warm_up_sample_batches(runner.config.max_num_seqs):
        logits = torch.randn(batch, vocab, device=dev, dtype=runner.dtype)  # as compute_logits returns them
        for params in variants:
            st = SamplingTensors.build([params] * batch, [[0]] * batch, [[min(1, vocab - 1)]] * batch,
                                       list(range(batch)), vocab, dev)
            runner.ops.sample(logits, st)
        runner.ops.greedy(logits)  # not autotuned, but compiled here rather than by a request
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    log.info("warmed up the autotuned kernels for up to %d tokens per step in %.1f s", top,
             time.perf_counter() - start)


def warm_up_attention(runner) -> None:
    """The attention variants a cacheless prefill does not meet, on the scratch block: decode in one
    split and in several (eager decodes in mixed steps; the decode graphs capture their own), and
    prefill after a cached prefix (chunked prefill, prefix-cache hits)."""
    c, dev = runner.model_config, runner.device
    k_cache, v_cache = runner.kv_caches[0]
    width = math.ceil(runner.max_model_len / runner.block_size)
    table = torch.full((1, width), runner.scratch_block, dtype=torch.int32, device=dev)
    one = torch.ones(1, dtype=torch.int32, device=dev)
    q = torch.randn(1, c.num_attention_heads, c.head_dim, dtype=runner.dtype, device=dev)
    kv = torch.randn(1, c.num_key_value_heads, c.head_dim, dtype=runner.dtype, device=dev)
    for bound in (1, runner.max_model_len):
        runner.ops.paged_decode_attention(q, k_cache, v_cache, table, one, max_context_len=bound, fresh_tokens=1)
    runner.ops.prefill_attention(q, kv, kv, torch.tensor([0, 1], dtype=torch.int32, device=dev), 1, causal=True,
                                 k_cache=k_cache, v_cache=v_cache, block_tables=table, prefix_lens=one)


def warm_up_token_counts(top: int) -> list[int]:
    """One token count per power-of-two bucket from 1 up to the bucket of ``top`` (capped at ``top``)."""
    counts, b = [], 1
    while True:
        counts.append(min(b, top))
        if b >= top:
            return counts
        b *= 2


def warm_up_sample_batches(max_num_seqs: int) -> list[int]:
    """A batch size in each of the sampler's autotuning classes (1, 2-32, 33+) that the engine can reach."""
    sizes = [1]
    if max_num_seqs > 1:
        sizes.append(min(32, max_num_seqs))
    if max_num_seqs > 32:
        sizes.append(max_num_seqs)
    return sizes
