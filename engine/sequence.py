"""One request's token sequence and its progress through the engine.

A sequence holds the prompt and the tokens generated so far (``token_ids`` = prompt + output) and two
counters the scheduler and the KV cache agree on:

- ``num_computed_tokens``: tokens whose K/V is already in the paged cache. The next forward pass for
  this sequence computes tokens ``num_computed_tokens .. num_computed_tokens + n - 1``; when that chunk
  reaches ``num_tokens`` the pass yields logits and a new token is sampled.
- ``num_cached_tokens``: how many of the prompt's tokens were served by the prefix cache (reported to
  clients as cached prompt tokens).

``block_table[i]`` is the KV-cache block that holds tokens ``i * block_size .. (i + 1) * block_size - 1``.
After a preemption the sequence keeps its generated tokens and recomputes all of them as if they were
prompt: ``num_computed_tokens`` goes back to 0 and the block table is emptied.
"""

from __future__ import annotations

import itertools
import time
from enum import Enum
from typing import Any

import numpy as np

from engine.sampling_params import SamplingParams

# Breaks ties between sequences that arrive within the clock's resolution, so "arrival order" is total.
_arrival_counter = itertools.count()


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


FINISH_REASONS = ("stop", "length", "abort", "timeout", "error")


class Sequence:
    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams | None = None,
        arrival_time: float | None = None,
    ) -> None:
        if not prompt_token_ids:
            raise ValueError(f"request {request_id!r} has an empty prompt; at least one token is needed")
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.params = params if params is not None else SamplingParams()
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.arrival_order = next(_arrival_counter)
        self.token_ids: list[int] = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.num_prompt_tokens = len(prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.block_table: list[int] = []
        # Chained hashes of this sequence's leading full blocks (kept by the KV-cache manager).
        self.block_hashes: list[bytes] = []
        self.status = SequenceStatus.WAITING
        self.finish_reason: str | None = None
        self.output_logprobs: list[Any] = []
        self.num_preemptions = 0
        self._prompt_token_set: np.ndarray | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def prompt_token_set(self) -> np.ndarray:
        """The prompt's distinct tokens, sorted (int64): what a repetition penalty looks up on every step,
        computed once instead of sorting the prompt again each time."""
        if self._prompt_token_set is None:
            self._prompt_token_set = np.unique(np.asarray(self.prompt_token_ids, dtype=np.int64))
        return self._prompt_token_set

    @property
    def last_token_id(self) -> int:
        return self.token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def arrival_key(self) -> tuple[float, int]:
        """Sort key for first-come-first-served order."""
        return (self.arrival_time, self.arrival_order)

    def append_token(self, token_id: int, logprob_entry: Any = None) -> None:
        self.token_ids.append(token_id)
        self.output_token_ids.append(token_id)
        if logprob_entry is not None:
            self.output_logprobs.append(logprob_entry)

    def __repr__(self) -> str:
        return (
            f"Sequence({self.request_id!r}, {self.status.name}, tokens={self.num_tokens} "
            f"(prompt {self.num_prompt_tokens}), computed={self.num_computed_tokens}, "
            f"blocks={self.block_table})"
        )
