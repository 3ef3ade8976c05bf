"""The engine's fused ops (engine/ops.py FUSIONS): used by default, and given up for their parts when a part
is swapped for another implementation, with the same tokens either way."""

from __future__ import annotations

import pytest

from engine.sampling_params import SamplingParams
from tests.engine_helpers import BACKENDS, OpSpy, make_engine, single_threaded  # noqa: F401  (autouse fixture)
from tests.model_factory import make_hf_model

pytestmark = pytest.mark.engine

FUSED = ("rope_kv_write", "silu_mul_linear")
PARTS = ("rope", "kv_cache_write", "silu_and_mul", "linear")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("fusions"), arch="llama")


def _generate(model_dir, backend, overrides):
    engine = make_engine(model_dir, backend, op_overrides=overrides)
    try:
        spy = OpSpy(engine, FUSED + PARTS)
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
def test_fusions_by_default_and_parts_when_one_is_swapped(model_dir, backend):
    fused_ids, fused = _generate(model_dir, backend, {})
    assert fused["rope_kv_write"] > 0 and fused["silu_mul_linear"] > 0
    assert fused["rope"] == fused["kv_cache_write"] == fused["silu_and_mul"] == 0
    # Naming a part (even as the backend's own implementation) turns its fusion off.
    parts_ids, parts = _generate(model_dir, backend, {"rope": backend, "silu_and_mul": backend})
    assert parts["rope_kv_write"] == parts["silu_mul_linear"] == 0
    assert parts["rope"] == parts["kv_cache_write"] == fused["rope_kv_write"]
    assert parts["silu_and_mul"] == fused["silu_mul_linear"]
    assert parts_ids == fused_ids and all(len(ids) == 6 for ids in fused_ids)
