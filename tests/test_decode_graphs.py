"""CUDA-graph capture of decode steps and the split-K arrival counters (GPU only).

The decode linears reduce their K splits inside one launch through int32 arrival counters that every
launch leaves at zero. A counters buffer made inside a capture is zeroed only when that graph first
replays, so a graph replayed before it counts from garbage (the engine then produced non-finite logits
at its first batch-1 decode). These tests pin the rule: captures find their counters made eagerly on the
capturing stream, the engine's graphs leave every buffer at zero, and the very first decode after start
(through the batch-1 graph) matches the torch backend.
"""

from __future__ import annotations

import pytest
import torch

from engine.sampling_params import SamplingParams
from tests.engine_helpers import make_engine, run_to_completion
from tests.model_factory import make_hf_model

pytestmark = [pytest.mark.gpu, pytest.mark.engine]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("graphs"), arch="qwen2", tie_word_embeddings=True)


def test_capture_refuses_to_create_counters(monkeypatch):
    from kernels import _split_k
    from kernels.linear_decode import linear_decode_2d

    monkeypatch.setattr(_split_k, "_COUNTERS", {})
    x = torch.randn(1, 1024, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(512, 1024, device="cuda", dtype=torch.bfloat16)
    stream = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(_split_k.CountersDuringCapture, match="run this launch once eagerly"), \
            torch.cuda.graph(graph, stream=stream):
        linear_decode_2d(x, w, None, k_chunk=256)
    # Made eagerly on that stream first, the same capture works and replays correctly.
    with torch.cuda.stream(stream):
        linear_decode_2d(x, w, None, k_chunk=256)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        y = linear_decode_2d(x, w, None, k_chunk=256)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(y.float(), x.float() @ w.float().T, rtol=2e-2, atol=2e-1)


def test_first_decode_after_start_runs_the_batch_1_graph_correctly(model_dir):
    from kernels import _split_k

    engine = make_engine(model_dir, "triton")  # float32: greedy tokens comparable exactly
    assert engine.runner.graphs is not None, "decode graphs were not captured"
    torch.cuda.synchronize()
    assert all(int(buf.count_nonzero()) == 0 for buf in _split_k._COUNTERS.values())
    prompt = [5, 17, 2, 99, 31, 64, 8, 120, 7, 42, 11, 3, 250, 19, 77, 1, 6]  # 17 tokens: a second block
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    graphs = engine.runner.graphs
    served, ahead = graphs.steps_served, graphs.steps_ahead
    got = next(iter(run_to_completion(engine, [(prompt, params)]).values()))
    # The 7 decode steps come from the batch-1 graph: replayed, or (most of them) run one step ahead.
    assert graphs.steps_served - served == 7, "the decode steps were not served by the decode graph"
    assert graphs.steps_ahead > ahead, "no decode step was run ahead"
    want = next(iter(run_to_completion(make_engine(model_dir, "torch"), [(prompt, params)]).values()))
    assert got["reason"] == "length", got
    assert got["tokens"] == want["tokens"]
    torch.cuda.synchronize()
    assert all(int(buf.count_nonzero()) == 0 for buf in _split_k._COUNTERS.values())
