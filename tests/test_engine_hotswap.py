"""Kernel hot-swap: a variant registered under a new name is picked up by configuration alone.

A counting wrapper around the backend's own rmsnorm is registered as ``counting_rmsnorm`` and selected
with ``EngineConfig.op_overrides`` (and with ``--op`` on the command line); the count shows the engine
really called it, once per norm per forward, and the output is unchanged.
"""

from __future__ import annotations

import pytest

from engine.sampling_params import SamplingParams
from kernels import registry
from tests.engine_helpers import (
    BACKENDS,
    make_engine,
    run_to_completion,
    single_threaded,  # noqa: F401  (autouse fixture: one CPU thread)
)
from tests.model_factory import make_hf_model

pytestmark = pytest.mark.engine

CALLS: dict[str, int] = {}


def _register_counting(backend: str) -> str:
    name = f"counting_rmsnorm_{backend}"
    inner = registry.get("rmsnorm").impl(backend)

    def counting(*args, **kwargs):
        CALLS[name] = CALLS.get(name, 0) + 1
        return inner(*args, **kwargs)

    registry.register_impl("rmsnorm", name, counting, backend=backend)
    return name


@pytest.fixture(autouse=True)
def _registry_restored():
    """The variants these tests register leave the registry with the test (other tests list its impls)."""
    ops = [registry.get(name) for name in ("rmsnorm", "silu_and_mul", "paged_decode_attention")]
    saved = [(dict(op.impls), dict(op.impl_backends)) for op in ops]
    yield
    for op, (impls, backends) in zip(ops, saved, strict=True):
        op.impls.clear()
        op.impls.update(impls)
        op.impl_backends.clear()
        op.impl_backends.update(backends)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_hf_model(tmp_path_factory.mktemp("hotswap"), arch="llama")


@pytest.mark.parametrize("backend", BACKENDS)
def test_op_override_is_called_and_changes_nothing(model_dir, backend):
    name = _register_counting(backend)
    params = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)
    plain = make_engine(model_dir, backend)
    expected = next(iter(run_to_completion(plain, [([5, 6, 7], params)]).values()))["tokens"]
    swapped = make_engine(model_dir, backend, op_overrides={"rmsnorm": name}, enforce_eager=True)
    assert swapped.stats()["ops"]["rmsnorm"] == name
    CALLS[name] = 0
    got = next(iter(run_to_completion(swapped, [([5, 6, 7], params)]).values()))["tokens"]
    assert got == expected
    # 2 layers x 2 norms + the final norm, per forward; 4 forwards (1 prefill + 3 decodes).
    assert CALLS[name] == 4 * (2 * 2 + 1)


def test_unknown_override_is_refused(model_dir):
    with pytest.raises(ValueError, match="no implementation 'nope'"):
        make_engine(model_dir, "torch", op_overrides={"rmsnorm": "nope"})
    with pytest.raises(ValueError, match="uses no op 'softmax'"):
        make_engine(model_dir, "torch", op_overrides={"softmax": "torch"})


def test_cli_op_flag_selects_the_variant(model_dir, capsys):
    from engine.cli import main

    name = _register_counting("torch")
    CALLS[name] = 0
    code = main(["generate", "--model", str(model_dir), "--backend", "torch", "--op", f"rmsnorm={name}",
                 "--max-tokens", "3", "--temperature", "0", "--ignore-eos", "hello there"])
    assert code == 0
    assert CALLS[name] > 0
    captured = capsys.readouterr()
    assert "3 tokens" in captured.err


def test_a_failing_kernel_finishes_its_requests_with_error(model_dir):
    """A kernel that raises (here: once) ends that step's requests with reason "error"; the engine lives on."""
    inner = registry.get("silu_and_mul").impl("torch")
    failures = {"left": 1}

    def flaky(*args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("injected kernel failure")
        return inner(*args, **kwargs)

    registry.register_impl("silu_and_mul", "flaky_silu_and_mul", flaky, backend="torch")
    engine = make_engine(model_dir, "torch", op_overrides={"silu_and_mul": "flaky_silu_and_mul"})
    params = SamplingParams(temperature=0, max_tokens=3, ignore_eos=True)
    first = engine.add_request([5, 6, 7], params)
    (out,) = engine.step()
    assert out.request_id == first and out.finished and out.finish_reason == "error"
    assert "injected kernel failure" in out.error
    assert engine.stats()["kv_free_blocks"] == engine.stats()["kv_total_blocks"]
    (result,) = run_to_completion(engine, [([5, 6, 7], params)]).values()
    assert result["reason"] == "length" and len(result["tokens"]) == 3


def test_a_backend_that_cannot_run_here_fails_at_start(monkeypatch):
    from engine.ops import OpTable
    from kernels.device import BackendUnavailable

    # Outside the interpreter a CPU tensor cannot run Triton kernels: the op table says so up front.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        OpTable("triton", "cpu")


def test_environment_swaps_the_kernel_in_every_test_engine(model_dir, monkeypatch):
    """TRITONFORGE_OPS is how the parity and engine tests run a variant without editing them."""
    name = _register_counting("torch")
    monkeypatch.setenv("TRITONFORGE_OPS", f" rmsnorm={name} ")
    engine = make_engine(model_dir, "torch")
    assert engine.stats()["ops"]["rmsnorm"] == name
    CALLS[name] = 0
    run_to_completion(engine, [([5, 6, 7], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))])
    assert CALLS[name] > 0
    monkeypatch.setenv("TRITONFORGE_OPS", "rmsnorm")
    with pytest.raises(ValueError, match="NAME=IMPL"):
        make_engine(model_dir, "torch")


def test_engine_bench_runs_with_the_variant(tmp_path):
    import json

    from bench import engine_bench

    name = _register_counting("torch")
    CALLS[name] = 0
    code = engine_bench.main(["--smoke", "--skip-hf", "--models", "qwen2.5-0.5b", "--op", f"rmsnorm={name}",
                              "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "engine_bench.json").read_text())
    assert report["op_overrides"] == {"rmsnorm": name}
    assert CALLS[name] > 0


def test_decode_attention_is_promised_one_fresh_token(model_dir):
    """The engine's decode step writes each decoding sequence's one new token just before its attention, and
    says so (``fresh_tokens=1``: the kernel may read the rest of the cache before its PDL wait). A variant
    that records its calls sees the promise on every decode call, with contexts that grow by one a step."""
    inner = registry.get("paged_decode_attention").impl("torch")
    seen = []

    def recording(*args, **kwargs):
        seen.append((kwargs.get("fresh_tokens"), args[4].tolist()))
        return inner(*args, **kwargs)

    registry.register_impl("paged_decode_attention", "recording_decode", recording, backend="torch")
    engine = make_engine(model_dir, "torch", op_overrides={"paged_decode_attention": "recording_decode"})
    params = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    run_to_completion(engine, [([5, 6, 7], params)])
    assert seen and {fresh for fresh, _ in seen} == {1}
    contexts = [lens[0] for _, lens in seen]
    layers = len(seen) // 4  # 4 decode steps after the prefill, each calling every layer
    assert contexts == [n for n in (4, 5, 6, 7) for _ in range(layers)]
