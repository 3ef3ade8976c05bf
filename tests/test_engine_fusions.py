"""The engine's fused ops (engine/ops.py FUSIONS), each given up for its parts when a part is swapped for another
implementation: by default each layer's input norm runs with the q/k/v projection, RoPE and the KV write
(or, with that off, RoPE with the KV write), and its post-attention norm with the gate/up projection and the
gate; the SwiGLU gate with the down projection only when named. The same tokens every way."""

from __future__ import annotations

import pytest

from engine.sampling_params import SamplingParams
from tests.engine_helpers import BACKENDS, OpSpy, make_engine, single_threaded  # noqa: F401  (autouse fixture)
from tests.model_factory import make_hf_model

pytestmark = pytest.mark.engine

FUSED = ("rope_kv_write", "silu_mul_linear", "rmsnorm_linear", "rmsnorm_swiglu", "rmsnorm_qkv_rope")
PARTS = ("rope", "kv_cache_write", "silu_and_mul", "linear", "rmsnorm")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("fusions"), arch="llama")


def _generate(model_dir, backend, overrides, names=FUSED + PARTS, **config):
    """Greedy tokens of two requests, and how often each op in ``names`` was called."""
    engine = make_engine(model_dir, backend, op_overrides=overrides, **config)
    try:
        spy = OpSpy(engine, names)
        params = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
        ids = [engine.add_request(p, params) for p in ([5, 9, 2, 7, 11] * 4, [3, 1, 4, 1, 5, 9, 2, 6])]
        out = {i: [] for i in ids}
        while engine.has_unfinished():
            for o in engine.step():
                out[o.request_id] += o.new_token_ids
        return [out[i] for i in ids], spy.calls
    finally:
        engine.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_fusions_by_default_opt_in_and_parts_when_one_is_swapped(model_dir, backend):
    default_ids, default = _generate(model_dir, backend, {})
    layers_steps = default["rmsnorm_qkv_rope"]
    assert layers_steps > 0 and default["rmsnorm_swiglu"] == layers_steps
    assert default["rope_kv_write"] == default["rope"] == default["kv_cache_write"] == default["rmsnorm_linear"] == 0
    assert default["silu_mul_linear"] == default["silu_and_mul"] == 0
    # Named, the opt-in fusion applies the gate in the down projection, after the norm with gate/up.
    opt_ids, opt = _generate(model_dir, backend, {"silu_mul_linear": backend})
    assert opt["silu_mul_linear"] == layers_steps and opt["silu_and_mul"] == opt["rmsnorm_swiglu"] == 0
    assert opt["rmsnorm_linear"] == layers_steps  # the gate/up projection, with its norm
    # Naming a part (even as the backend's own implementation) turns the fusions holding it off.
    kv_ids, kv = _generate(model_dir, backend, {"kv_cache_write": backend})
    assert kv["rmsnorm_qkv_rope"] == kv["rope_kv_write"] == 0
    assert kv["rmsnorm_linear"] == kv["rope"] == kv["kv_cache_write"] == kv["rmsnorm_swiglu"] == layers_steps
    parts_ids, parts = _generate(model_dir, backend, {"rmsnorm_linear": backend, "silu_and_mul": backend})
    assert parts["rmsnorm_qkv_rope"] == parts["rmsnorm_swiglu"] == 0
    assert parts["rope_kv_write"] == parts["silu_and_mul"] == layers_steps
    assert parts["rmsnorm_linear"] == 2 * layers_steps
    assert default_ids == opt_ids == kv_ids == parts_ids and all(len(ids) == 6 for ids in default_ids)


@pytest.mark.parametrize("backend", BACKENDS)
def test_norms_fused_into_the_next_projection_unless_a_part_is_swapped(model_dir, backend):
    fused_ids, fused = _generate(model_dir, backend, {})
    parts_ids, parts = _generate(model_dir, backend, {"rmsnorm": backend})
    assert parts["rmsnorm_linear"] == parts["rmsnorm_swiglu"] == parts["rmsnorm_qkv_rope"] == 0
    # Both norms of every layer run with their projection; only the final norm of each step stays alone.
    assert fused["rmsnorm_qkv_rope"] == fused["rmsnorm_swiglu"] > 0
    assert fused["rmsnorm_qkv_rope"] + fused["rmsnorm_swiglu"] + fused["rmsnorm"] == parts["rmsnorm"]
    layers = fused["rmsnorm_qkv_rope"] // max(fused["rmsnorm"], 1)
    assert fused["rmsnorm_qkv_rope"] == layers * fused["rmsnorm"] and layers >= 1
    assert fused["linear"] == parts["linear"] - fused["rmsnorm_qkv_rope"] - fused["rmsnorm_swiglu"]
    assert parts["silu_and_mul"] == parts["rope_kv_write"] == fused["rmsnorm_swiglu"]
    assert fused_ids == parts_ids


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_attention_with_its_output_projection_when_named(model_dir, backend):
    """Opt-in: named, a decode-only step calls paged_decode_attention_linear (the o_proj GEMV combines the split
    partials) and steps with a prefill call the parts; by default every step calls the parts. Eager, so that
    every decode step calls the ops (a graph replay calls none). The same tokens both ways."""
    spy_ops = ("paged_decode_attention_linear", "paged_decode_attention", "prefill_attention")
    fused_ids, fused = _generate(model_dir, backend, {"paged_decode_attention_linear": backend}, spy_ops,
                                 enforce_eager=True)
    parts_ids, parts = _generate(model_dir, backend, {}, spy_ops, enforce_eager=True)
    assert fused["paged_decode_attention_linear"] > 0 and parts["paged_decode_attention_linear"] == 0
    # Every decode call went one way or the other; mixed steps (a prefill beside decodes) keep the parts.
    assert fused["paged_decode_attention_linear"] + fused["paged_decode_attention"] == parts["paged_decode_attention"]
    assert fused["prefill_attention"] == parts["prefill_attention"] > 0
    assert fused_ids == parts_ids and all(len(ids) == 6 for ids in fused_ids)
