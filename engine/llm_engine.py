"""The engine: requests in, streamed text out, one scheduler step at a time.

    step():  expire deadlines -> schedule -> run the model and sample -> postprocess -> detokenize

The loop is single-threaded by design: the scheduler and its KV-cache manager are owned by whoever calls
``step()`` (the offline :class:`engine.llm.LLM`, or the HTTP server's one background loop thread), so
nothing takes a lock. Calls to ``add_request`` / ``abort`` must come from that same thread.

Text is produced incrementally (multi-byte characters split across tokens are held back until whole)
and passed through a stop-string matcher: a stop string may straddle tokens, and neither it nor anything
after it is returned. A request may carry a deadline (``timeout_s``, or ``EngineConfig.request_timeout_s``);
it is checked at the start of every step and an expired request finishes with reason "timeout". A failure
inside the forward pass finishes that step's requests with reason "error" (and is logged) rather than
taking the engine down.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
import uuid
from dataclasses import dataclass, field

from engine.config import EngineConfig, resolve_dtype
from engine.detokenizer import IncrementalDetokenizer, StopStringMatcher
from engine.model_runner import ModelRunner, TokenLogprob
from engine.ops import OpTable
from engine.sampling_params import SamplingParams
from engine.sequence import Sequence

log = logging.getLogger(__name__)

__all__ = ["LLMEngine", "RequestOutput", "TokenLogprob", "check_request"]


@dataclass
class RequestOutput:
    request_id: str
    new_text: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int = 0   # prompt tokens served by the prefix cache (additive field)
    error: str | None = None     # the failure, when finish_reason == "error" (additive field)


@dataclass
class _Request:
    seq: Sequence
    seed: int
    deadline: float | None
    detokenizer: IncrementalDetokenizer
    stops: StopStringMatcher
    num_reported_tokens: int = 0
    logprobs: list = field(default_factory=list)


def check_request(engine, prompt: str | list[int], params: SamplingParams | None,
                  timeout_s: float | None) -> tuple[list[int], SamplingParams, float | None]:
    """A request's token ids, its parameters (max_tokens cut to the room the prompt leaves) and its timeout,
    or ValueError naming what is wrong. ``engine`` gives the tokenizer, the model config, the length
    limit and the default timeout: an :class:`LLMEngine`, or the server's front of one in another process."""
    params = params if params is not None else SamplingParams()
    vocab_size = engine.model_config.vocab_size
    params.validate(vocab_size)
    if params.n != 1:
        raise ValueError(f"n={params.n}: one engine request yields one completion; add n requests "
                         "(LLM.generate does this for you)")
    if isinstance(prompt, str):
        token_ids = engine.tokenizer.encode(prompt)
    else:
        token_ids = [int(t) for t in prompt]
        bad = [t for t in token_ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt token ids must be in [0, {vocab_size}); got {bad[:5]}")
    if not token_ids:
        raise ValueError("the prompt is empty; give at least one token")
    if len(token_ids) >= engine.max_model_len:
        raise ValueError(f"the prompt has {len(token_ids)} tokens; this engine holds at most "
                         f"{engine.max_model_len} per sequence (prompt + output), so shorten it")
    room = engine.max_model_len - len(token_ids)
    if params.max_tokens > room:
        params = dataclasses.replace(params, max_tokens=room)
    timeout_s = timeout_s if timeout_s is not None else engine.config.request_timeout_s
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    return token_ids, params, timeout_s


class LLMEngine:
    def __init__(self, config: EngineConfig):
        from engine.kv.manager import KVCacheManager
        from engine.loader import load_model_source
        from engine.scheduler import Scheduler, SchedulerConfig

        self.config = cfg = config.resolved()
        source = load_model_source(cfg.model, revision=cfg.revision, offline=cfg.offline)
        self.source = source
        self.model_config = mc = source.config
        self.tokenizer = source.tokenizer
        self.generation_defaults = dict(source.generation_defaults or {})
        self.dtype = resolve_dtype(cfg.dtype, mc.dtype, cfg.device)
        limits = [mc.max_position_embeddings] + ([cfg.max_model_len] if cfg.max_model_len else [])
        window = getattr(mc, "sliding_window", None)
        if window and window < min(limits):
            # Attention here is over the whole context, which equals sliding-window attention only up to
            # the window: cap sequences there rather than return subtly different text beyond it.
            log.warning("the model attends within a %d-token sliding window; sequences are capped at %d tokens",
                        window, window)
            limits.append(window)
        self.max_model_len = min(limits)
        self.ops = OpTable(cfg.backend, cfg.device, cfg.op_overrides)
        self.runner = ModelRunner(cfg, mc, source.iter_weights(cfg.device, self.dtype), self.ops, self.dtype,
                                  self.max_model_len)
        kv = KVCacheManager(self.runner.num_blocks, cfg.block_size, cfg.enable_prefix_cache)
        eos = list(dict.fromkeys([*mc.eos_token_ids, *self.tokenizer.eos_token_ids]))
        self.eos_token_ids = eos
        self.scheduler = Scheduler(
            SchedulerConfig(max_num_seqs=cfg.max_num_seqs, max_num_batched_tokens=cfg.max_num_batched_tokens,
                            block_size=cfg.block_size, enable_chunked_prefill=cfg.enable_chunked_prefill,
                            enable_prefix_cache=cfg.enable_prefix_cache, max_model_len=self.max_model_len,
                            num_lookahead_slots=1 if self.runner.graphs is not None else 0),
            kv, eos_token_ids=eos)
        self._requests: dict[str, _Request] = {}
        self._pending: list[RequestOutput] = []
        self._seed_rng = random.Random(cfg.seed)
        self.num_steps = 0
        # (sequences, tokens, decode sequences) of the last step that ran the model: for benchmarks.
        self.last_step_shape: tuple[int, int, int] = (0, 0, 0)

    # --- requests --------------------------------------------------------------------------------

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, timeout_s: float | None = None) -> str:
        """Queue a request; returns its id. Raises ValueError (naming the problem) for a bad request."""
        self._check_open()
        token_ids, params, timeout_s = check_request(self, prompt, params, timeout_s)
        request_id = request_id or uuid.uuid4().hex
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        seq = Sequence(request_id, token_ids, params)
        seed = params.seed if params.seed is not None else self._seed_rng.getrandbits(63)
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        self.scheduler.add(seq)
        self._requests[request_id] = _Request(seq, seed, deadline, IncrementalDetokenizer(self.tokenizer, token_ids),
                                              StopStringMatcher(params.stop))
        return request_id

    def abort(self, request_id: str) -> bool:
        """Finish a request now (its blocks are freed at once); its final output comes with the next step."""
        return self._finish_early(request_id, "abort")

    def has_unfinished(self) -> bool:
        return bool(self._requests) or bool(self._pending)

    def close(self) -> None:
        """Give the GPU memory back now (weights, KV cache, CUDA graphs); the engine takes no more work.
        Unfinished requests are dropped. Calling it again does nothing."""
        if self.runner is not None:
            self.runner.release()
            self.runner = None
            self._requests.clear()
            self._pending.clear()

    def _check_open(self) -> None:
        if self.runner is None:
            raise RuntimeError("this engine was closed (LLMEngine.close); create a new one")

    # --- the loop --------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        self._check_open()
        self._expire_deadlines()
        outputs, self._pending = self._pending, []
        batch = self.scheduler.schedule()
        if batch.is_empty:
            return outputs
        self.num_steps += 1
        self.last_step_shape = (len(batch.seqs), batch.num_batched_tokens, batch.num_decodes)
        seeds = [self._requests[s.request_id].seed for s in batch.seqs]
        try:
            result = self.runner.execute(batch.seqs, batch.num_new_tokens, seeds)
        except (RuntimeError, ValueError, TypeError) as err:
            log.exception("forward pass failed; finishing the step's %d requests with 'error'", len(batch.seqs))
            for seq in batch.seqs:
                self.scheduler.finish(seq, "error")
                outputs.append(self._report(self._requests.pop(seq.request_id), error=f"{type(err).__name__}: {err}"))
            return outputs
        self.scheduler.postprocess(batch, result.sampled, result.logprobs)
        for seq, token in zip(batch.seqs, result.sampled, strict=True):
            if token is not None:
                outputs.append(self._report(self._requests[seq.request_id]))
        for out in outputs:
            if out.finished:
                self._requests.pop(out.request_id, None)
        return outputs

    def _report(self, req: _Request, error: str | None = None) -> RequestOutput:
        """The request's new tokens and text since its last report, with stop strings applied."""
        seq = req.seq
        new_ids = seq.output_token_ids[req.num_reported_tokens:]
        new_logprobs = seq.output_logprobs[req.num_reported_tokens:] if seq.params.logprobs is not None else None
        req.num_reported_tokens = seq.num_output_tokens
        text = ""
        for token_id in new_ids:
            piece, stopped = req.stops.push(req.detokenizer.push(token_id))
            text += piece
            if stopped:
                if not seq.is_finished:
                    self.scheduler.finish(seq, "stop")
                seq.finish_reason = "stop"
                break
        if seq.is_finished and req.stops.stopped is None:
            piece, _ = req.stops.push(_undecoded_tail(req.detokenizer))
            text += piece + req.stops.flush()
        return RequestOutput(seq.request_id, text, new_ids, seq.is_finished, seq.finish_reason, new_logprobs,
                             seq.num_prompt_tokens, seq.num_output_tokens, seq.num_cached_tokens, error)

    def _finish_early(self, request_id: str, reason: str) -> bool:
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        self.scheduler.finish(req.seq, reason)
        self._pending.append(self._report(req))
        return True

    def _expire_deadlines(self) -> None:
        now = time.monotonic()
        for request_id in [r for r, q in self._requests.items() if q.deadline is not None and q.deadline <= now]:
            self._finish_early(request_id, "timeout")

    # --- introspection ---------------------------------------------------------------------------

    def stats(self) -> dict:
        s = dict(self.scheduler.stats())
        s.update(num_requests=len(self._requests), num_steps=self.num_steps,
                 kv_block_size=self.config.block_size, backend=self.config.backend,
                 device=str(self.config.device), dtype=str(self.dtype).removeprefix("torch."),
                 ops=self.ops.describe())
        return s

    def get_sequence(self, request_id: str) -> Sequence | None:
        req = self._requests.get(request_id)
        return req.seq if req is not None else None


def _undecoded_tail(detokenizer: IncrementalDetokenizer) -> str:
    """Text of the tokens the detokenizer still holds back (an incomplete character, shown as U+FFFD), so
    that a finished request's text is the decode of all its tokens."""
    decode, ids = detokenizer.tokenizer.decode, detokenizer.ids
    skip = detokenizer.skip_special_tokens
    before = decode(ids[detokenizer.prefix_offset:detokenizer.read_offset], skip_special_tokens=skip)
    after = decode(ids[detokenizer.prefix_offset:], skip_special_tokens=skip)
    return after[len(before):] if len(after) > len(before) else ""
