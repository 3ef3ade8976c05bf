"""Shared helpers for the engine tests: backends to parametrize over, engines on small factory models,
and an independent greedy decoder built on Hugging Face transformers."""

from __future__ import annotations

import os

import pytest
import torch

# The torch references run the model on a CPU; the Triton kernels only on a GPU (a model forward in the
# Triton interpreter would take minutes), so the "triton" cases carry the gpu marker.
BACKENDS = [pytest.param("torch", id="torch"), pytest.param("triton", id="triton", marks=pytest.mark.gpu)]


def engine_device(backend: str) -> str:
    return "cuda" if backend == "triton" else "cpu"


def env_op_overrides() -> dict[str, str]:
    """``TRITONFORGE_OPS="rmsnorm=my_rmsnorm,rope=my_rope"``: the kernels every test engine swaps in, so that the
    parity and engine tests run a researcher's variant with no code change (see README, Adding a kernel)."""
    from engine.commands.generate import parse_op_overrides

    spec = os.environ.get("TRITONFORGE_OPS", "").strip()
    return parse_op_overrides([item for item in spec.split(",") if item.strip()]) if spec else {}


def make_engine(model_dir, backend: str = "torch", in_child: bool = False, **overrides):
    """An LLMEngine for tests; ``in_child``: the same engine in a child process (``EngineProcess``, as the
    serve command runs it), which the caller closes."""
    from engine.config import EngineConfig
    from engine.engine_process import EngineProcess
    from engine.llm_engine import LLMEngine

    # A fixed, small KV cache: several engines live at once in a test session, and the default (90% of
    # the free GPU memory) would leave nothing for the next one. At most 64 sequences: the tests batch
    # no more, and each graph-captured batch size costs its start-up a forward pass and a capture.
    kwargs = dict(backend=backend, device=engine_device(backend), dtype=torch.float32, enforce_eager=False,
                  num_kv_blocks=256, max_num_seqs=64, op_overrides=env_op_overrides())
    kwargs.update(overrides)
    config = EngineConfig(model=str(model_dir), **kwargs)
    return EngineProcess(config, log_level="warning") if in_child else LLMEngine(config)


def run_to_completion(engine, requests: list[tuple[object, object]]) -> dict[str, dict]:
    """Add (prompt, params) pairs, step until done; returns request id -> {tokens, text, reason, ...}."""
    ids = [engine.add_request(p, sp) for p, sp in requests]
    results = {i: {"tokens": [], "text": "", "reason": None, "logprobs": [], "cached": 0} for i in ids}
    while engine.has_unfinished():
        for out in engine.step():
            r = results[out.request_id]
            r["tokens"] += out.new_token_ids
            r["text"] += out.new_text
            r["logprobs"] += out.logprobs or []
            r["cached"] = out.num_cached_tokens
            if out.finished:
                r["reason"] = out.finish_reason
    if hasattr(engine.scheduler, "check_invariants"):  # an EngineProcess's scheduler lives in its child
        engine.scheduler.check_invariants()
    return {i: results[i] for i in ids}


@torch.no_grad()
def hf_greedy(hf_model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation by full recomputation with transformers (no cache): the independent reference."""
    ids = list(prompt_ids)
    device = next(hf_model.parameters()).device
    for _ in range(max_new_tokens):
        logits = hf_model(torch.tensor([ids], device=device)).logits[0, -1]
        ids.append(int(logits.argmax()))
    return ids[len(prompt_ids):]


@torch.no_grad()
def hf_next_logits(hf_model, prompts: list[list[int]]) -> torch.Tensor:
    device = next(hf_model.parameters()).device
    return torch.stack([hf_model(torch.tensor([p], device=device)).logits[0, -1].float() for p in prompts])


def prompt_batch(vocab_size: int, count: int, seed: int = 0, min_len: int = 3, max_len: int = 40) -> list[list[int]]:
    """Random token prompts of varied lengths (special tokens 0..3 avoided)."""
    gen = torch.Generator().manual_seed(seed)
    lens = torch.randint(min_len, max_len + 1, (count,), generator=gen).tolist()
    return [torch.randint(4, vocab_size, (n,), generator=gen).tolist() for n in lens]


@pytest.fixture(scope="module", autouse=True)
def single_threaded():
    """Tiny models on a shared CPU: one intra-op thread is ~100x faster than several contending ones.

    Autouse in every module that imports it; restores the previous setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class OpSpy:
    """Counts an engine's calls of the named ops (``spy.calls[name]``), passing each through."""

    def __init__(self, engine, names):
        self.calls = dict.fromkeys(names, 0)
        ops = engine.runner.ops
        for name in names:
            setattr(ops, name, self._wrap(name, ops.get(name)))

    def _wrap(self, name, fn):
        def call(*args, **kwargs):
            self.calls[name] += 1
            return fn(*args, **kwargs)
        return call


class _EagerReplay:
    """A captured decode graph's stand-in on a CPU: ``replay()`` runs the forward on the static buffers and
    writes the static outputs, as the graph would."""

    def __init__(self, graphs, bs: int):
        self.graphs, self.bs = graphs, bs

    def replay(self) -> None:
        logits, tokens = self.graphs._forward(self.bs)
        self.graphs.logits[self.bs].copy_(logits)
        self.graphs.greedy_tokens[self.bs].copy_(tokens)


def use_cpu_decode_graphs(engine, max_batch: int):
    """Give a CPU engine the real DecodeGraphs (static buffers, staging, running ahead), each captured graph
    replaced by an eager replay of the same forward, and the lookahead slot an engine with graphs keeps."""
    engine.runner.graphs = cpu_decode_graphs(engine.runner, max_batch)
    engine.scheduler.config.num_lookahead_slots = 1
    return engine.runner.graphs


def cpu_decode_graphs(runner, max_batch: int):
    """The runner's real DecodeGraphs on a CPU, with each captured graph replaced by an eager replay of the
    same forward (see :func:`use_cpu_decode_graphs`)."""
    from unittest import mock

    from engine.decode_graphs import DecodeGraphs

    with torch.inference_mode(), mock.patch.object(DecodeGraphs, "_capture_all", lambda self: None):
        graphs = DecodeGraphs(runner, max_batch)
        for bs in graphs.sizes:
            logits, tokens = graphs._forward(bs)
            graphs.logits[bs], graphs.greedy_tokens[bs] = logits.clone(), tokens.clone()
            graphs.graphs[bs] = _EagerReplay(graphs, bs)
    return graphs
