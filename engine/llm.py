"""The offline API: ``LLM(model).generate(prompts, params)`` runs the engine loop until every prompt is done.

    llm = LLM("path/to/model", max_num_seqs=64)
    outs = llm.generate(["Hello", "The capital of France is"], SamplingParams(temperature=0, max_tokens=32))
    print(outs[0].text)

``params`` is one SamplingParams for all prompts or a list with one per prompt. A request with ``n > 1``
becomes n engine requests (each with its own seed when the request has one: seed, seed+1, ...), and its
prompt's entry in the result is a list of n completions.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine, TokenLogprob
from engine.sampling_params import SamplingParams


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[TokenLogprob] | None
    prompt_token_ids: list[int]


class LLM:
    def __init__(self, model: str, **engine_kwargs):
        self.engine = LLMEngine(EngineConfig(model=model, **engine_kwargs))
        self.tokenizer = self.engine.tokenizer

    def close(self) -> None:
        """Give the GPU memory back now (``LLMEngine.close``)."""
        self.engine.close()

    def generate(self, prompts: str | list[str] | list[list[int]],
                 params: SamplingParams | list[SamplingParams] | None = None,
                 progress: bool = False) -> list:
        """One CompletionOutput per prompt (a list of n of them where ``params.n > 1``), in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if isinstance(params, list):
            if len(params) != len(prompts):
                raise ValueError(f"got {len(params)} SamplingParams for {len(prompts)} prompts; give one or one each")
            per_prompt = params
        else:
            per_prompt = [params or SamplingParams()] * len(prompts)
        engine = self.engine
        ids: list[list[str]] = []
        for prompt, p in zip(prompts, per_prompt, strict=True):
            p.validate(engine.model_config.vocab_size)
            copies = [p] if p.n == 1 else [dataclasses.replace(p, n=1, seed=None if p.seed is None else p.seed + i)
                                           for i in range(p.n)]
            ids.append([engine.add_request(prompt, c) for c in copies])
        seqs = {r: engine.get_sequence(r) for group in ids for r in group}
        texts: dict[str, list[str]] = {r: [] for r in seqs}
        results: dict[str, CompletionOutput] = {}
        total, start = len(texts), time.monotonic()
        while engine.has_unfinished():
            for out in engine.step():
                texts[out.request_id].append(out.new_text)
                if out.finished:
                    seq = seqs[out.request_id]
                    results[out.request_id] = CompletionOutput(
                        "".join(texts[out.request_id]), list(seq.output_token_ids), out.finish_reason,
                        list(seq.output_logprobs) if seq.params.logprobs is not None else None,
                        list(seq.prompt_token_ids))
            if progress:
                _progress(len(results), total, start)
        if progress:
            sys.stderr.write("\n")
        return [results[g[0]] if len(g) == 1 else [results[r] for r in g] for g in ids]


def _progress(done: int, total: int, start: float) -> None:
    elapsed = time.monotonic() - start
    sys.stderr.write(f"\r{done}/{total} requests done, {elapsed:.1f}s")
    sys.stderr.flush()
