"""CUDA/HIP graphs for decode-only steps: one captured forward (+ logits) per padded batch size.

A decode step of a small model is dominated by kernel launch overhead: hundreds of small kernels per
token. Capturing the whole forward once per batch size and replaying it removes that overhead. Graphs
replay on fixed addresses, so the step's inputs are copied into static buffers first; a batch of n
sequences runs the graph of the smallest captured size >= n, with the padded rows made harmless: their
KV write slot is -1 (skipped by ``kv_cache_write``) and they attend to one token of the scratch block.
``max_context_len`` is fixed at capture (:data:`GRAPH_MAX_CONTEXT`, or the model's maximum if smaller) so
the decode kernel's launch grid never depends on the batch; a larger bound would launch mostly idle
programs on every step. Steps with prefill chunks, with a longer context, or larger than the biggest
graph run eagerly (there the kernels' own work dwarfs the launch overhead a graph saves).

Each size is run once eagerly before capture, on the stream the capture then uses, so that autotuned
kernels pick their configs outside the graph (benchmarking inside a capture is not allowed) and per-stream
state such as the split-K arrival counters exists, zeroed for real, before the graph refers to it.

The graph ends with the ``greedy`` op over its logits, so a batch of plain greedy requests (the runner
checks) reads its tokens straight back with no sampler launch.

Running one step ahead (plain greedy batches). A step's host work (scheduling, metadata, output and
detokenization) would leave the GPU idle between graphs. So after a greedy graph step N is enqueued, and
its tokens' copy to the host with it, :meth:`DecodeGraphs.run_greedy` also enqueues step N+1 for the same
sequences before waiting: its token ids come from step N's argmax on the device, its positions, slots,
context lengths and any new block-table entry from the host by non-blocking copies. It does so only where
nothing the host has yet to decide could change step N+1's inputs: every row's next position in a block
it already holds (the scheduler keeps one lookahead slot per decoding sequence where free blocks allow,
``SchedulerConfig.num_lookahead_slots``), under the graph's context bound, and no row at its token limit.
The next :meth:`ModelRunner.execute` takes that result if its step is exactly the one run ahead (same
sequences in order, each at the expected position with the expected input token and block); otherwise it
drops it and runs its own. A dropped step is harmless: it only wrote each sequence's KV at the next
position, in a block the sequence owns that is not yet full (so never a prefix-cache block), with the
values the real step writes again if the sequence goes on; a block freed meanwhile is written by any new
owner after it, in stream order.
"""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass

import torch

from engine.models.layers import AttentionMetadata

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256)
GRAPH_MAX_CONTEXT = 8192


@dataclass
class _Ahead:
    """A step enqueued ahead: what each row must be at the next step (see :func:`row_keys`), and its graph."""

    keys: list[tuple]
    bs: int


def row_keys(seqs, block_size: int) -> list[tuple]:
    """Each sequence's (request, next input position, its token there, the block holding that position)."""
    return [(s.request_id, s.num_computed_tokens, s.token_ids[s.num_computed_tokens],
             s.block_table[s.num_computed_tokens // block_size]) for s in seqs]


class DecodeGraphs:
    def __init__(self, runner, max_batch: int):
        self.runner = runner
        dev = runner.device
        self.max_context = min(runner.max_model_len, GRAPH_MAX_CONTEXT)
        self.max_blocks = math.ceil(self.max_context / runner.block_size)
        self.sizes = sorted({s for s in BATCH_SIZES if s < max_batch} | {max_batch})
        n = self.sizes[-1]
        # Token ids, positions and slots in one [3, n] block, filled by one copy per step.
        self.inputs = torch.zeros(3, n, dtype=torch.int64, device=dev)
        self.token_ids, self.positions, self.slots = self.inputs[0], self.inputs[1], self.inputs[2]
        self.slots.fill_(-1)
        self.tables = torch.full((n, self.max_blocks), runner.scratch_block, dtype=torch.int32, device=dev)
        self.context_lens = torch.ones(n, dtype=torch.int32, device=dev)
        # The metadata's empty prefill part, made here: a tensor made during capture is a fill node in the graph.
        self.no_prefill = torch.zeros(1, dtype=torch.int32, device=dev)
        # Rows below this may hold a real sequence's inputs from an earlier step; rows at or above it hold
        # the harmless padding values, so a step only re-pads when its batch is smaller than the last one.
        self.num_dirty_rows = 0
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.greedy_tokens: dict[int, torch.Tensor] = {}  # each row's argmax, for all-greedy batches
        self.ahead: _Ahead | None = None
        self.steps_served = 0  # decode steps whose logits came from a graph (replayed now or ahead)
        self.steps_ahead = 0   # of those, steps run ahead
        on_gpu = dev.type == "cuda"
        self.host_tokens = torch.empty(n, dtype=torch.int64, pin_memory=on_gpu)
        self.read_done = torch.cuda.Event() if on_gpu else None
        self._capture_all()

    def _meta(self, bs: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.slots[:bs], num_decode_tokens=bs, decode_block_tables=self.tables[:bs],
            decode_context_lens=self.context_lens[:bs], max_decode_context_len=self.max_context,
            num_prefills=0, prefill_cu_seqlens=self.no_prefill, prefill_max_seqlen=0,
            prefill_block_tables=self.tables[:0], prefill_prefix_lens=self.no_prefill[:0], prefill_has_prefix=False)

    def _forward(self, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.runner.model
        hidden = model.forward(self.token_ids[:bs], self.positions[:bs], self.runner.kv_caches, self._meta(bs))
        logits = model.compute_logits(hidden)
        # The argmax rides along in the graph (a few microseconds of device time): a batch of plain greedy
        # rows then needs no sampler launch at all, only the read-back.
        return logits, self.runner.ops.greedy(logits)

    @torch.inference_mode()
    def _capture_all(self) -> None:
        pool = None
        stream = torch.cuda.Stream(self.runner.device)
        for bs in reversed(self.sizes):  # largest first: the smaller graphs reuse its memory pool
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self._forward(bs)  # warm-up: autotuning and lazy allocations happen outside the capture
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            # Captured on the warm-up's stream: per-stream state the kernels made there (the split-K
            # arrival counters, zeroed for real) is what the graph uses. On another stream it would be
            # made inside the capture, where a zero fill only joins the graph (kernels/_split_k.py).
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                self.logits[bs], self.greedy_tokens[bs] = self._forward(bs)
            pool = graph.pool()
            self.graphs[bs] = graph
        torch.cuda.synchronize(self.runner.device)
        log.info("captured decode graphs for batch sizes %s", self.sizes)

    def fits(self, batch) -> bool:
        meta = batch.meta
        return (batch.num_tokens <= self.sizes[-1] and meta.max_decode_context_len <= self.max_context
                and meta.decode_block_tables.shape[1] <= self.max_blocks)

    def run(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay the graph for ``batch``: its logits [n, vocab] and each row's argmax [n]. (A step run ahead
        is dropped by the runner before any other step: see ``ModelRunner.execute``.)"""
        self.steps_served += 1
        n = batch.num_tokens
        bs = self.sizes[bisect.bisect_left(self.sizes, n)]
        meta = batch.meta
        width = meta.decode_block_tables.shape[1]
        if self.num_dirty_rows > n:
            end = self.num_dirty_rows
            self.slots[n:end].fill_(-1)
            self.tables[n:end].fill_(self.runner.scratch_block)
            self.context_lens[n:end].fill_(1)
        self.num_dirty_rows = n
        if batch.inputs is not None:
            self.inputs[:, :n].copy_(batch.inputs)
        else:
            self.token_ids[:n].copy_(batch.token_ids)
            self.positions[:n].copy_(batch.positions)
            self.slots[:n].copy_(meta.slot_mapping)
        self.tables[:n, :width].copy_(meta.decode_block_tables)
        self.context_lens[:n].copy_(meta.decode_context_lens)
        self.graphs[bs].replay()
        return self.logits[bs][:n], self.greedy_tokens[bs][:n]

    # --- plain greedy steps, one ahead -----------------------------------------------------------

    def take_ahead(self, seqs) -> list[int] | None:
        """The tokens of this step if it is the one run ahead (and run the next one ahead); else None."""
        ahead, self.ahead = self.ahead, None
        if ahead is None or row_keys(seqs, self.runner.block_size) != ahead.keys:
            return None
        self.steps_served += 1
        self.steps_ahead += 1
        return self._finish(seqs, ahead.bs)

    def run_greedy(self, batch, seqs) -> list[int]:
        """Replay ``batch`` (all rows decoding, all plain greedy) and return each row's token."""
        self.run(batch)
        return self._finish(seqs, self.sizes[bisect.bisect_left(self.sizes, len(seqs))])

    def _finish(self, seqs, bs: int) -> list[int]:
        n = len(seqs)
        tokens = self.greedy_tokens[bs][:n]
        if self.read_done is None:  # no CUDA: everything ran already
            host = tokens.tolist()
        else:  # the copy to the host goes before the step run ahead, which overwrites the outputs
            self.host_tokens[:n].copy_(tokens, non_blocking=True)
            self.read_done.record()
        go_ahead = self._can_run_ahead(seqs)
        if go_ahead:
            nxt = self._stage_next(seqs, tokens)
            self.graphs[bs].replay()
        if self.read_done is not None:
            self.read_done.synchronize()
            host = self.host_tokens[:n].tolist()
        if go_ahead:
            self.ahead = _Ahead([(r, p, t, b) for (r, p, b), t in zip(nxt, host, strict=True)], bs)
        return host

    def _stage_next(self, seqs, tokens: torch.Tensor) -> list[tuple]:
        """Stage the next step's inputs while this step runs: token ids from this step's argmax (device to
        device), the rest from the host by pinned, non-blocking copies (the caching host allocator keeps a
        pinned buffer until its copy is done). Returns each row's (request, position, block) there."""
        n, bsz, pin = len(seqs), self.runner.block_size, self.read_done is not None
        pos = [s.num_computed_tokens + 1 for s in seqs]
        blocks = [s.block_table[p // bsz] for s, p in zip(seqs, pos, strict=True)]
        self.token_ids[:n].copy_(tokens)
        staged = torch.tensor([pos, [b * bsz + p % bsz for b, p in zip(blocks, pos, strict=True)]], dtype=torch.int64,
                              pin_memory=pin)
        self.inputs[1:, :n].copy_(staged, non_blocking=pin)  # positions and slots
        self.context_lens[:n] += 1
        # A row whose next position starts a block: its table entry there (the block the lookahead slot
        # gave it) may postdate the table staged for this step.
        new = [(row, p // bsz, b) for row, (p, b) in enumerate(zip(pos, blocks, strict=True)) if p % bsz == 0]
        if new:
            entries = torch.tensor(new, dtype=torch.int64, pin_memory=pin).to(self.tables.device, non_blocking=pin)
            self.tables[entries[:, 0], entries[:, 1]] = entries[:, 2].to(self.tables.dtype)
        return [(s.request_id, p, b) for s, p, b in zip(seqs, pos, blocks, strict=True)]

    def _can_run_ahead(self, seqs) -> bool:
        """Whether the next step's inputs are known without the host's answer: each row's next position in a
        block it holds (the scheduler's lookahead slot) and under the context bound, and no row ending at
        this step by its token limit."""
        block_size, limit = self.runner.block_size, min(self.max_context, self.runner.max_model_len) - 1
        for s in seqs:
            nxt = s.num_computed_tokens + 1
            if (nxt // block_size >= len(s.block_table) or nxt >= limit
                    or s.num_output_tokens + 1 >= s.params.max_tokens):
                return False
        return True
