"""Output allocation for launchers, with an optional poison fill for tests.

Launchers allocate their outputs through :func:`empty`. Inside ``with poisoned():`` every such buffer is
filled with NaN (integers with their dtype's least value, booleans with True) first, so an element the
kernel forgot to write fails the comparison instead of passing on whatever memory happened to hold. The
integer poison is not -1 because kernels write -1 on purpose (an invalid row's token, a skipped slot).
"""

from __future__ import annotations

import contextlib
import threading

import torch

_state = threading.local()


def poisoning() -> bool:
    return getattr(_state, "on", False)


@contextlib.contextmanager
def poisoned():
    prev = poisoning()
    _state.on = True
    try:
        yield
    finally:
        _state.on = prev


def poison_(t: torch.Tensor) -> torch.Tensor:
    if t.dtype.is_floating_point:
        return t.fill_(float("nan"))
    if t.dtype == torch.bool:
        return t.fill_(True)
    return t.fill_(torch.iinfo(t.dtype).min)


def empty(*shape, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    t = torch.empty(*shape, dtype=dtype, device=device)
    return poison_(t) if poisoning() else t


def empty_like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return empty(*x.shape, dtype=dtype or x.dtype, device=x.device)
