"""Start-up warm-up: the runner's launches that let autotuned kernels pick configs before any request.

On a GPU with autotuning on, ``ModelRunner._warm_up`` runs one cache-less forward per power-of-two token
count up to the step budget, the attention variants those miss, and one sampling per batch class; here
(CPU, torch backend) it is forced, to check what it launches and that it leaves the KV cache and the
outputs alone.
"""

from __future__ import annotations

import pytest

from engine.sampling_params import SamplingParams
from engine.warm_up import warm_up_sample_batches, warm_up_token_counts
from kernels._sampling_split import handles
from tests.engine_helpers import (
    make_engine,
    run_to_completion,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import make_hf_model

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("warm"), arch="qwen2")


def test_warm_up_launches_every_bucket_and_changes_nothing(model_dir, monkeypatch):
    engine = make_engine(model_dir, "torch", max_num_seqs=40, max_num_batched_tokens=300, num_kv_blocks=64)
    runner = engine.runner
    prompt = [3, 14, 15, 92, 65, 35, 89, 79]
    params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, logprobs=1)
    before = run_to_completion(engine, [(prompt, params)])

    forwards, samples, attention, paths = [], [], [], set()
    inner_prefill, inner_sample = runner._cacheless_prefill, runner.ops.sample
    inner_decode, inner_attend = runner.ops.paged_decode_attention, runner.ops.prefill_attention

    def counting_prefill(token_ids, lens):
        forwards.append((token_ids.numel(), sum(lens)))
        return inner_prefill(token_ids, lens)

    def counting_sample(logits, st):
        samples.append(logits.shape[0])
        paths.add((logits.shape[0], handles(st), st.has_edits, bool(st.max_logprobs)))
        return inner_sample(logits, st)

    def counting_decode(*args, max_context_len, **kwargs):
        attention.append(("decode", max_context_len))
        return inner_decode(*args, max_context_len=max_context_len, **kwargs)

    def counting_attend(*args, k_cache=None, **kwargs):
        attention.append(("prefill", k_cache is not None))
        return inner_attend(*args, k_cache=k_cache, **kwargs)

    monkeypatch.setattr(runner, "_cacheless_prefill", counting_prefill)
    monkeypatch.setattr(runner.ops, "paged_decode_attention", counting_decode)
    monkeypatch.setattr(runner.ops, "prefill_attention", counting_attend)
    monkeypatch.setattr(runner.ops, "sample", counting_sample)
    greedy_batches = []
    inner_greedy = runner.ops.greedy
    monkeypatch.setattr(runner.ops, "greedy", lambda logits: greedy_batches.append(logits.shape[0]) or
                        inner_greedy(logits))
    runner._warm_up()  # on a CPU: nothing
    assert forwards == [] and samples == []
    runner._warm_up(force=True)
    top = min(300, 40 * runner.max_model_len)
    assert [n for n, _ in forwards] == warm_up_token_counts(top) and all(n == m for n, m in forwards)
    assert samples == [b for b in warm_up_sample_batches(40) for _ in range(6)] == [1] * 6 + [32] * 6 + [40] * 6
    assert greedy_batches == [1, 32, 40]
    # Each batch class meets the split path and both keys of the row-wise kernel (with and without top
    # logprobs), each with and without edits: no autotuning waits for a request's first top-p step.
    assert paths == {(b, split, edits, lp) for b in (1, 32, 40) for edits in (False, True)
                     for split, lp in ((True, False), (False, False), (False, True))}
    # Beside the cache-less forwards' own prefills: decode in one split and in many, prefill after a prefix.
    extra = [a for a in attention if a != ("prefill", False)]
    assert extra == [("decode", 1), ("decode", runner.max_model_len), ("prefill", True)]
    monkeypatch.undo()

    after = run_to_completion(engine, [(prompt, params)])
    outputs = lambda results: [(r["tokens"], r["logprobs"]) for r in results.values()]
    assert outputs(after) == outputs(before)
