"""Random engine lives for the scheduler + KV-cache manager + prefix cache, checked after every step.

A hypothesis state machine adds requests (prompts built from a few shared prefixes, so the prefix cache
hits often), runs schedule -> fake forward pass -> postprocess with random sampled tokens, aborts and
finishes requests, all over a small block pool so that preemption happens. The fake forward pass keeps
a model of the paged KV cache: every slot it writes records the whole token history up to that position
(what real K/V depends on through attention). Before each pass it checks that every already-computed
position of every scheduled sequence, whether computed by this sequence, restored by the prefix cache
or kept across a preemption, holds exactly that sequence's history. That catches wrong reuse, a shared
block being overwritten and a stale block table, independently of the code under test.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.kv.manager import KVCacheManager
from engine.sampling_params import SamplingParams
from engine.scheduler import RequestTooLongError, Scheduler, SchedulerConfig
from engine.sequence import Sequence as Seq
from engine.sequence import SequenceStatus

pytestmark = pytest.mark.engine

EOS = 0
STOP_TOKEN = 5
FILLER = 1
SHARED_PREFIXES = ([1, 2, 3, 4] * 6, [2, 2, 2, 2] * 6, [3, 1, 4, 1, 5, 2] * 4)
TOKENS = st.integers(0, 5)  # prompts: a tiny vocabulary, so prefixes repeat
SAMPLED = st.integers(0, 11)  # the fake model: EOS and the stop token now and then, not every few steps
NO_ABORT = 1 << 30


class SchedulerMachine(RuleBasedStateMachine):
    @initialize(
        num_blocks=st.integers(3, 10),
        block_size=st.sampled_from([1, 2, 4]),
        budget=st.integers(1, 24),
        max_num_seqs=st.integers(1, 6),
        chunked=st.booleans(),
        prefix_cache=st.booleans(),
        max_model_len=st.none() | st.integers(3, 40),
        lookahead=st.integers(0, 2),
    )
    def setup(self, num_blocks, block_size, budget, max_num_seqs, chunked, prefix_cache, max_model_len, lookahead):
        self.config = SchedulerConfig(
            max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, block_size=block_size,
            enable_chunked_prefill=chunked, enable_prefix_cache=prefix_cache, max_model_len=max_model_len,
            num_lookahead_slots=lookahead,
        )
        self.kv = KVCacheManager(num_blocks, block_size, prefix_cache)
        self.scheduler = Scheduler(self.config, self.kv, eos_token_ids=[EOS])
        limits = [num_blocks * block_size, budget if not chunked else num_blocks * block_size]
        self.max_len = min(limits + ([max_model_len] if max_model_len else []))
        self.slots: dict[int, tuple[int, ...]] = {}  # the fake KV cache: slot -> token history
        self.seqs: list[Seq] = []
        self.clock = 0.0
        self.steps = 0

    # -- rules ------------------------------------------------------------------------------------

    @rule(requests=st.lists(
        st.tuples(
            st.sampled_from(SHARED_PREFIXES),
            st.integers(0, 24),  # how much of the shared prefix
            st.lists(TOKENS, max_size=8),  # a private suffix
            st.integers(1, 16),  # max_tokens
            st.booleans(),  # ignore_eos
            st.booleans(),  # stop on STOP_TOKEN
        ),
        min_size=1, max_size=3,
    ))
    def add(self, requests):
        for prefix, cut, suffix, max_tokens, ignore_eos, stop in requests:
            prompt = prefix[:cut] + suffix or [FILLER]
            params = SamplingParams(
                max_tokens=max_tokens, ignore_eos=ignore_eos, stop_token_ids=(STOP_TOKEN,) if stop else ()
            )
            self.clock += 1.0
            seq = Seq(f"r{len(self.seqs)}", prompt, params, arrival_time=self.clock)
            if len(prompt) > self.max_len:
                with pytest.raises(RequestTooLongError):
                    self.scheduler.add(seq)
                continue
            self.scheduler.add(seq)
            self.seqs.append(seq)

    @precondition(lambda self: self.scheduler.has_unfinished())
    @rule(data=st.data())
    def step(self, data):
        width = self.config.max_num_seqs
        for _ in range(data.draw(st.integers(1, 8), label="steps")):
            if not self.scheduler.has_unfinished():
                break
            tokens = data.draw(st.lists(SAMPLED, min_size=width, max_size=width), label="sampled")
            # Mostly no abort: an index past the batch means none (a client disconnect is rare).
            abort_in_flight = data.draw(st.integers(0, 8 * width - 1), label="abort in flight")
            self.run_step(tokens, abort_in_flight)
            self.scheduler.check_invariants()

    @precondition(lambda self: self.scheduler.has_unfinished())
    @rule(data=st.data(), how=st.sampled_from(["abort", "stop", "timeout", "error"]))
    def end_a_request(self, data, how):
        live = [seq for seq in self.seqs if not seq.is_finished]
        seq = data.draw(st.sampled_from(live))
        if how == "abort":
            assert self.scheduler.abort(seq.request_id) is seq
        else:
            self.scheduler.finish(seq, how)
        assert seq.is_finished and seq.finish_reason == how and seq.block_table == []

    @rule()
    def abort_unknown(self):
        assert self.scheduler.abort("no-such-request") is None

    @invariant()
    def consistent(self):
        if hasattr(self, "scheduler"):
            self.scheduler.check_invariants()

    def teardown(self):
        if not hasattr(self, "scheduler"):
            return
        # Run everything to completion: the engine must always make progress and leak nothing.
        for _ in range(5000):
            if not self.scheduler.has_unfinished():
                break
            self.run_step([FILLER] * self.config.max_num_seqs, NO_ABORT)
        assert not self.scheduler.has_unfinished(), "the scheduler stopped making progress"
        self.scheduler.check_invariants()
        assert self.kv.num_free_blocks == self.kv.num_blocks, "blocks leaked after every request finished"
        assert all(self.kv.allocator.ref_count(b) == 0 for b in range(self.kv.num_blocks))
        for seq in self.seqs:
            assert seq.is_finished and seq.block_table == []
            assert seq.token_ids == seq.prompt_token_ids + seq.output_token_ids
            assert seq.num_output_tokens <= seq.params.max_tokens
            if seq.finish_reason == "length":
                assert seq.num_output_tokens == seq.params.max_tokens or seq.num_tokens >= self.max_len

    # -- one engine step with a fake model -----------------------------------------------------------

    def run_step(self, tokens: list[int], abort_in_flight: int) -> None:
        s = self.scheduler
        before = {id(seq): (seq.status, seq.num_uncomputed_tokens) for seq in s.running + s.waiting}
        had_work = s.has_unfinished()
        out = s.schedule()
        self.steps += 1
        assert not (had_work and out.is_empty), "nothing scheduled although requests are pending"
        self.check_batch(out, before)
        for seq, num_new in zip(out.seqs, out.num_new_tokens, strict=True):
            self.check_and_write_kv(seq, num_new)
        aborted = out.seqs[abort_in_flight] if abort_in_flight < len(out.seqs) else None
        if aborted is not None:
            s.abort(aborted.request_id)  # a client disconnect mid-step
            aborted_outputs = list(aborted.output_token_ids)
        sampled = [tokens[i] if sample else None for i, sample in enumerate(out.do_sample)]
        finished = s.postprocess(out, sampled)
        assert all(seq.block_table == [] for seq in finished)
        expected_finished = []
        for seq, token in zip(out.seqs, sampled, strict=True):
            if seq is aborted:
                assert seq.finish_reason == "abort" and seq.output_token_ids == aborted_outputs
                continue
            if token is None:
                assert not seq.is_finished and seq.num_computed_tokens < seq.num_tokens
                continue
            assert seq.output_token_ids[-1] == token
            params = seq.params
            if token in params.stop_token_ids or (token == EOS and not params.ignore_eos):
                expected = "stop"
            elif seq.num_output_tokens == params.max_tokens or seq.num_tokens >= self.max_len:
                expected = "length"
            else:
                expected = None
            assert seq.finish_reason == expected, f"{seq.request_id} sampled {token}: {seq.finish_reason} != {expected}"
            if expected:
                expected_finished.append(seq)
        assert finished == expected_finished

    def check_batch(self, out, before) -> None:
        config = self.config
        assert 0 < out.num_batched_tokens <= config.max_num_batched_tokens or out.is_empty
        assert len(out.seqs) <= config.max_num_seqs
        assert len({id(seq) for seq in out.seqs}) == len(out.seqs), "a sequence is scheduled twice"
        # Decodes, then running prefills, then admissions from the waiting queue.
        rank = {"decode": 0, "prefill": 1, "admitted": 2}
        ranks = []
        for seq, num_new in zip(out.seqs, out.num_new_tokens, strict=True):
            status, uncomputed = before[id(seq)]
            kind = "admitted" if status is SequenceStatus.WAITING else "decode" if uncomputed == 1 else "prefill"
            ranks.append(rank[kind])
            assert seq.status is SequenceStatus.RUNNING
            assert 1 <= num_new <= seq.num_uncomputed_tokens
            if not config.enable_chunked_prefill:
                assert num_new == seq.num_uncomputed_tokens
            assert len(seq.block_table) * config.block_size >= seq.num_computed_tokens + num_new
        assert ranks == sorted(ranks), "decodes must come before prefills, and running before waiting"
        for seq in out.preempted:
            assert seq.status is SequenceStatus.WAITING and seq.block_table == [] and seq.num_computed_tokens == 0
        if out.preempted:
            assert all(r < 2 for r in ranks), "a request was admitted in a step that preempted"
            # Victims are the latest arrivals among running sequences not in the batch.
            left_out = [seq for seq in self.scheduler.running if seq not in out.seqs]
            for victim in out.preempted:
                assert all(seq.arrival_key < victim.arrival_key for seq in left_out), "preempted an early arrival"

    def check_and_write_kv(self, seq: Seq, num_new: int) -> None:
        kv, bs = self.kv, self.config.block_size
        start = seq.num_computed_tokens
        for pos, slot in enumerate(kv.slot_mapping(seq, 0, start)):
            assert self.slots.get(slot) == tuple(seq.token_ids[: pos + 1]), (
                f"{seq.request_id} position {pos}: the cache holds another sequence's K/V"
            )
        for pos, slot in zip(range(start, start + num_new), kv.slot_mapping(seq, start, num_new), strict=True):
            block = slot // bs
            assert kv.allocator.ref_count(block) == 1, f"writing into block {block}, which is shared"
            assert not kv.prefix_cache.holds(block), f"writing into block {block}, which is in the prefix cache"
            self.slots[slot] = tuple(seq.token_ids[: pos + 1])


TestSchedulerStateMachine = SchedulerMachine.TestCase
# Thousands of steps in all; pure Python, so this stays within seconds on a CPU.
TestSchedulerStateMachine.settings = settings(max_examples=120, stateful_step_count=60, deadline=None)
