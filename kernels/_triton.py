"""Triton when it is installed; otherwise a stand-in, so that every kernel module still imports.

The torch backend (each op's pure-torch reference) must run where triton cannot be installed: macOS,
Windows, or a Linux box without it. Kernel modules define ``@triton.jit`` kernels at import and read
``triton``/``tl`` names in their launchers, so they take both names from here::

    from kernels._triton import tl, triton

With triton installed these are the real ``triton`` and ``triton.language`` modules, nothing else.
Without it:

- ``triton.jit`` keeps the kernel's definition and raises :class:`~kernels.device.BackendUnavailable`
  ("triton is not installed ...") when it is launched, and so does every other ``triton.<name>``
  (``Config``, ``autotune``, ``testing``: they only matter at a launch);
- ``triton.cdiv`` and ``triton.next_power_of_2`` work, as they are plain integer helpers that input
  builders and launchers call before any launch;
- ``tl.<name>`` is an inert placeholder, so that a ``tl`` name evaluated at import (a dtype table, a
  constexpr default) does not fail; kernel bodies are never run.
"""

from __future__ import annotations

import functools

from kernels.device import TRITON_MISSING, BackendUnavailable


class _Placeholder:
    """Stands for ``triton.language`` and anything reached from it: attributes and calls give placeholders."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, name: str):
        if name.startswith("__"):  # protocol lookups (copy, inspect, pickle) must see a plain object
            raise AttributeError(name)
        return _Placeholder(f"{self._name}.{name}")

    def __call__(self, *args, **kwargs):
        return _Placeholder(f"{self._name}(...)")

    def __repr__(self) -> str:
        return f"<{self._name}: {TRITON_MISSING}>"


class _Kernel:
    """A ``@triton.jit`` function on a machine without triton: defined, never launched."""

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __getitem__(self, grid):
        raise BackendUnavailable(TRITON_MISSING)

    def __call__(self, *args, **kwargs):
        raise BackendUnavailable(TRITON_MISSING)


class _Triton:
    """Stands for the ``triton`` module: ``jit``, the integer helpers, and a clear error for the rest."""

    @staticmethod
    def jit(fn=None, **options):
        # Both spellings: @triton.jit and @triton.jit(do_not_specialize=...).
        return _Kernel(fn) if fn is not None else _Kernel

    @staticmethod
    def cdiv(x: int, y: int) -> int:
        return (x + y - 1) // y

    @staticmethod
    def next_power_of_2(n: int) -> int:
        # Same values as triton's bit-twiddling version, 0 included (n <= 0 gives 0).
        return 0 if n <= 0 else 1 << (n - 1).bit_length()

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise BackendUnavailable(f"triton.{name}: {TRITON_MISSING}")

    def __repr__(self) -> str:
        return f"<triton stand-in: {TRITON_MISSING}>"


try:
    import triton
    import triton.language as tl
except ImportError:
    AVAILABLE = False
    triton = _Triton()
    tl = _Placeholder("triton.language")
else:
    AVAILABLE = True

__all__ = ["AVAILABLE", "tl", "triton"]
