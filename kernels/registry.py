"""The op registry: one record per hot path, read by tests, benchmarks, the CLI and the engine.

Each kernel module ends with one ``register(Op(...))`` call that declares:

- ``name``: the op's name, also its pytest marker (``pytest -m rmsnorm``);
- ``triton`` and ``torch``: the launcher and the pure-torch reference, with the same signature;
- ``cases(profile)``: a hypothesis strategy of case dicts (shapes, dtype) for the ``cpu`` or ``gpu``
  test profile; ``bench_cases()``: the cases the sweep times (real model shapes plus a size sweep);
  ``smoke_cases()``: a few small fixed cases for ``tritonforge check`` (fast even in the interpreter);
- ``make_inputs(case, device, generator)``: fresh random inputs (never zeros) as a kwargs dict;
- ``reduction_len(case)``: the length of the longest reduction, which scales the absolute tolerance;
- ``flops(case)`` and ``bytes(case)``: the roofline model (fewest bytes that must move);
- ``baseline``: an optional vendor implementation for the benchmarks (cuBLAS, SDPA, torch eager);
- ``compare``: an optional custom check for ops whose output is not a plain tensor comparison;
- ``mutates``: names of inputs written in place, compared after the call like returned outputs.

Extra implementations (an edited kernel under another name) are added with :func:`register_impl` and
selected by name everywhere an op is looked up, which is how the engine hot-swaps kernels. Each one
declares the backend it runs on (``"triton"`` unless said otherwise), and :func:`resolve` checks that
backend for it as it does for the built-in implementations. Each must accept every parameter of the op's
reference (it may ignore launch hints such as ``paged_decode_attention``'s ``fresh_tokens``): one that does
not is refused at registration, naming what it lacks, rather than failing at its first call.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from kernels.device import BACKENDS, check_backend

Case = dict[str, Any]


@dataclass
class Op:
    name: str
    triton: Callable
    torch: Callable
    cases: Callable[[str], Any]
    make_inputs: Callable[[Case, torch.device, torch.Generator], dict[str, Any]]
    bench_cases: Callable[[], list[Case]] = lambda: []
    smoke_cases: Callable[[], list[Case]] = lambda: []
    reduction_len: Callable[[Case], int] = lambda case: 1
    flops: Callable[[Case], float] = lambda case: 0.0
    bytes: Callable[[Case], float] = lambda case: 0.0
    baseline: Callable | None = None
    baseline_name: str = "torch"
    compare: Callable | None = None
    # Names of inputs the op writes in place (RoPE's q and k, the KV caches); tests compare them too.
    mutates: tuple[str, ...] = ()
    # The kernel computes a float32 dot with tl.dot, which is TF32 on NVIDIA GPUs.
    tf32: bool = False
    impls: dict[str, Callable] = field(default_factory=dict)
    # Implementation name -> the backend it runs on ("triton" or "torch"), checked by resolve().
    impl_backends: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.impls = {"triton": self.triton, "torch": self.torch, **self.impls}
        self.impl_backends = {name: name if name in BACKENDS else "triton" for name in self.impls} | self.impl_backends

    def impl(self, backend: str) -> Callable:
        try:
            return self.impls[backend]
        except KeyError:
            raise KeyError(
                f"op {self.name!r} has no implementation {backend!r}; registered: {sorted(self.impls)}"
            ) from None


_OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    if op.name in _OPS:
        raise ValueError(f"op {op.name!r} is registered twice")
    _OPS[op.name] = op
    return op


def register_impl(op_name: str, impl_name: str, fn: Callable, backend: str = "triton") -> None:
    """Add an implementation of a registered op, selectable by ``impl_name`` (kernel hot-swap).

    ``backend`` is what ``fn`` runs on: ``"triton"`` (an edited kernel, the usual case) or ``"torch"``
    (plain torch code); :func:`resolve` checks that it can run on the caller's device.
    """
    if backend not in BACKENDS:
        raise ValueError(f"register_impl({op_name!r}, {impl_name!r}): backend must be one of {BACKENDS}, "
                         f"got {backend!r}")
    op = get(op_name)
    missing = _missing_parameters(fn, op.torch)
    if missing:
        raise TypeError(
            f"register_impl({op_name!r}, {impl_name!r}): the implementation takes no {', '.join(missing)}, which "
            f"the op's reference takes {inspect.signature(op.torch)}; callers (the engine, the tests) may pass "
            f"any of them, so accept each (ignoring it is fine) or take **kwargs")
    op.impls[impl_name] = fn
    op.impl_backends[impl_name] = backend


def _missing_parameters(fn: Callable, reference: Callable) -> list[str]:
    """The reference's parameter names ``fn`` cannot be called with (none if it takes ``**kwargs`` or if
    either signature cannot be read)."""
    try:
        have, want = inspect.signature(fn).parameters, inspect.signature(reference).parameters
    except (TypeError, ValueError):  # builtins and some extension callables have no readable signature:
        return []                    # nothing to compare, so registration proceeds as before the check
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in have.values()):
        return []
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [n for n, p in want.items() if p.kind in named and n not in have]


def get(name: str) -> Op:
    _load_all()
    try:
        return _OPS[name]
    except KeyError:
        broken = broken_modules()
        hint = ("; op modules that failed to import: " + "; ".join(f"{m} ({e})" for m, e in broken.items())
                if broken else "")
        raise KeyError(f"no op named {name!r}; registered ops: {sorted(_OPS)}{hint}") from None


def all_ops() -> list[Op]:
    _load_all()
    return [_OPS[k] for k in sorted(_OPS)]


def resolve(name: str, backend: str, device: torch.device | str) -> Callable:
    """The callable for ``name`` under ``backend``; raises if it cannot run on ``device`` here."""
    op = get(name)
    fn = op.impl(backend)  # KeyError naming the registered implementations if there is none
    check_backend(op.impl_backends.get(backend, "triton"), device)
    return fn


def broken_modules() -> dict[str, str]:
    """Op modules that failed to import: {module: "ErrorType: message"} (empty when all is well)."""
    from kernels.ops import BROKEN

    return dict(BROKEN)


def _load_all() -> None:
    # Importing the op modules registers them; deferred so that `import kernels.registry` stays cheap.
    import kernels.ops  # noqa: F401  (imported for its registrations)
