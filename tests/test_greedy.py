"""The greedy op (kernels/greedy.py) at its edges, and the engine's plain-greedy path that uses it.

The generic property test (tests/test_ops.py) compares the kernel with torch.argmax on random rows; here:
ties inside one lane of the kernel's tile (indices a whole tile apart) and across lanes, invalid rows, and
that the engine takes the greedy op exactly when every sampled row is plain greedy, with the same tokens
the sampler gives (the mixed-batch test in test_engine_batching.py compares whole outputs)."""

from __future__ import annotations

import pytest
import torch

from kernels import alloc, registry
from kernels.greedy import CONFIGS, greedy, greedy_reference
from tests.engine_helpers import OpSpy, make_engine, single_threaded  # noqa: F401  (autouse fixture: one CPU thread)
from tests.model_factory import make_hf_model

pytestmark = pytest.mark.greedy
BLOCK, CHUNK = CONFIGS["cuda"]["BLOCK"], CONFIGS["cuda"]["CHUNK"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("greedy"), arch="qwen3")


def _device():
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ties_keep_the_lowest_index_within_a_lane_across_lanes_and_across_chunks(dtype):
    dev = _device()
    V = 2 * CHUNK + 5                                       # three chunks, the last one short
    gen = torch.Generator(device=dev).manual_seed(3)
    x = torch.randn(5, V, generator=gen, device=dev)
    top = float(x.max()) + 2.0
    x[0, [7, 7 + BLOCK, 7 + 2 * BLOCK]] = top              # one lane, three blocks of one chunk
    x[1, [BLOCK + 9, 8]] = top                              # two lanes, the later lane holding the lower index
    x[2, [V - 1, CHUNK + 3, 2 * CHUNK + 1]] = top           # later chunks only, the tail one included
    x[3, :] = top                                           # everything tied
    x[4, [2 * CHUNK, CHUNK + 17]] = top                     # the lower index in the middle chunk
    x = x.to(dtype)
    with alloc.poisoned():
        got = greedy(x)
    assert got.tolist() == [7, 8, CHUNK + 3, 0, CHUNK + 17]
    assert got.tolist() == greedy_reference(x).tolist()


def test_invalid_rows_give_minus_one_and_valid_rows_do_not():
    dev = _device()
    for V in (300, CHUNK + 300):                          # one chunk, and flags combined across chunks
        x = torch.randn(5, V, device=dev)
        x[1, V - 17] = float("nan")
        x[2, 5] = float("inf")
        x[3, :] = float("-inf")
        x[4, :] = float("-inf")
        x[4, V - 50] = -1e30                                # one finite value is enough
        with alloc.poisoned():                              # the poison is not -1: the -1s are written
            got = greedy(x).tolist()
        assert got == [int(x[0].argmax()), -1, -1, -1, V - 50] == greedy_reference(x).tolist()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\[batch, vocab\]"):
        greedy(torch.randn(3))
    with pytest.raises(TypeError, match="float32, float16, bfloat16"):
        greedy(torch.zeros(2, 3, dtype=torch.int32))


def _run(engine, requests):
    ids = [engine.add_request(p, params) for p, params in requests]
    out = {i: [] for i in ids}
    while engine.has_unfinished():
        for o in engine.step():
            out[o.request_id] += o.new_token_ids
    return [out[i] for i in ids]


def test_engine_uses_the_greedy_op_only_when_every_row_is_plain_greedy(tiny_model_dir):
    from engine.sampling_params import SamplingParams

    greedy_params = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)
    prompt = list(range(3, 20))
    engine = make_engine(tiny_model_dir)
    try:
        spy = OpSpy(engine, ("sample", "greedy"))
        [alone] = _run(engine, [(prompt, greedy_params)])
        assert spy.calls == {"sample": 0, "greedy": 5}
        # Penalties, logprobs or a sampled neighbour send the step through the sampler, same tokens.
        for other in (SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True, repetition_penalty=1.0,
                                     logprobs=0),
                      SamplingParams(temperature=0.8, seed=1, max_tokens=5, ignore_eos=True)):
            spy.calls.update(sample=0, greedy=0)
            mixed, _ = _run(engine, [(prompt, greedy_params), (prompt[:9], other)])
            assert mixed == alone
            assert spy.calls["sample"] == 5 and spy.calls["greedy"] == 0
    finally:
        engine.close()


def test_greedy_is_an_engine_op_that_can_be_swapped():
    from engine.ops import ENGINE_OPS

    assert "greedy" in ENGINE_OPS and registry.get("greedy").torch is greedy_reference
