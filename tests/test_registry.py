"""The registry's lookups (a variant added with register_impl is checked for its backend like a built-in) and
the op-module discovery of kernels.ops."""

from __future__ import annotations

import pkgutil

import pytest
import torch

import kernels
from kernels import ops, registry
from kernels.device import BackendUnavailable


@pytest.fixture
def variants():
    op = registry.get("rmsnorm")
    before_impls, before_backends = dict(op.impls), dict(op.impl_backends)
    yield op
    op.impls.clear()
    op.impls.update(before_impls)
    op.impl_backends.clear()
    op.impl_backends.update(before_backends)


def test_a_triton_variant_is_checked_like_the_triton_impl(variants, monkeypatch):
    registry.register_impl("rmsnorm", "edited_rmsnorm", variants.triton)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # as on a CPU-only host (a GPU host's suite compiles instead)
    assert registry.resolve("rmsnorm", "edited_rmsnorm", "cpu") is variants.triton
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    for name in ("triton", "edited_rmsnorm"):
        with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
            registry.resolve("rmsnorm", name, "cpu")


def test_a_torch_variant_runs_anywhere_torch_does(variants, monkeypatch):
    registry.register_impl("rmsnorm", "plain_rmsnorm", variants.torch, backend="torch")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert registry.resolve("rmsnorm", "plain_rmsnorm", "cpu") is variants.torch


def test_unknown_impl_and_backend_are_refused(variants):
    with pytest.raises(KeyError, match=r"no implementation 'nope'.*registered"):
        registry.resolve("rmsnorm", "nope", "cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        registry.register_impl("rmsnorm", "odd_rmsnorm", variants.torch, backend="cuda")
    assert "odd_rmsnorm" not in variants.impls


def test_every_framework_module_exists():
    """kernels.ops skips these when importing op modules; a stale name there hides nothing but misleads."""
    modules = {m.name for m in pkgutil.iter_modules(kernels.__path__)}
    assert not ops.FRAMEWORK - modules, "listed in kernels.ops.FRAMEWORK but no such module"


def test_every_op_module_imports():
    """A kernel module that fails to import is kept out of the registry (the other ops still load and
    test); this is the test that names it and fails."""
    assert registry.broken_modules() == {}, "op modules failed to import: " + "; ".join(
        f"{m}: {e}" for m, e in registry.broken_modules().items())


def test_a_broken_op_module_is_recorded_and_the_others_still_import(tmp_path, monkeypatch):
    package = tmp_path / "opsdemo"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "good.py").write_text("LOADED = True\n")
    (package / "half_edited.py").write_text("def kernel(:\n")  # a syntax error mid-edit
    (package / "raises.py").write_text("raise ImportError('needs a package that is not installed')\n")
    (package / "_private.py").write_text("raise RuntimeError('never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import opsdemo

    broken = ops.import_op_modules(opsdemo)
    assert set(broken) == {"opsdemo.half_edited", "opsdemo.raises"}
    assert broken["opsdemo.half_edited"].startswith("SyntaxError")
    assert broken["opsdemo.raises"] == "ImportError: needs a package that is not installed"
    import opsdemo.good

    assert opsdemo.good.LOADED


def test_lookups_and_the_cli_name_a_broken_module(monkeypatch):
    from bench import check

    monkeypatch.setitem(ops.BROKEN, "kernels.my_attention", "SyntaxError: invalid syntax (my_attention.py, line 3)")
    with pytest.raises(KeyError, match=r"kernels\.my_attention \(SyntaxError"):
        registry.get("my_attention")
    with pytest.raises(check.OpModuleBroken, match=r"kernels\.my_attention: SyntaxError"):
        check.select_ops(None)


def test_poisoned_outputs_hold_values_no_kernel_writes_on_purpose():
    from kernels import alloc

    assert not alloc.poisoning()
    with alloc.poisoned():
        assert alloc.poisoning()
        assert torch.isnan(alloc.empty(3, dtype=torch.bfloat16, device="cpu")).all()
        for dtype in (torch.int32, torch.int64):
            got = alloc.empty(3, dtype=dtype, device="cpu")
            assert (got == torch.iinfo(dtype).min).all()  # not -1: kernels write -1 on purpose
        assert alloc.empty(2, dtype=torch.bool, device="cpu").all()
    assert not alloc.poisoning()


def test_an_implementation_missing_a_reference_parameter_is_refused(variants):
    """A kernel written against an older signature fails at registration, naming the parameter, not at the
    engine's first call; one that takes **kwargs, or every parameter, is accepted."""
    from kernels.paged_decode import paged_decode_attention_reference

    def old_decode(q, k_cache, v_cache, block_tables, context_lens, scale=None, max_context_len=None,
                   num_splits=None, split_size=None):
        return paged_decode_attention_reference(q, k_cache, v_cache, block_tables, context_lens, scale)

    op = registry.get("paged_decode_attention")
    before = dict(op.impls), dict(op.impl_backends)
    try:
        with pytest.raises(TypeError, match=r"takes no fresh_tokens"):
            registry.register_impl("paged_decode_attention", "old_decode", old_decode, backend="torch")
        assert "old_decode" not in op.impls
        registry.register_impl("paged_decode_attention", "any_decode",
                                lambda *a, **kw: paged_decode_attention_reference(*a, **kw), backend="torch")
        registry.register_impl("paged_decode_attention", "same_decode", paged_decode_attention_reference,
                               backend="torch")
        assert {"any_decode", "same_decode"} <= set(op.impls)
    finally:
        op.impls.clear()
        op.impls.update(before[0])
        op.impl_backends.clear()
        op.impl_backends.update(before[1])
