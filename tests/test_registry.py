"""The registry's lookups (a variant added with register_impl is checked for its backend like a built-in) and
the op-module discovery of kernels.ops."""

from __future__ import annotations

import pkgutil

import pytest

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
    assert registry.resolve("rmsnorm", "edited_rmsnorm", "cpu") is variants.triton  # interpreter on
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
