"""Decode steps run one ahead (engine/decode_graphs.py): the tokens must be exactly those of an engine that
never runs ahead, whatever happens between steps -- block boundaries, requests of different lengths, a
request arriving or aborted mid-run, a stop token, sampled neighbours. On a CPU the decode graphs are the
real DecodeGraphs with each graph replaced by an eager replay of the same forward (engine_helpers); on a
GPU they are captured CUDA graphs, with the copy to pinned memory and the event wait of the real path."""

from __future__ import annotations

import pytest

from engine.sampling_params import SamplingParams
from tests.engine_helpers import BACKENDS, make_engine, single_threaded, use_cpu_decode_graphs  # noqa: F401  (autouse fixture)
from tests.model_factory import make_hf_model

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("ahead"), arch="qwen3")


def greedy(n, **kw):
    return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True, **kw)


def drive(engine, script: dict[int, list]) -> dict[str, list[int]]:
    """Step to completion; before step i, run the actions ``script[i]``: ("add", name, prompt, params) or
    ("abort", name). Returns name -> tokens."""
    ids, tokens, step = {}, {}, 0
    while True:
        for action in script.get(step, []):
            if action[0] == "add":
                _, name, prompt, params = action
                ids[name] = engine.add_request(prompt, params)
                tokens[name] = []
            else:
                engine.abort(ids[action[1]])
        if not engine.has_unfinished() and step > max(script):
            return tokens
        names = {v: k for k, v in ids.items()}
        for out in engine.step():
            tokens[names[out.request_id]] += out.new_token_ids
        step += 1


def scenarios(stop_token: int | None = None) -> dict[str, dict[int, list]]:
    p1, p2, p3 = list(range(5, 25)), [7, 3, 9, 1] * 3, list(range(40, 47))
    s = {
        "block boundaries": {0: [("add", "a", p1, greedy(45))]},
        "different lengths": {0: [("add", "a", p1, greedy(5)), ("add", "b", p2, greedy(17)),
                                  ("add", "c", p3, greedy(30))]},
        "arrival mid-run": {0: [("add", "a", p1, greedy(30))], 6: [("add", "b", p2, greedy(12))]},
        "abort mid-run": {0: [("add", "a", p1, greedy(30)), ("add", "b", p2, greedy(30))], 5: [("abort", "b")]},
        "sampled neighbour": {0: [("add", "a", p1, greedy(20))],
                              4: [("add", "b", p2, SamplingParams(temperature=0.9, seed=3, max_tokens=8))]},
    }
    if stop_token is not None:
        s["stop token"] = {0: [("add", "a", p1, greedy(40, stop_token_ids=(stop_token,)))]}
    return s


@pytest.mark.parametrize("backend", BACKENDS)
def test_running_ahead_gives_the_tokens_of_an_engine_that_does_not(model_dir, backend):
    eager = make_engine(model_dir, backend, enforce_eager=True)
    ahead = make_engine(model_dir, backend, max_num_seqs=8)  # on a GPU: real CUDA graphs
    graphs = ahead.runner.graphs or use_cpu_decode_graphs(ahead, max_batch=8)
    try:
        plain = drive(eager, scenarios()["block boundaries"])["a"]
        stop = plain[12]  # a token the request meets mid-run: it must stop there, run ahead or not
        for name, script in scenarios(stop).items():
            before = graphs.steps_ahead
            want, got = drive(eager, script), drive(ahead, script)
            assert got == want, name
            if name == "block boundaries":
                # Every decode step but the first and the last (at its token limit, nothing follows) is
                # run ahead, block boundaries included: the scheduler's lookahead slot holds the next one.
                assert graphs.steps_ahead - before == len(got["a"]) - 2, name
            elif name != "sampled neighbour":
                assert graphs.steps_ahead > before, f"{name}: no step was run ahead"
        assert len(drive(ahead, scenarios(stop)["stop token"])["a"]) == plain.index(stop) + 1
        ahead.scheduler.check_invariants()
    finally:
        eager.close()
        ahead.close()


def test_a_step_is_taken_from_ahead_only_if_every_row_is_as_expected(model_dir):
    from engine.decode_graphs import row_keys

    engine = make_engine(model_dir)
    graphs = use_cpu_decode_graphs(engine, max_batch=8)
    try:
        rid = engine.add_request(list(range(5, 25)), greedy(10))
        while graphs.ahead is None:
            engine.step()
        seq = engine.get_sequence(rid)
        block_size = engine.runner.block_size
        assert row_keys([seq], block_size) == graphs.ahead.keys  # the engine's next step is the one run ahead
        ahead = graphs.ahead
        for change in ("position", "token", "block"):
            saved = (seq.num_computed_tokens, list(seq.token_ids), list(seq.block_table))
            if change == "position":
                seq.num_computed_tokens -= 1
            elif change == "token":
                seq.token_ids[seq.num_computed_tokens] += 1
            else:
                seq.block_table[seq.num_computed_tokens // block_size] = engine.runner.num_blocks - 1
            graphs.ahead = ahead
            assert graphs.take_ahead([seq]) is None and graphs.ahead is None, change
            seq.num_computed_tokens, seq.token_ids[:], seq.block_table[:] = saved
    finally:
        engine.close()
