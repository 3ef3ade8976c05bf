"""Programmatic dependent launch (kernels/pdl.py): when it is used, and that it changes no result.

A kernel launched with PDL starts before the previous one has finished; each decode kernel reads its
activations only after ``wait``. A kernel that broke that rule would read a stale activation in a chain
of launches replayed from a CUDA graph, so the GPU tests run such chains (and an engine's decode graphs)
with PDL on and compare them with the same kernels launched without it: bit for bit, since the arithmetic
is the same, and against an fp32 torch chain, so that two equally wrong runs cannot pass.
"""

from __future__ import annotations

import pytest
import torch

from kernels import pdl


def test_off_where_the_card_cannot_do_it():
    assert pdl.launch_options(torch.device("cpu")) == {"PDL": 0}
    assert not pdl.enabled(torch.device("cpu"))


def test_the_switch_turns_it_off(monkeypatch):
    monkeypatch.setattr(pdl, "ENABLED", False)
    assert pdl.launch_options(torch.device("cuda", 0)) == {"PDL": 0}


def test_static_marks_follow_the_tensor_not_its_copies():
    import gc

    w = torch.randn(64, 32)
    assert not pdl.is_static(w)
    pdl.mark_static(w)
    assert pdl.is_static(w) and pdl.is_static(w[:16])  # a view from its start: the same memory
    assert not pdl.is_static(w.clone()) and not pdl.is_static(w.t().contiguous())  # copies may be fresh writes
    assert not pdl.is_static(w[1:])
    gc.collect()  # earlier tests' dead weights leave first, so the count below sees only w's mark go
    marked = len(pdl._STATIC)
    del w
    gc.collect()
    assert len(pdl._STATIC) == marked - 1  # the mark dies with the tensor: a later buffer at that address is not static


def test_the_engine_marks_its_dense_weights_static(tmp_path):
    from tests.engine_helpers import make_engine
    from tests.model_factory import make_hf_model

    engine = make_engine(make_hf_model(tmp_path, arch="qwen2", tie_word_embeddings=True), "torch")
    model = engine.runner.model
    linears = [model.lm_head] + [lin for layer in model.layers
                                 for lin in (layer.attn.qkv, layer.attn.o_proj, layer.mlp.gate_up, layer.mlp.down)]
    assert linears and all(pdl.is_static(w) for lin in linears for w in lin.weights)


H, INTER, VOCAB, LAYERS = 1024, 2816, 4096, 6


def _weights(device, dtype):
    gen = torch.Generator(device=device).manual_seed(0)
    rand = lambda *s, scale: (torch.randn(*s, generator=gen, device=device) * scale).to(dtype)
    return {
        "norm": [1 + rand(H, scale=0.1) for _ in range(LAYERS + 1)],
        "gate_up": [rand(2 * INTER, H, scale=H ** -0.5) for _ in range(LAYERS)],
        "down": [rand(H, INTER, scale=INTER ** -0.5) for _ in range(LAYERS)],
        "head": rand(VOCAB, H, scale=H ** -0.5),
        "x": rand(1, H, scale=1.0),
    }


def _chain(w, x, ops):
    """A decode-shaped chain: norm+gate_up GEMV, SwiGLU, down GEMV per layer, then norm, head, argmax."""
    residual = torch.zeros_like(x) if ops is None else None
    h = x
    for i in range(LAYERS):
        if ops is None:  # fp32 torch
            h = h + residual
            a = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * w["norm"][i]
            gu = a @ w["gate_up"][i].T
            s = torch.nn.functional.silu(gu[:, :INTER]) * gu[:, INTER:]
            residual, h = h, s @ w["down"][i].T
        else:
            gu, residual = ops.rmsnorm_linear(h, w["norm"][i], w["gate_up"][i], residual=residual)
            h = ops.linear(ops.silu_and_mul(gu), w["down"][i])
    if ops is None:
        h = h + residual
        a = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * w["norm"][-1]
        logits = a @ w["head"].T
        return logits, logits.argmax(-1)
    a = ops.rmsnorm(h, w["norm"][-1], 1e-6, residual)[0]
    logits = ops.linear(a, w["head"])
    return logits, ops.greedy(logits)


class _Kernels:
    def __init__(self):
        from kernels.greedy import greedy
        from kernels.linear import linear
        from kernels.rmsnorm import rmsnorm
        from kernels.rmsnorm_linear import rmsnorm_linear
        from kernels.silu_and_mul import silu_and_mul

        self.linear, self.rmsnorm, self.greedy = linear, rmsnorm, greedy
        self.silu_and_mul = silu_and_mul
        self.rmsnorm_linear = lambda x, g, w, residual: rmsnorm_linear(x, g, w, residual=residual)


@pytest.mark.gpu
@pytest.mark.parametrize("static", [False, True], ids=["weights-unmarked", "weights-static"])
def test_a_graph_of_pdl_launches_matches_the_same_launches_without_it(monkeypatch, static):
    ops, w = _Kernels(), _weights("cuda", torch.bfloat16)
    if static:  # written and finished before they are declared static, as the engine's weights are
        torch.cuda.synchronize()
        pdl.mark_static(*w["gate_up"], *w["down"], w["head"])
    monkeypatch.setattr(pdl, "ENABLED", False)
    want_logits, want_ids = _chain(w, w["x"], ops)  # eager, no PDL
    monkeypatch.setattr(pdl, "ENABLED", True)
    assert pdl.enabled(torch.device("cuda")), "this card or Triton has no programmatic dependent launch"
    x = w["x"].clone()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        _chain(w, x, ops)  # eager on the capturing stream first (split-K counters, autotuning)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        logits, ids = _chain(w, x, ops)
    for _ in range(3):
        logits.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(logits, want_logits)
        assert torch.equal(ids, want_ids)
    w32 = {k: [t.float() for t in v] if isinstance(v, list) else v.float() for k, v in w.items()}
    ref, _ = _chain(w32, w32["x"], None)
    torch.testing.assert_close(logits.float(), ref, rtol=5e-2, atol=5e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("after_wait", [False, True], ids=["signal-at-start", "signal-after-wait"])
def test_a_chain_of_split_k_decode_launches_reads_each_input_after_it_is_written(monkeypatch, after_wait):
    """Each launch's x is the launch before's y, in a CUDA graph replayed on new inputs: a launch that read x
    before its wait would read the previous replay's values. Both signal placements of the split-K decode's
    configs (SIGNAL_AFTER_WAIT), bit for bit against the same launches without PDL."""
    from kernels.linear_decode import linear_decode_2d

    config = dict(BLOCK_N=16, BLOCK_K=128, num_warps=2, num_stages=5, SIGNAL_AFTER_WAIT=after_wait)
    gen = torch.Generator(device="cuda").manual_seed(1)
    ws = [(torch.randn(896, 896, generator=gen, device="cuda") * 896 ** -0.5).to(torch.bfloat16) for _ in range(8)]
    inputs = [torch.randn(16, 896, generator=gen, device="cuda").to(torch.bfloat16) for _ in range(3)]

    def chain(x):
        for w in ws:
            x = linear_decode_2d(x, w, None, config=config)
        return x

    monkeypatch.setattr(pdl, "ENABLED", False)
    wants = [chain(x) for x in inputs]
    monkeypatch.setattr(pdl, "ENABLED", True)
    assert pdl.enabled(torch.device("cuda")), "this card or Triton has no programmatic dependent launch"
    x = inputs[0].clone()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        chain(x)  # eager on the capturing stream first (split-K counters)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        y = chain(x)
    for replay in (0, 1, 2, 1, 0):
        x.copy_(inputs[replay])
        y.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y, wants[replay]), f"replay on input {replay} differs from the launches without PDL"
    assert not torch.equal(wants[0], wants[1])


@pytest.mark.gpu
@pytest.mark.engine
def test_engine_decode_graphs_give_the_same_tokens_with_and_without_pdl(tmp_path, monkeypatch):
    from engine.sampling_params import SamplingParams
    from tests.engine_helpers import make_engine, run_to_completion
    from tests.model_factory import make_hf_model

    model_dir = make_hf_model(tmp_path, arch="qwen2", tie_word_embeddings=True)
    prompts = [([5, 17, 2, 99, 31, 64, 8, 120, 7, 42, 11, 3, 250, 19, 77, 1, 6], 12), ([9, 4, 33], 20)]

    def tokens():
        engine = make_engine(model_dir, "triton")
        assert engine.runner.graphs is not None, "decode graphs were not captured"
        reqs = [(p, SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)) for p, n in prompts]
        done = run_to_completion(engine, reqs)
        return [r["tokens"] for r in done.values()]  # in the order the requests were added

    monkeypatch.setattr(pdl, "ENABLED", False)
    without = tokens()
    monkeypatch.setattr(pdl, "ENABLED", True)
    assert tokens() == without


def test_the_environment_turns_it_off(monkeypatch):
    monkeypatch.setenv("TRITONFORGE_PDL", "0")
    assert pdl.launch_options(torch.device("cuda", 0)) == {"PDL": 0}


def test_the_signal_mode_is_data_read_at_launch(monkeypatch):
    monkeypatch.setattr(pdl, "SIGNAL", "start")
    assert pdl.mode() == pdl.MODES["start"]
    monkeypatch.setenv("TRITONFORGE_PDL", "after_wait")  # the environment names a mode: it wins
    assert pdl.mode() == pdl.MODES["after_wait"]
    monkeypatch.delenv("TRITONFORGE_PDL")
    monkeypatch.setattr(pdl, "SIGNAL", "sometimes")
    with pytest.raises(ValueError, match="expected one of"):
        pdl.mode()


def test_a_kernel_may_signal_elsewhere_than_the_rest(monkeypatch):
    """KERNEL_SIGNAL names the launches that signal elsewhere than SIGNAL; the environment still wins."""
    monkeypatch.delenv("TRITONFORGE_PDL", raising=False)
    monkeypatch.setattr(pdl, "SIGNAL", "start")
    monkeypatch.setattr(pdl, "KERNEL_SIGNAL", {"linear_gemv": "after_wait"})
    assert pdl.mode("linear_gemv") == pdl.MODES["after_wait"]
    assert pdl.mode("linear_decode") == pdl.MODES["start"]
    assert pdl.mode() == pdl.MODES["start"]
    monkeypatch.setenv("TRITONFORGE_PDL", "start")
    assert pdl.mode("linear_gemv") == pdl.MODES["start"]
    monkeypatch.delenv("TRITONFORGE_PDL")
    monkeypatch.setattr(pdl, "KERNEL_SIGNAL", {"linear_gemv": "late"})
    with pytest.raises(ValueError, match=r"KERNEL_SIGNAL\['linear_gemv'\]='late': expected one of"):
        pdl.mode("linear_gemv")


def test_no_decode_kernel_touches_earlier_outputs_before_its_wait():
    """bench/aot_pdl.py: every PDL kernel compiled for sm_90 in each mode, its PTX read for stores, loads
    and the signal before ``griddepcontrol.wait``. In a subprocess: this process interprets."""
    from tests.aot_helpers import run_sm90

    run = run_sm90("bench.aot_pdl")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert run.stdout.count("\nok ") + run.stdout.startswith("ok ") >= 2 * 13, run.stdout
