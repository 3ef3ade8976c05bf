"""The engine in a child process (engine/engine_process.py), as ``tritonforge serve`` runs it: the same
tokens as the engine in-process, bad requests refused at once in the parent, a start-up failure in the
child raised in the parent, and close stopping the child."""

from __future__ import annotations

import pytest

from engine.sampling_params import SamplingParams
from tests.engine_helpers import (
    make_engine,
    prompt_batch,
    run_to_completion,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import make_hf_model

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("child") / "tiny", arch="qwen2")


def test_same_outputs_as_the_engine_in_process(model_dir):
    prompts = prompt_batch(300, 6, seed=3, min_len=2, max_len=20)
    params = [SamplingParams(temperature=0, max_tokens=7, ignore_eos=True),
              SamplingParams(temperature=0.8, top_k=20, seed=11, max_tokens=5, ignore_eos=True)]
    requests = [(p, params[i % 2]) for i, p in enumerate(prompts)]
    want = list(run_to_completion(make_engine(model_dir), requests).values())
    child = make_engine(model_dir, in_child=True)
    try:
        got = list(run_to_completion(child, requests).values())
        assert [(r["tokens"], r["text"], r["reason"]) for r in got] == [
            (r["tokens"], r["text"], r["reason"]) for r in want]
        assert got == want  # logprobs and cached-token counts too
        assert child.scheduler.stats()["kv_free_blocks"] == child.scheduler.kv.num_blocks
    finally:
        child.close()


def test_bad_requests_fail_in_the_parent_and_aborts_reach_the_child(model_dir):
    child = make_engine(model_dir, in_child=True, max_model_len=200)
    try:
        with pytest.raises(ValueError, match="the prompt is empty"):
            child.add_request([], SamplingParams())
        with pytest.raises(ValueError, match="at most 200 per sequence"):
            child.add_request([5] * 250, SamplingParams())
        # Long enough that the abort reaches the child (which steps on its own) well before the end.
        rid = child.add_request([5, 6, 7], SamplingParams(temperature=0, max_tokens=190, ignore_eos=True))
        with pytest.raises(ValueError, match="already in use"):
            child.add_request([5], SamplingParams(), request_id=rid)
        child.step()
        assert child.abort(rid) and not child.abort("nope")
        finals, tokens = [], 0
        while child.has_unfinished():
            for out in child.step():
                tokens += len(out.new_token_ids)
                if out.finished:
                    finals.append((out.request_id, out.finish_reason))
        assert finals == [(rid, "abort")] and tokens < 190
        assert child.scheduler.stats()["kv_free_blocks"] == child.scheduler.kv.num_blocks
    finally:
        child.close()


def test_a_start_up_failure_in_the_child_is_raised_in_the_parent(model_dir):
    with pytest.raises(ValueError, match="no implementation 'nope'"):
        make_engine(model_dir, in_child=True, op_overrides={"rmsnorm": "nope"})


def test_close_stops_the_child(model_dir):
    child = make_engine(model_dir, in_child=True)
    child.close()
    assert child._proc.exitcode is not None
    with pytest.raises(RuntimeError, match="closed"):
        child.step()
    child.close()  # a second close does nothing
