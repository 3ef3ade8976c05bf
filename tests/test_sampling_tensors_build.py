"""SamplingTensors.build against a dense per-token recomputation of what each row's penalties touch.

The builder takes shortcuts for speed (column-wise checks, rows without penalties skip their token lists,
prompts may come as their unique tokens, one packed transfer); the expected values here are computed
token by token over the whole vocabulary with plain Python, so every shortcut is checked.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from kernels._sampling_params import MAX_LOGPROBS, RequestParams, SamplingParamsError, SamplingTensors

V = 40


def _random_row(rng: random.Random, with_bias: bool = True) -> tuple[RequestParams, list[int], list[int]]:
    p = RequestParams(temperature=rng.choice([0.0, 0.7, 1.0]), top_k=rng.choice([0, 3, V + 5]),
                      top_p=rng.choice([1.0, 0.9]), min_p=rng.choice([0.0, 0.1]),
                      logprobs=rng.choice([None, 0, 3]))
    kind = rng.randrange(5) if with_bias else rng.choice([0, 1, 2])
    if kind == 1:
        p.repetition_penalty = 1.3
    elif kind == 2:
        p.presence_penalty, p.frequency_penalty = 0.5, -0.25
    elif kind == 3:
        p.logit_bias = {rng.randrange(V): rng.uniform(-5, 5) for _ in range(rng.randint(1, 3))}
    elif kind == 4:
        p.repetition_penalty, p.frequency_penalty = 0.8, 0.3
        p.logit_bias = {rng.randrange(V): 2.0}
    prompt = [rng.randrange(V) for _ in range(rng.randint(1, 12))]
    output = [rng.randrange(V) for _ in range(rng.randint(0, 10))]
    return p, prompt, output


def _dense_edits(p, prompt, output):
    """(token, count, in_context, bias) for every token this row's penalties or bias touch, in order."""
    bias = p.logit_bias or {}
    rows = []
    for t in range(V):
        count = output.count(t)
        in_context = p.repetition_penalty != 1.0 and (t in prompt or t in output)
        counted = (p.presence_penalty != 0 or p.frequency_penalty != 0) and count > 0
        if in_context or counted or t in bias:
            rows.append((t, count, int(in_context), np.float32(bias.get(t, 0.0))))
    return rows


@pytest.mark.parametrize("seed", range(8))
def test_build_matches_dense_recomputation(seed):
    rng = random.Random(seed)
    B = [1, 5, 17, 40][seed % 4]
    # Without logit bias a large batch takes the column-wise check; with it, the per-row one.
    rows = [_random_row(rng, with_bias=seed < 4) for _ in range(B)]
    params, prompts, outputs = zip(*rows, strict=True)
    # Half the prompts as their sorted unique tokens, as the engine passes them.
    prompts = [np.unique(pr) if r % 2 else pr for r, pr in enumerate(prompts)]
    st = SamplingTensors.build(list(params), prompts, list(outputs), list(range(B)), V, torch.device("cpu"))
    starts = st.edit_start.tolist()
    assert starts[0] == 0 and len(starts) == B + 1
    for r, (p, prompt, output) in enumerate(rows):
        lo, hi = starts[r], starts[r + 1]
        got = list(zip(st.edit_token[lo:hi].tolist(), st.edit_count[lo:hi].tolist(),
                       st.edit_in_context[lo:hi].tolist(), st.edit_bias[lo:hi].tolist(), strict=True))
        assert got == _dense_edits(p, list(prompt), output), f"row {r}"
        assert st.temperature[r].item() == np.float32(p.temperature)
        assert st.top_p[r].item() == np.float32(p.top_p) and st.min_p[r].item() == np.float32(p.min_p)
        assert st.repetition_penalty[r].item() == np.float32(p.repetition_penalty)
        assert st.presence_penalty[r].item() == np.float32(p.presence_penalty)
        assert st.frequency_penalty[r].item() == np.float32(p.frequency_penalty)
        assert st.top_k[r].item() == (0 if p.top_k >= V else p.top_k)
        assert st.num_logprobs[r].item() == (-1 if p.logprobs is None else p.logprobs)
    assert st.has_edits == any(_dense_edits(*row) for row in rows)
    assert st.greedy_only == all(p.temperature == 0 for p in params)
    widest = max((p.logprobs or 0) for p in params)
    assert st.max_logprobs == (widest or None)


def test_rows_differing_only_in_seed_or_step_get_different_keys():
    params = [RequestParams(), RequestParams(), RequestParams()]
    st = SamplingTensors.build(params, [[1]] * 3, [[], [], [2]], [7, 8, 7], V, torch.device("cpu"))
    keys = list(zip(st.rng_key1.tolist(), st.rng_key2.tolist(), strict=True))
    assert len(set(keys)) == 3


@pytest.mark.parametrize("field,value,match", [
    ("logprobs", -1, "logprobs"), ("logprobs", MAX_LOGPROBS + 1, "logprobs"), ("logprobs", True, "logprobs"),
    ("top_k", True, "top_k"), ("top_k", np.int64(-2), "top_k"), ("temperature", "hot", "temperature"),
    ("top_p", float("inf"), "top_p"), ("presence_penalty", float("nan"), "presence_penalty"),
])
def test_the_bad_row_is_named(field, value, match):
    bad = RequestParams()
    setattr(bad, field, value)
    with pytest.raises(SamplingParamsError, match=rf"row 2: {match}"):
        SamplingTensors.build([RequestParams(), RequestParams(), bad], [[1]] * 3, [[]] * 3, [0, 1, 2], V, "cpu")


@pytest.mark.parametrize("B", [3, 30])
def test_a_bad_token_list_is_named_by_row(B):
    params = [RequestParams(repetition_penalty=1.2) for _ in range(B)]
    outputs = [[1, 2]] * B
    outputs[B - 1] = [1, V]
    with pytest.raises(SamplingParamsError, match=rf"row {B - 1}: output_ids"):
        SamplingTensors.build(params, [[1]] * B, outputs, list(range(B)), V, "cpu")
    prompts = [[3]] * B
    prompts[1] = [-1]
    with pytest.raises(SamplingParamsError, match="row 1: prompt_ids"):
        SamplingTensors.build(params, prompts, [[1]] * B, list(range(B)), V, "cpu")


def test_numpy_integers_are_accepted_like_ints():
    p = RequestParams(top_k=np.int32(3), logprobs=np.int64(2))
    st = SamplingTensors.build([p], [[1]], [[]], [0], V, "cpu")
    assert st.top_k.tolist() == [3] and st.num_logprobs.tolist() == [2] and st.max_logprobs == 2


def test_empty_batch():
    st = SamplingTensors.build([], [], [], [], V, "cpu")
    assert st.batch == 0 and not st.has_edits and st.max_logprobs is None
