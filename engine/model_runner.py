"""The model runner: owns the weights and the paged KV tensors, and turns one scheduled step into tokens.

One forward pass per step over the whole mixed batch: every token of every scheduled sequence (decode
tokens first, then prefill chunks; see :mod:`engine.attention_metadata`) goes through the embedding, the
projections, the MLPs and the norms together; only attention splits the batch between the decode and
prefill kernels. Logits are computed only for the rows that end a sequence's known tokens, then each of
those rows is sampled with its own request's parameters through the ``sample`` op; a step whose rows are
all plain greedy (no penalties, bias or logprobs) takes each row's argmax through the ``greedy`` op
instead, which a decode graph has already run.

KV cache size. ``EngineConfig.num_kv_blocks`` wins when given. On a GPU the runner loads the weights, runs
a profiling forward over ``max_num_batched_tokens`` tokens, and gives the KV cache what is left of
``gpu_memory_utilization`` x the card's memory (minus a reserve for sampling). On a CPU it takes a modest
fixed share (:data:`CPU_KV_BYTES`). One extra block past the managed ones is kept as scratch so that
padded rows of a captured decode graph never touch a real sequence's block.

Decode-only steps on CUDA/HIP replay a graph captured for the next larger padded batch size
(:mod:`engine.decode_graphs`) unless ``enforce_eager``.

Warm-up. Autotuned kernels time their configs at the first launch of each shape bucket (the token count's
power of two, the sampler's batch size class). On a live server that first launch stalls every request in
the step for seconds, so on a GPU the runner makes those launches at start-up
(:meth:`ModelRunner._warm_up`): one cache-less forward per prefill token bucket and one sampling per
sampler path and variant per batch class (:mod:`engine.warm_up`). Nothing is timed with
``TRITONFORGE_TUNE=first`` (kernels.tuning), so nothing is warmed then.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import dataclass

import torch

from engine.attention_metadata import StepBatch, build_step_batch
from engine.config import EngineConfig
from engine.models import build_model
from engine.models.layers import AttentionMetadata
from engine.ops import OpTable

log = logging.getLogger(__name__)

CPU_KV_BYTES = 512 * 2**20
CPU_MAX_BLOCKS = 4096


@dataclass
class TokenLogprob:
    """The chosen token's log-probability and, when asked for, the top alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class StepResult:
    sampled: list[int | None]                     # per scheduled sequence; None for a mid-prompt chunk
    logprobs: list[TokenLogprob | None]


class ModelRunner:
    def __init__(self, config: EngineConfig, model_config, weights, ops: OpTable, dtype: torch.dtype,
                 max_model_len: int):
        self.config, self.model_config, self.ops = config, model_config, ops
        self.device, self.dtype = torch.device(config.device), dtype
        self.block_size = config.block_size
        self.max_model_len = max_model_len
        self.model = build_model(model_config, ops, self.device, dtype)
        with torch.inference_mode():
            self.model.load_weights(weights)
        self.num_blocks = self._plan_kv_blocks()
        shape = (self.num_blocks + 1, self.block_size, model_config.num_key_value_heads, model_config.head_dim)
        # Zero-filled: attention references may touch unused slots of a partly filled block.
        self.kv_caches = [(torch.zeros(shape, dtype=dtype, device=self.device),
                           torch.zeros(shape, dtype=dtype, device=self.device))
                          for _ in range(model_config.num_hidden_layers)]
        self.scratch_block = self.num_blocks
        self._warm_up()
        self.graphs = None
        if self.device.type == "cuda" and not config.enforce_eager:
            from engine.decode_graphs import DecodeGraphs

            try:
                t = time.perf_counter()
                self.graphs = DecodeGraphs(self, max_batch=min(config.max_num_seqs, 256))
                log.info("captured %d decode graphs in %.1f s", len(self.graphs.sizes), time.perf_counter() - t)
            except RuntimeError as err:  # a kernel that cannot be captured: slower, but still correct
                log.warning("CUDA graph capture failed (%s); decoding eagerly", err)
                torch.cuda.synchronize(self.device)
        if self.device.type != "cpu":
            # Compiling and autotuning leave millions of long-lived Python objects behind; frozen, they are
            # out of the collector's reach, so a full collection while serving no longer walks them all.
            # (Not on a CPU, where tests build many engines in one process and frozen objects are never freed.)
            gc.collect()
            gc.freeze()

    def release(self) -> None:
        """Drop the weights, the KV cache and the CUDA graphs (the graphs refer back to the runner, and the
        start-up objects are frozen out of the cycle collector: only dropping the references frees them)."""
        self.graphs = None
        self.kv_caches = []
        self.model = None
        if self.device.type != "cpu":
            gc.unfreeze()  # what start-up froze is collectable again
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # --- KV cache sizing -------------------------------------------------------------------------

    @property
    def kv_bytes_per_block(self) -> int:
        c = self.model_config
        return 2 * c.num_hidden_layers * self.block_size * c.num_key_value_heads * c.head_dim * self.dtype.itemsize

    def _plan_kv_blocks(self) -> int:
        if self.config.num_kv_blocks is not None:
            return self.config.num_kv_blocks
        needed = math.ceil(self.max_model_len / self.block_size)
        if self.device.type != "cuda":
            return max(needed, min(CPU_MAX_BLOCKS, CPU_KV_BYTES // self.kv_bytes_per_block))
        peak = self._profile_peak_bytes()
        free, total = torch.cuda.mem_get_info(self.device)
        used_elsewhere = total - free - torch.cuda.memory_reserved(self.device)
        sampling_reserve = 8 * self.config.max_num_seqs * self.model_config.vocab_size * 4
        budget = total * self.config.gpu_memory_utilization - used_elsewhere - peak - sampling_reserve
        blocks = int(budget // self.kv_bytes_per_block)
        if blocks < needed:
            raise MemoryError(
                f"only {max(blocks, 0)} KV blocks ({max(blocks, 0) * self.block_size} tokens) fit in "
                f"{self.config.gpu_memory_utilization:.0%} of the GPU after the weights; one sequence of "
                f"max_model_len={self.max_model_len} needs {needed}. Raise gpu_memory_utilization, lower "
                f"max_model_len or max_num_batched_tokens, or use a smaller dtype")
        log.info("KV cache: %d blocks of %d tokens (%.2f GiB)", blocks, self.block_size,
                 blocks * self.kv_bytes_per_block / 2**30)
        return blocks

    @torch.inference_mode()
    def _profile_peak_bytes(self) -> int:
        """Peak memory of a forward over the largest batch the scheduler may send (no KV writes)."""
        tokens = min(self.config.max_num_batched_tokens, self.config.max_num_seqs * self.max_model_len)
        seqlen = min(tokens, self.max_model_len)
        lens = [seqlen] * (tokens // seqlen) + ([tokens % seqlen] if tokens % seqlen else [])
        dev = self.device
        ids = torch.randint(0, self.model_config.vocab_size, (tokens,), device=dev)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        self._cacheless_prefill(ids, lens)
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev)
        torch.cuda.empty_cache()
        return peak

    def _warm_up(self, force: bool = False) -> None:
        """The first launch of every autotuning bucket, at start-up (:func:`engine.warm_up.warm_up`)."""
        from engine.warm_up import warm_up

        warm_up(self, force)

    def _cacheless_prefill(self, token_ids: torch.Tensor, lens: list[int]) -> torch.Tensor:
        """Logits of the last token of each of ``len(lens)`` packed prompts, written nowhere in the cache
        (slot -1 skips the write; a one-block dummy cache satisfies the ops' shape checks)."""
        c, dev = self.model_config, self.device
        cache = torch.zeros(1, self.block_size, c.num_key_value_heads, c.head_dim, dtype=self.dtype, device=dev)
        cu = [0]
        for n in lens:
            cu.append(cu[-1] + n)
        idx32 = torch.tensor(cu, dtype=torch.int32, device=dev)
        meta = AttentionMetadata(
            slot_mapping=torch.full((cu[-1],), -1, dtype=torch.int64, device=dev), num_decode_tokens=0,
            decode_block_tables=torch.zeros(0, 1, dtype=torch.int32, device=dev),
            decode_context_lens=torch.zeros(0, dtype=torch.int32, device=dev), max_decode_context_len=0,
            num_prefills=len(lens), prefill_cu_seqlens=idx32, prefill_max_seqlen=max(lens),
            prefill_block_tables=torch.zeros(len(lens), 1, dtype=torch.int32, device=dev),
            prefill_prefix_lens=torch.zeros(len(lens), dtype=torch.int32, device=dev), prefill_has_prefix=False)
        positions = torch.cat([torch.arange(n, device=dev) for n in lens])
        hidden = self.model.forward(token_ids, positions, [(cache, cache)] * c.num_hidden_layers, meta)
        return self.model.compute_logits(hidden[idx32[1:].long() - 1])

    @torch.inference_mode()
    def prompt_logits(self, prompts: list[list[int]]) -> torch.Tensor:
        """Next-token logits [len(prompts), vocab] (float32) after each prompt, outside the paged cache:
        for scoring and for checking the model against a reference implementation."""
        if not prompts or any(not p or len(p) > self.max_model_len for p in prompts):
            raise ValueError(f"prompt_logits needs non-empty prompts of at most {self.max_model_len} tokens")
        ids = torch.tensor([t for p in prompts for t in p], dtype=torch.int64, device=self.device)
        return self._cacheless_prefill(ids, [len(p) for p in prompts]).float()

    # --- one step --------------------------------------------------------------------------------

    @torch.inference_mode()
    def execute(self, seqs, num_new_tokens: list[int], seeds: list[int]) -> StepResult:
        """Run the model over the step's tokens and sample where a sequence reached its end.

        ``seeds[i]`` is sequence i's sampling seed (its request's seed, or one the engine drew)."""
        greedy = all(s.params.plain_greedy for s in seqs)
        if self.graphs is not None and greedy and all(n == 1 for n in num_new_tokens):
            token_ids = self.graphs.take_ahead(seqs)  # this step, if the last one ran it ahead
            if token_ids is not None:
                return self._greedy_result(seqs, token_ids)
        batch = build_step_batch(seqs, num_new_tokens, self.block_size, self.device)
        if self.graphs is not None:
            self.graphs.ahead = None  # a step run ahead and not taken is dropped (see engine.decode_graphs)
            if greedy and self._graph_step(batch):
                return self._greedy_result(seqs, self.graphs.run_greedy(batch, seqs))
        logits, greedy_tokens = self._logits(batch)
        sampled: list[int | None] = [None] * len(seqs)
        entries: list[TokenLogprob | None] = [None] * len(seqs)
        if not batch.sampled_seqs:
            return StepResult(sampled, entries)
        if greedy or all(seqs[i].params.plain_greedy for i in batch.sampled_seqs):
            # Nothing to sample: each row's argmax is its token.
            if greedy_tokens is None:
                greedy_tokens = self.ops.greedy(logits)
            result = self._greedy_result([seqs[i] for i in batch.sampled_seqs], greedy_tokens.tolist())
            for row, i in enumerate(batch.sampled_seqs):
                sampled[i] = result.sampled[row]
            return StepResult(sampled, entries)
        from kernels.sampling import SamplingTensors

        rows = batch.sampled_seqs
        chosen = [seqs[i] for i in rows]
        # Prompts go as their distinct tokens, computed once per sequence: that is all a repetition
        # penalty needs, and rows without penalties never read them.
        st = SamplingTensors.build([s.params for s in chosen], [s.prompt_token_set for s in chosen],
                                   [s.output_token_ids for s in chosen], [seeds[i] for i in rows],
                                   self.model_config.vocab_size, self.device)
        result = self.ops.sample(logits, st)
        token_ids = result.host_token_ids  # read back by the launcher (the step's one wait for the device)
        if token_ids is None:
            token_ids = result.token_ids.tolist()
        if all(s.params.logprobs is None for s in chosen):
            for row, i in enumerate(rows):
                sampled[i] = token_ids[row]
            return StepResult(sampled, entries)
        lp = result.logprobs.tolist()
        top_ids = result.top_ids.tolist() if result.top_ids is not None else None
        top_lp = result.top_logprobs.tolist() if result.top_logprobs is not None else None
        for row, i in enumerate(rows):
            sampled[i] = token_ids[row]
            n = seqs[i].params.logprobs
            if n is not None:
                top = list(zip(top_ids[row][:n], top_lp[row][:n], strict=True)) if n and top_ids else []
                entries[i] = TokenLogprob(token_ids[row], lp[row], top)
        return StepResult(sampled, entries)

    @staticmethod
    def _greedy_result(seqs, token_ids: list[int]) -> StepResult:
        """One greedy token per sequence; -1 (a row of NaN or +inf logits) raises, as the sampler would."""
        from kernels.greedy import raise_for_invalid

        raise_for_invalid("greedy", token_ids)
        return StepResult(token_ids, [None] * len(seqs))

    def _graph_step(self, batch: StepBatch) -> bool:
        """Whether ``batch`` replays a decode graph: every row decoding and sampled, within the graphs' bounds."""
        return (self.graphs is not None and bool(batch.sampled_seqs) and batch.num_decodes == batch.num_tokens
                and self.graphs.fits(batch))

    def _logits(self, batch: StepBatch) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The sampled rows' logits, and their argmax when a decode graph computed it (else None)."""
        if not batch.sampled_seqs:
            self.model.forward(batch.token_ids, batch.positions, self.kv_caches, batch.meta)
            return None, None
        if self._graph_step(batch):
            return self.graphs.run(batch)
        hidden = self.model.forward(batch.token_ids, batch.positions, self.kv_caches, batch.meta)
        return self.model.compute_logits(hidden[batch.logits_rows]), None

