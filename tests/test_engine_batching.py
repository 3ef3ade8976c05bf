"""A request's greedy output does not depend on how the engine batched, chunked, paged or cached it.

The reference is each request run alone in a roomy engine; then the same requests run 32 at a time mixed
with sampled requests, with prefill split into tiny chunks, with so few KV blocks that sequences are
preempted and recomputed, and with their prompt prefix served from the prefix cache. The reference itself
is pinned to transformers by tests/test_hf_parity.py.
"""

from __future__ import annotations

import pytest

from engine.sampling_params import SamplingParams
from tests.engine_helpers import (
    BACKENDS,
    make_engine,
    prompt_batch,
    run_to_completion,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import make_hf_model

pytestmark = pytest.mark.engine

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("batching"), arch="qwen3")


@pytest.fixture(scope="module")
def prompts(model_dir):
    return prompt_batch(300, 32, seed=5, min_len=2, max_len=60)


@pytest.fixture(scope="module", params=BACKENDS)
def alone(request, model_dir, prompts):
    """Each prompt's greedy tokens, run one at a time."""
    backend = request.param
    engine = make_engine(model_dir, backend, enable_prefix_cache=False)
    outputs = []
    for p in prompts:
        (result,) = run_to_completion(engine, [(p, GREEDY)]).values()
        outputs.append(result["tokens"])
    return backend, outputs


def _run_all(engine, prompts, sampled_every: int = 0):
    reqs = []
    for i, p in enumerate(prompts):
        if sampled_every and i % sampled_every == 1:
            reqs.append((p, SamplingParams(temperature=1.0, top_p=0.9, seed=i, max_tokens=9, ignore_eos=True)))
        reqs.append((p, GREEDY))
    results = list(run_to_completion(engine, reqs).values())
    greedy = [r for (_, sp), r in zip(reqs, results, strict=True) if sp is GREEDY]
    assert all(r["reason"] == "length" for r in results)
    return [r["tokens"] for r in greedy]


def test_batch_of_32_mixed_requests(model_dir, prompts, alone):
    backend, expected = alone
    engine = make_engine(model_dir, backend, enable_prefix_cache=False)
    assert _run_all(engine, prompts, sampled_every=3) == expected


def test_chunked_prefill(model_dir, prompts, alone):
    backend, expected = alone
    engine = make_engine(model_dir, backend, max_num_batched_tokens=7, enable_prefix_cache=False)
    assert _run_all(engine, prompts[:8]) == expected[:8]
    assert engine.stats()["num_steps"] > sum(len(p) for p in prompts[:8]) // 7


def test_preemption_by_recompute(model_dir, prompts, alone):
    backend, expected = alone
    # 12 blocks of 16 tokens: a few sequences of up to ~72 tokens fit at once, so the rest are preempted.
    engine = make_engine(model_dir, backend, num_kv_blocks=12, enable_prefix_cache=False)
    assert _run_all(engine, prompts[:16]) == expected[:16]
    stats = engine.stats()
    assert stats["num_preemptions"] > 0
    assert stats["kv_free_blocks"] == stats["kv_total_blocks"]


def test_prefix_cache_reuse(model_dir, alone):
    backend, _ = alone
    shared = prompt_batch(300, 1, seed=9, min_len=50, max_len=50)[0]
    first, second = [*shared, 7, 8, 9], [*shared, 11, 12]
    cold = make_engine(model_dir, backend, enable_prefix_cache=False)
    expected = [next(iter(run_to_completion(cold, [(p, GREEDY)]).values()))["tokens"] for p in (first, second)]
    warm = make_engine(model_dir, backend)
    a = next(iter(run_to_completion(warm, [(first, GREEDY)]).values()))
    b = next(iter(run_to_completion(warm, [(second, GREEDY)]).values()))
    assert b["cached"] == 48  # the three full blocks of the shared 50 tokens
    assert [a["tokens"], b["tokens"]] == expected


def test_everything_at_once(model_dir, prompts, alone):
    """Shared prefixes, tiny chunks, a pool small enough to preempt, prefix cache on: still the same tokens."""
    backend, expected = alone
    engine = make_engine(model_dir, backend, num_kv_blocks=10, max_num_batched_tokens=24, max_num_seqs=6)
    # Requests 0..11 twice over: the second copies find their prompts' full blocks in the prefix cache
    # (when those blocks survived eviction), the rest is recomputed after preemptions.
    picked = list(range(12)) * 2
    results = list(run_to_completion(engine, [(prompts[i], GREEDY) for i in picked]).values())
    assert [r["tokens"] for r in results] == [expected[i] for i in picked]
    stats = engine.stats()
    assert stats["num_preemptions"] > 0
    assert stats["prefix_cache_hit_rate"] > 0
    assert stats["kv_free_blocks"] == stats["kv_total_blocks"]  # cached but unreferenced blocks count as free
