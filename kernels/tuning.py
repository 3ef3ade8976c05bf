"""Configs as data, chosen at first launch.

A kernel module declares its configs as plain dicts per vendor::

    CONFIGS = {
        "cuda": [dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=3), ...],
        "hip":  [dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2, waves_per_eu=2), ...],
    }
    _matmul = Tuned(_matmul_kernel, CONFIGS, key=["M", "N", "K"], keep=lambda c, args: ...)

and launches ``_matmul[grid](...)``. Nothing is converted or measured at import. At the first launch the
list for the running vendor is turned into ``triton.Config`` objects, filtered by ``keep`` and handed to
``triton.autotune``. In the interpreter (no GPU, nothing to time) the first kept config is used as is.
The keys ``num_warps``, ``num_stages`` and ``num_ctas`` are launch options; every other key is a
meta-parameter, except AMD knobs (``waves_per_eu``, ``matrix_instr_nonkdim``, ``kpack``), which the
HIP backend reads as meta-parameters and which belong only in the ``"hip"`` list.

``TRITONFORGE_TUNE`` (read at each launch) picks what a GPU launch does: ``autotune`` (the default: time
the kept configs once per key, as the engine and the benchmarks want) or ``first`` (launch the first kept
config with no timing, as the GPU tests do: they check results, and autotuning every random shape a
property test draws would cost minutes of compiling and timing for nothing).

A weight-streaming kernel names its weight argument (``Tuned(..., cold_weight="w_ptr")``): under
``autotune`` its configs are then timed with that weight rotated through copies that defeat L2, as a
decode step meets it (``kernels.cold_autotune``). The mode ``autotune-warm`` times them with Triton's
autotuner on the launch's own arguments instead (the weight stays in L2), for A/B runs.

Where Triton supports it, the autotuner keeps its choices in Triton's cache folder, keyed by the kernel's
source, the GPU architecture, the config list and the tuning key: a second engine start on the same
machine skips the timing. Editing a kernel or its configs invalidates the entry. The cold-weight tuner
keeps its choices there too, in its own entries.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

from kernels._triton import triton
from kernels.device import interpreting, vendor

LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas")
TUNE_MODES = ("autotune", "first", "autotune-warm")


def tune_mode() -> str:
    """``"autotune"``, ``"first"`` or ``"autotune-warm"``, from ``TRITONFORGE_TUNE``; an unknown value is an
    error, not a guess."""
    mode = os.environ.get("TRITONFORGE_TUNE", "autotune") or "autotune"
    if mode not in TUNE_MODES:
        raise ValueError(f"TRITONFORGE_TUNE={mode!r}: expected one of {', '.join(TUNE_MODES)}")
    return mode


@contextlib.contextmanager
def tuning(mode: str) -> Iterator[None]:
    """Launches inside the block use ``mode`` (see :func:`tune_mode`); the previous setting comes back after."""
    if mode not in TUNE_MODES:
        raise ValueError(f"tuning mode {mode!r}: expected one of {', '.join(TUNE_MODES)}")
    before = os.environ.get("TRITONFORGE_TUNE")
    os.environ["TRITONFORGE_TUNE"] = mode
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TRITONFORGE_TUNE", None)
        else:
            os.environ["TRITONFORGE_TUNE"] = before


def graph_bench(fn, quantiles):
    """The autotuner's timer for kernels of a few microseconds: CUDA-graph replays. Such a launch is shorter
    than the host needs to launch it, so timing eager launches would rank configs by host noise."""
    return triton.testing.do_bench_cudagraph(fn, rep=5, quantiles=quantiles)


def to_config(d: dict[str, Any]) -> triton.Config:
    kwargs = {k: v for k, v in d.items() if k not in LAUNCH_OPTIONS}
    opts = {k: d[k] for k in LAUNCH_OPTIONS if k in d}
    return triton.Config(kwargs, **opts)


class Tuned:
    """A ``@triton.jit`` kernel with per-vendor configs; the autotuner is built at first launch.

    ``cold_weight``: the name of the argument that carries a streamed weight; its autotuning then times
    configs with that weight cold (``kernels.cold_autotune``), unless the mode is ``autotune-warm``.
    """

    def __init__(self, kernel, configs: dict[str, list[dict[str, Any]]], key: list[str],
                 keep: Callable[[dict[str, Any]], bool] | None = None, cold_weight: str | None = None,
                 **autotune_kwargs):
        self.kernel = kernel
        self.configs = configs
        self.key = key
        self.keep = keep
        self.cold_weight = cold_weight
        self.autotune_kwargs = autotune_kwargs
        self._built = None
        self._cold = None

    def candidates(self, which: str | None = None) -> list[dict[str, Any]]:
        which = which or ("cuda" if interpreting() else vendor())
        if which not in self.configs:
            raise RuntimeError(f"kernel {self.kernel.__name__} has no configs for {which!r}")
        kept = [c for c in self.configs[which] if self.keep is None or self.keep(c)]
        if not kept:
            raise RuntimeError(f"kernel {self.kernel.__name__}: every {which} config was pruned")
        return kept

    def __getitem__(self, grid):
        if interpreting():
            meta = {k: v for k, v in self.candidates()[0].items() if k not in LAUNCH_OPTIONS}
            return lambda *args, **kwargs: self.kernel[grid](*args, **kwargs, **meta)
        mode = tune_mode()
        if mode == "first":
            first = self.candidates()[0]
            return lambda *args, **kwargs: self.kernel[grid](*args, **kwargs, **first)
        if self.cold_weight is not None and mode != "autotune-warm":
            return self._cold_tuner()[grid]
        if self._built is None:
            configs = [to_config(c) for c in self.candidates()]
            kwargs = dict(self.autotune_kwargs)
            if "cache_results" in inspect.signature(triton.autotune).parameters:
                kwargs.setdefault("cache_results", True)
            self._built = triton.autotune(configs=configs, key=self.key, **kwargs)(self.kernel)
        return self._built[grid]

    def _cold_tuner(self):
        if self._cold is None:
            from kernels.cold_autotune import ColdWeightTuner

            prune = self.autotune_kwargs.get("prune_configs_by", {}).get("early_config_prune")
            self._cold = ColdWeightTuner(self.kernel, [to_config(c) for c in self.candidates()], self.key,
                                         self.cold_weight, prune=prune)
        return self._cold
