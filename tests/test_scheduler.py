"""Scheduler behaviour: budgets, ordering, chunked prefill, preemption by recompute, aborts and stops."""

from __future__ import annotations

import pytest

from engine.kv.manager import KVCacheManager
from engine.sampling_params import SamplingParams
from engine.scheduler import RequestTooLongError, Scheduler, SchedulerConfig
from engine.sequence import Sequence, SequenceStatus

pytestmark = pytest.mark.engine

EOS = 2
FILLER = 7  # a token that never stops anything


def make(num_blocks=64, block_size=4, **config) -> Scheduler:
    config = SchedulerConfig(block_size=block_size, **config)
    kv = KVCacheManager(num_blocks, block_size, config.enable_prefix_cache)
    return Scheduler(config, kv, eos_token_ids=[EOS])


def seq(request_id: str, num_prompt: int, arrival: float, first_token: int = 10, **params) -> Sequence:
    prompt = [first_token + i for i in range(num_prompt)]
    return Sequence(request_id, prompt, SamplingParams(**params), arrival_time=arrival)


def step(s: Scheduler, token: int = FILLER):
    out = s.schedule()
    s.check_invariants()
    finished = s.postprocess(out, [token if sample else None for sample in out.do_sample])
    s.check_invariants()
    return out, finished


def planned(out) -> list[tuple[str, int]]:
    return [(q.request_id, n) for q, n in zip(out.seqs, out.num_new_tokens, strict=True)]


def test_token_budget_is_respected_and_long_prompt_is_chunked():
    s = make(max_num_batched_tokens=16)
    long = seq("long", 50, arrival=0.0)
    s.add(long)
    chunks = []
    while not long.output_token_ids:
        out, _ = step(s)
        assert out.num_batched_tokens <= 16
        chunks.append(out.num_new_tokens[0])
        assert out.do_sample == [long.num_computed_tokens == 50]
    assert chunks == [16, 16, 16, 2]
    assert long.num_computed_tokens == 50 and long.output_token_ids == [FILLER]


def test_budget_is_shared_by_several_prompts_in_arrival_order():
    s = make(max_num_batched_tokens=10)
    for i, length in enumerate((4, 4, 5)):
        s.add(seq(f"r{i}", length, arrival=float(i)))
    out, _ = step(s)
    assert planned(out) == [("r0", 4), ("r1", 4), ("r2", 2)]
    out, _ = step(s)
    # Decodes first (r0, r1), then the rest of r2's prompt.
    assert planned(out) == [("r0", 1), ("r1", 1), ("r2", 3)]
    assert out.is_decode == [True, True, False]


def test_decodes_are_scheduled_before_prefills():
    s = make(max_num_batched_tokens=8)
    s.add(seq("first", 3, arrival=0.0))
    step(s)
    s.add(seq("second", 20, arrival=1.0))
    out, _ = step(s)
    assert planned(out) == [("first", 1), ("second", 7)]


def test_mid_prompt_chunk_must_not_get_a_token_and_the_last_one_must():
    s = make(max_num_batched_tokens=4)
    s.add(seq("a", 6, arrival=0.0))
    out = s.schedule()
    assert out.do_sample == [False]
    s.postprocess(out, [None])
    out = s.schedule()
    assert out.do_sample == [True]
    with pytest.raises(ValueError, match="no token was sampled"):
        s.postprocess(out, [None])


def test_max_num_seqs_caps_the_running_set():
    s = make(max_num_seqs=2)
    for i in range(4):
        s.add(seq(f"r{i}", 3, arrival=float(i)))
    out, _ = step(s)
    assert [q.request_id for q in out.seqs] == ["r0", "r1"]
    assert s.num_running == 2 and s.num_waiting == 2


def test_waiting_queue_is_first_come_first_served():
    s = make(max_num_batched_tokens=8, enable_chunked_prefill=False)
    s.add(seq("big", 8, arrival=0.0))
    s.add(seq("small", 2, arrival=1.0))
    s.add(seq("running", 2, arrival=-1.0))
    out, _ = step(s)
    # "running" (earliest) and then "big" does not fit the rest of the budget whole, so "small" waits too.
    assert planned(out) == [("running", 2)]
    out, _ = step(s)
    assert planned(out) == [("running", 1)]  # big needs 8 but only 7 remain after the decode
    s.abort("running")
    out, _ = step(s)
    assert planned(out) == [("big", 8)]


def test_unchunked_prompt_longer_than_the_budget_is_refused():
    s = make(max_num_batched_tokens=8, enable_chunked_prefill=False)
    with pytest.raises(RequestTooLongError, match="max_num_batched_tokens=8"):
        s.add(seq("a", 9, arrival=0.0))


def test_prompt_longer_than_the_cache_or_model_is_refused():
    s = make(num_blocks=4, block_size=4)
    with pytest.raises(RequestTooLongError, match="KV cache holds 16 tokens"):
        s.add(seq("a", 17, arrival=0.0))
    s = make(max_model_len=10)
    with pytest.raises(RequestTooLongError, match="max_model_len is 10"):
        s.add(seq("a", 11, arrival=0.0))


def test_duplicate_request_ids_are_refused():
    s = make()
    s.add(seq("a", 3, arrival=0.0))
    with pytest.raises(ValueError, match="already in use"):
        s.add(seq("a", 3, arrival=1.0))


def step_until_preemption(s: Scheduler):
    for _ in range(20):
        out, _ = step(s)
        if out.preempted:
            return out
    raise AssertionError("no preemption happened")


def test_preemption_by_recompute_keeps_tokens_and_resumes_in_arrival_order():
    # 6 blocks of 4 tokens. Three 7-token prompts take 2 blocks each; the first decode that needs a
    # third block finds none, so the latest arrival is preempted.
    s = make(num_blocks=6, block_size=4, max_num_batched_tokens=64)
    a, b, c = (seq(name, 7, arrival=float(i), first_token=100 * (i + 1), max_tokens=8) for i, name in enumerate("abc"))
    for x in (c, a, b):  # added out of order: arrival time decides
        s.add(x)
    out, _ = step(s)
    assert [q.request_id for q in out.seqs] == ["a", "b", "c"]
    out = step_until_preemption(s)
    # Token 8 (the 9th) is the first to need a third block; only a and b got one.
    assert [p.request_id for p in out.preempted] == ["c"]
    assert planned(out) == [("a", 1), ("b", 1)]
    assert a.num_computed_tokens == 9
    assert c.status is SequenceStatus.WAITING and c.num_computed_tokens == 0 and c.block_table == []
    assert c.output_token_ids == [FILLER, FILLER]  # generated tokens are kept...
    assert c.num_preemptions == 1 and s.num_preemptions == 1
    out = step_until_preemption(s)
    # ...and b goes next when a needs a fourth block (a and b hold 3 each; nothing is free).
    assert [p.request_id for p in out.preempted] == ["b"]
    assert a.num_computed_tokens == 13
    assert [q.request_id for q in s.waiting] == ["b", "c"]  # arrival order, not preemption order
    while a.status is not SequenceStatus.FINISHED:
        out, _ = step(s)
        assert [q.request_id for q in out.seqs] == ["a"]  # b needs more blocks than a leaves free
    assert a.finish_reason == "length" and len(a.output_token_ids) == 8
    out, _ = step(s)
    # b resumes first and recomputes prompt + generated tokens, less its blocks still in the prefix cache.
    assert out.seqs[0] is b
    assert b.num_computed_tokens == b.num_tokens - 1
    assert b.num_cached_tokens == 0  # its own blocks coming back are not prompt-cache hits
    while s.has_unfinished():
        step(s)
    for x in (a, b, c):
        assert x.finish_reason == "length" and x.output_token_ids == [FILLER] * 8
        assert x.token_ids == x.prompt_token_ids + x.output_token_ids
    assert s.kv.num_free_blocks == 6
    s.check_invariants()


def test_a_partial_prefill_shrinks_to_free_room_instead_of_preempting():
    s = make(num_blocks=6, block_size=4, max_num_batched_tokens=8)
    s.add(seq("decoder", 3, arrival=0.0, max_tokens=100))
    s.add(seq("prompt", 20, arrival=1.0))
    step(s)  # decoder prefill (3) + 5 prompt tokens
    out, _ = step(s)
    assert not out.preempted
    assert planned(out) == [("decoder", 1), ("prompt", 7)]


def test_abort_frees_blocks_at_once_and_is_idempotent():
    s = make(num_blocks=8)
    a = seq("a", 9, arrival=0.0)
    s.add(a)
    out = s.schedule()
    assert s.kv.num_free_blocks == 5
    assert s.abort("a") is a
    assert a.finish_reason == "abort" and a.is_finished and a.block_table == []
    assert s.kv.num_free_blocks == 8
    assert s.postprocess(out, [FILLER]) == []  # the in-flight batch skips it
    assert a.output_token_ids == []
    assert s.abort("a") is None and s.abort("never-seen") is None
    s.add(seq("w", 3, arrival=1.0))
    assert s.abort("w").finish_reason == "abort"  # a waiting request can be aborted too
    assert not s.has_unfinished()
    s.check_invariants()


def test_stops_on_eos_unless_ignored():
    s = make()
    a = seq("a", 3, arrival=0.0, max_tokens=10)
    b = seq("b", 3, arrival=1.0, max_tokens=2, ignore_eos=True)
    s.add(a)
    s.add(b)
    _, finished = step(s, token=EOS)
    assert finished == [a] and a.finish_reason == "stop" and a.output_token_ids == [EOS]
    _, finished = step(s, token=EOS)
    assert finished == [b] and b.finish_reason == "length" and b.output_token_ids == [EOS, EOS]


def test_stops_on_stop_token_ids_even_with_ignore_eos():
    s = make()
    a = seq("a", 3, arrival=0.0, stop_token_ids=(FILLER,), ignore_eos=True)
    s.add(a)
    _, finished = step(s, token=FILLER)
    assert finished == [a] and a.finish_reason == "stop"


def test_stops_at_max_tokens():
    s = make()
    a = seq("a", 3, arrival=0.0, max_tokens=3)
    s.add(a)
    results = [step(s)[1] for _ in range(3)]
    assert results == [[], [], [a]]
    assert a.finish_reason == "length" and a.num_output_tokens == 3
    assert s.kv.num_free_blocks == s.kv.num_blocks


def test_stops_at_max_model_len():
    s = make(max_model_len=6)
    a = seq("a", 4, arrival=0.0, max_tokens=100)
    s.add(a)
    step(s)
    _, finished = step(s)
    assert finished == [a] and a.finish_reason == "length" and a.num_tokens == 6


def test_finish_by_the_engine_frees_blocks_and_validates_the_reason():
    s = make(num_blocks=8)
    a = seq("a", 5, arrival=0.0, max_tokens=50)
    s.add(a)
    step(s)
    with pytest.raises(ValueError, match="finish reason"):
        s.finish(a, "bored")
    s.finish(a, "timeout")
    assert a.finish_reason == "timeout" and s.kv.num_free_blocks == 8 and not s.has_unfinished()


def test_identical_prompt_reuses_the_cached_prefix():
    s = make()
    s.add(seq("a", 10, arrival=0.0, max_tokens=1))
    step(s)
    b = seq("b", 10, arrival=1.0, max_tokens=1)
    s.add(b)
    out, _ = step(s)
    assert planned(out) == [("b", 2)]  # two full blocks of 4 came from the cache
    assert b.num_cached_tokens == 8


def test_logprob_entries_follow_their_tokens():
    s = make()
    a = seq("a", 3, arrival=0.0, max_tokens=2)
    s.add(a)
    for entry in ("first", "second"):
        out = s.schedule()
        s.postprocess(out, [FILLER], [entry])
    assert a.output_logprobs == ["first", "second"]


def test_config_and_manager_must_agree():
    with pytest.raises(ValueError, match="max_num_seqs"):
        Scheduler(SchedulerConfig(max_num_seqs=0), KVCacheManager(4, 16))
    with pytest.raises(ValueError, match="block_size"):
        Scheduler(SchedulerConfig(block_size=16), KVCacheManager(4, 8))


def test_lookahead_slots_give_the_next_block_a_step_early_and_never_preempt():
    # Block size 4, prompt of 3: the first decode step writes position 3 (the block's last slot), so the
    # next step's position 4 needs a second block, which the lookahead slot allocates now.
    s = make(num_blocks=8, block_size=4, num_lookahead_slots=1)
    a = seq("a", 3, arrival=0.0, max_tokens=10, ignore_eos=True)
    s.add(a)
    step(s)                                   # prefill: positions 0-2, room kept for position 3 too
    assert len(a.block_table) == 1
    step(s)                                   # decode at position 3: room kept for position 4
    assert a.num_computed_tokens == 4 and len(a.block_table) == 2
    without = make(num_blocks=8, block_size=4)
    b = seq("b", 3, arrival=0.0, max_tokens=10, ignore_eos=True)
    without.add(b)
    step(without)
    step(without)
    assert len(b.block_table) == 1            # without it, the block comes with the step that needs it
    # A full cache: nobody is preempted for a lookahead slot. c decodes at the last slot of its block; d
    # needs a block for its own next token and is preempted for that, as it would be without lookahead
    # slots; only then, with d's block free, does c's lookahead take it (c needs it next step anyway).
    full = make(num_blocks=2, block_size=4, num_lookahead_slots=1)
    c = seq("c", 3, arrival=0.0, max_tokens=10, ignore_eos=True)
    d = seq("d", 4, arrival=1.0, max_tokens=10, ignore_eos=True)
    full.add(c)
    full.add(d)
    out, _ = step(full)
    assert planned(out) == [("c", 3), ("d", 4)] and not out.preempted
    out, _ = step(full)
    assert planned(out) == [("c", 1)] and out.preempted == [d] and len(c.block_table) == 2
    # Lookahead slots are kept last: a block one sequence's next step needs now is never taken by another's
    # lookahead. e needs a second block for its own step; f, before it in the queue, would like one ahead.
    tight = make(num_blocks=3, block_size=4, num_lookahead_slots=1)
    f = seq("f", 3, arrival=0.0, max_tokens=10, ignore_eos=True)
    e = seq("e", 4, arrival=1.0, max_tokens=10, ignore_eos=True)
    tight.add(f)
    tight.add(e)
    step(tight)
    out, _ = step(tight)
    assert planned(out) == [("f", 1), ("e", 1)] and not out.preempted
    assert len(e.block_table) == 2 and len(f.block_table) == 1
    with pytest.raises(ValueError, match="num_lookahead_slots"):
        make(num_lookahead_slots=-1)
