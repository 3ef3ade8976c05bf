"""The scheduler: which sequences run in the next forward pass, and how many tokens each.

Each engine step asks ``schedule()`` for a batch, runs the model over it, samples, and hands the sampled
tokens to ``postprocess()``. A batch is built in this order, under two limits (``max_num_batched_tokens``
tokens in all, ``max_num_seqs`` sequences):

1. running sequences that decode (one new token each), in arrival order;
2. running sequences in the middle of a chunked prefill (their next chunk, shrunk to the free blocks
   before anyone is preempted for it);
3. waiting sequences in arrival order (first-come-first-served: if the head does not fit, nothing behind
   it is admitted), each first matched against the prefix cache.

A prompt longer than the remaining token budget is prefilled in chunks over several steps; only the pass
that reaches its last known token yields logits, so ``postprocess`` gets ``None`` for the other chunks.

When a running sequence needs a block and none is free, the most recently arrived running sequence that
is not yet in this step's batch is *preempted by recompute*: its blocks are freed, ``num_computed_tokens``
goes back to 0 and it rejoins the waiting queue in arrival order. Its generated tokens are kept and
recomputed with the prompt when it resumes (cached full blocks make that cheap). No new sequence is
admitted in a step that preempted.

Progress: a sequence may hold at most ``max_len`` tokens (the pool's size, the model's ``max_model_len``,
and the token budget when chunked prefill is off; it finishes with "length" there), so any one sequence
fits the pool alone. Victims are the latest arrivals not yet in the batch, so the first sequence placed in
a step could have evicted every other one: each step with pending work runs at least one sequence, and
since lengths are bounded and admission is first-come-first-served, every request finishes
(tests/test_scheduler_state_machine.py drives thousands of random steps through this).

The scheduler and its KV-cache manager are owned by one engine loop; nothing here takes a lock.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.kv.manager import KVCacheManager
from engine.sequence import FINISH_REASONS, Sequence, SequenceStatus


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    enable_chunked_prefill: bool = True
    enable_prefix_cache: bool = True
    # Most tokens (prompt + output) one sequence may hold; None = only the KV pool limits it.
    max_model_len: int | None = None
    # Room kept for this many tokens past a decode step, when free blocks allow it (never by preempting
    # anyone): the decode graphs run a step ahead only where its KV slot is already allocated.
    num_lookahead_slots: int = 0

    def validate(self) -> None:
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        lookahead = self.num_lookahead_slots
        if not isinstance(lookahead, int) or isinstance(lookahead, bool) or lookahead < 0:
            raise ValueError(f"num_lookahead_slots must be a non-negative integer, got {lookahead!r}")
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int) or self.max_model_len < 1):
            raise ValueError(f"max_model_len must be a positive integer or None, got {self.max_model_len!r}")


class RequestTooLongError(ValueError):
    """A prompt that can never fit: longer than the model, the KV pool or (unchunked) the token budget."""


@dataclass
class SchedulerOutput:
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    # Per sequence: does this pass reach its last known token (so its logits are sampled)?
    do_sample: list[bool] = field(default_factory=list)
    # Per sequence: a single query token after cached context (the paged-decode shape).
    is_decode: list[bool] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.seqs

    @property
    def num_batched_tokens(self) -> int:
        return sum(self.num_new_tokens)

    @property
    def num_decodes(self) -> int:
        return sum(self.is_decode)

    def _add(self, seq: Sequence, num_new_tokens: int) -> None:
        self.seqs.append(seq)
        self.num_new_tokens.append(num_new_tokens)
        self.do_sample.append(seq.num_computed_tokens + num_new_tokens == seq.num_tokens)
        self.is_decode.append(num_new_tokens == 1 and seq.num_computed_tokens > 0)


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv: KVCacheManager, eos_token_ids: Iterable[int] = ()) -> None:
        config.validate()
        if kv.block_size != config.block_size:
            raise ValueError(f"KV manager block_size {kv.block_size} differs from the config's {config.block_size}")
        self.config = config
        self.kv = kv
        self.eos_token_ids = frozenset(eos_token_ids)
        self.waiting: list[Sequence] = []  # sorted by arrival
        self.running: list[Sequence] = []  # sorted by arrival
        self._by_id: dict[str, Sequence] = {}
        self.num_preemptions = 0
        self.num_finished = 0
        limits = [kv.capacity_tokens]
        if config.max_model_len is not None:
            limits.append(config.max_model_len)
        if not config.enable_chunked_prefill:
            limits.append(config.max_num_batched_tokens)
        self.max_len = min(limits)

    # -- queues -----------------------------------------------------------------------------------

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def stats(self) -> dict[str, float]:
        return {
            "num_waiting": len(self.waiting),
            "num_running": len(self.running),
            "num_preemptions": self.num_preemptions,
            "num_finished": self.num_finished,
            "kv_usage": self.kv.usage(),
            "kv_free_blocks": self.kv.num_free_blocks,
            "kv_total_blocks": self.kv.num_blocks,
            "prefix_cache_blocks": len(self.kv.prefix_cache),
            "prefix_cache_hit_rate": self.kv.prefix_cache.hit_rate(),
        }

    def get(self, request_id: str) -> Sequence | None:
        return self._by_id.get(request_id)

    def add(self, seq: Sequence) -> None:
        if seq.request_id in self._by_id:
            raise ValueError(f"request id {seq.request_id!r} is already in use; request ids must be unique")
        if seq.status is not SequenceStatus.WAITING or seq.num_computed_tokens or seq.block_table:
            raise ValueError(f"only new sequences can be added, got {seq}")
        if seq.num_tokens > self.max_len:
            raise RequestTooLongError(
                f"request {seq.request_id!r} has {seq.num_tokens} prompt tokens but at most {self.max_len} fit "
                f"({self._max_len_reason()}); shorten the prompt"
            )
        self._by_id[seq.request_id] = seq
        _insert_by_arrival(self.waiting, seq)

    def abort(self, request_id: str) -> Sequence | None:
        """Finish a request with "abort" and free its blocks now; None if it is unknown or done."""
        seq = self._by_id.get(request_id)
        if seq is None:
            return None
        self.finish(seq, "abort")
        return seq

    def finish(self, seq: Sequence, reason: str) -> None:
        """End ``seq`` (stop string, timeout, error, abort): leave the queues, free its blocks."""
        if reason not in FINISH_REASONS:
            raise ValueError(f"finish reason must be one of {FINISH_REASONS}, got {reason!r}")
        if seq.is_finished:
            return
        queue = self.running if seq.status is SequenceStatus.RUNNING else self.waiting
        queue.remove(seq)
        self.kv.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self._by_id.pop(seq.request_id, None)
        self.num_finished += 1

    # -- one step ---------------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        scheduled: set[int] = set()
        decodes: list[Sequence] = []
        prefills: list[Sequence] = []
        for seq in self.running:
            (decodes if seq.num_uncomputed_tokens == 1 else prefills).append(seq)
        for seq in decodes + prefills:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop to make room
            num_new = self._chunk_size(seq, budget)
            if num_new == 0:
                continue
            if num_new > 1 and self.config.enable_chunked_prefill:
                # A prefill chunk shrinks to the free room before anyone is preempted for it.
                num_new = min(num_new, self.kv.num_allocatable_tokens(seq)) or 1
            while not self.kv.allocate_slots(seq, num_new):
                victim = next(s for s in reversed(self.running) if id(s) not in scheduled)
                self._preempt(victim, out)
                if victim is seq:
                    break
            else:
                out._add(seq, num_new)
                scheduled.add(id(seq))
                budget -= num_new

        while self.waiting and budget > 0 and not out.preempted and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            self.kv.match_prefix(seq)
            num_new = self._chunk_size(seq, budget)
            if num_new == 0 or not self.kv.allocate_slots(seq, num_new):
                self._unplace(seq)
                break
            self.waiting.pop(0)
            seq.status = SequenceStatus.RUNNING
            _insert_by_arrival(self.running, seq)
            out._add(seq, num_new)
            budget -= num_new
        if self.config.num_lookahead_slots:
            # Last, so that it takes only blocks no one in this step needed: room for the next step of each
            # decoding sequence where free blocks allow. Nobody is preempted for it.
            for seq, num_new, decode in zip(out.seqs, out.num_new_tokens, out.is_decode, strict=True):
                if decode:
                    self.kv.allocate_slots(seq, num_new + self.config.num_lookahead_slots)
        return out

    def postprocess(
        self, out: SchedulerOutput, sampled: list[int | None], logprob_entries: list[Any] | None = None
    ) -> list[Sequence]:
        """Advance the batch after the forward pass; return the sequences that finished in this step.

        ``sampled[i]`` is the token sampled for ``out.seqs[i]``, or None where ``out.do_sample[i]`` is
        false (a mid-prompt chunk). Sequences finished meanwhile (aborted between schedule and
        postprocess) are skipped.
        """
        if len(sampled) != len(out.seqs):
            raise ValueError(f"postprocess got {len(sampled)} sampled tokens for a batch of {len(out.seqs)}")
        finished: list[Sequence] = []
        for i, (seq, num_new) in enumerate(zip(out.seqs, out.num_new_tokens, strict=True)):
            if seq.is_finished:
                continue
            seq.num_computed_tokens += num_new
            assert seq.num_computed_tokens <= seq.num_tokens, f"computed past the known tokens: {seq}"
            self.kv.commit(seq)
            if seq.num_computed_tokens < seq.num_tokens:
                continue  # a mid-prompt chunk: no logits were sampled
            token_id = sampled[i]
            if token_id is None:
                raise ValueError(f"request {seq.request_id!r} reached its last token but no token was sampled")
            seq.append_token(token_id, None if logprob_entries is None else logprob_entries[i])
            reason = self._stop_reason(seq, token_id)
            if reason is not None:
                self.finish(seq, reason)
                finished.append(seq)
        return finished

    # -- helpers ----------------------------------------------------------------------------------

    def _chunk_size(self, seq: Sequence, budget: int) -> int:
        remaining = seq.num_uncomputed_tokens
        if remaining <= budget:
            return remaining
        return budget if self.config.enable_chunked_prefill else 0

    def _stop_reason(self, seq: Sequence, token_id: int) -> str | None:
        params = seq.params
        if token_id in params.stop_token_ids:
            return "stop"
        if not params.ignore_eos and token_id in self.eos_token_ids:
            return "stop"
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.max_len:
            return "length"
        return None

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self._unplace(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        _insert_by_arrival(self.waiting, seq)
        out.preempted.append(seq)
        self.num_preemptions += 1

    def _unplace(self, seq: Sequence) -> None:
        self.kv.free(seq)
        seq.num_computed_tokens = 0

    def _max_len_reason(self) -> str:
        c = self.config
        parts = [f"the KV cache holds {self.kv.capacity_tokens} tokens"]
        if c.max_model_len is not None:
            parts.append(f"max_model_len is {c.max_model_len}")
        if not c.enable_chunked_prefill:
            parts.append(f"without chunked prefill a prompt must fit max_num_batched_tokens={c.max_num_batched_tokens}")
        return "; ".join(parts)

    def check_invariants(self) -> None:
        """Queue and status consistency on top of the KV manager's block accounting."""
        self.kv.check_invariants()
        assert len(self.running) <= self.config.max_num_seqs, "more running sequences than max_num_seqs"
        for queue, status in ((self.waiting, SequenceStatus.WAITING), (self.running, SequenceStatus.RUNNING)):
            keys = [seq.arrival_key for seq in queue]
            assert keys == sorted(keys), f"{status.name} queue is out of arrival order"
            for seq in queue:
                assert seq.status is status, f"{seq} is in the {status.name} queue"
                assert self._by_id.get(seq.request_id) is seq, f"{seq} is queued but not indexed"
        for seq in self.waiting:
            assert not seq.block_table and seq.num_computed_tokens == 0, f"waiting {seq} holds blocks"
        assert len(self._by_id) == len(self.waiting) + len(self.running), "index and queues disagree"


def _insert_by_arrival(queue: list[Sequence], seq: Sequence) -> None:
    keys = [s.arrival_key for s in queue]
    queue.insert(bisect.bisect_right(keys, seq.arrival_key), seq)
