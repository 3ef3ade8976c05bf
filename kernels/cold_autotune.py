"""Autotuning a weight-streaming kernel with its weight cold, as a decode step meets it.

Triton's autotuner times a config by launching it again and again on the same arguments. For a decode
GEMV that means the same weight every time: a 896 x 896 bf16 weight (1.6 MB) sits in L2 after the first
launch, and the configs are ranked by how they read L2. In a decode step every weight comes from memory
(a model's layers are far larger than L2), so the ranking can be wrong: on an H200 the split-K kernel's
16-column tiles ran 16 x 896 x 896 in 3.6 us, the pick from L2-resident replays in 5.1 us
(bench/results/NVIDIA_H200/run14_notes.md). Clearing L2 before each launch is no better: it leaves L2 full
of dirty lines that the launch then writes back, and x, which a decode step has just written, cold.

:class:`ColdWeightTuner` times each config as CUDA-graph replays of launches that rotate through copies
of the weight argument, enough copies that their bytes exceed :data:`L2_MULTIPLE` times L2 (capped at
:data:`MAX_COPY_BYTES`; a weight larger than that is not copied: it cannot stay in L2 anyway). Every
other argument is the launch's own, x included, warm as in a step. The choice is kept per key (the key
arguments' values and the tensors' dtypes, as Triton's autotuner keys) for the process, and on disk in
Triton's cache folder, keyed also by the kernel's source, the GPU, the Triton version and the config list
(:func:`_disk_key`): a second start on the same machine times nothing, and editing the kernel or its configs
tunes again. The disk cache is only a saving: if it cannot be read or written, the tuner times as usual.

``kernels.tuning.Tuned(..., cold_weight="w_ptr")`` routes a kernel's autotuning here; the tuning mode
``autotune-warm`` (``TRITONFORGE_TUNE``) routes it back to Triton's autotuner, for A/B runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from collections.abc import Callable
from typing import Any

import torch

from kernels._triton import triton

L2_MULTIPLE = 3  # the rotation's bytes, in multiples of L2, so that no copy is still there when it comes round
MAX_COPY_BYTES = 256 << 20  # at most this much device memory for the copies, however small the weight
REP_MS = 5  # milliseconds of launches per captured graph


def copies_needed(weight_bytes: int, l2_bytes: int) -> int:
    """How many copies of a weight of ``weight_bytes`` the rotation takes (the weight itself counts as one)."""
    if weight_bytes <= 0 or weight_bytes > l2_bytes:
        return 1
    return max(1, min(-(-L2_MULTIPLE * l2_bytes // weight_bytes), MAX_COPY_BYTES // weight_bytes))


def tuning_key(named: dict[str, Any], key: list[str]) -> tuple:
    """The key arguments' values, then the dtypes of every tensor argument in order (as Triton keys)."""
    return tuple([named[k] for k in key if k in named] + [str(v.dtype) for v in named.values() if hasattr(v, "dtype")])


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What a config that cannot be built on this card raises (it is then skipped, as Triton's tuner does)."""
    from triton.compiler import errors as compiler_errors
    from triton.runtime import errors as runtime_errors

    found = [getattr(runtime_errors, "OutOfResources", None), getattr(runtime_errors, "PTXASError", None),
             getattr(compiler_errors, "CompileTimeAssertionFailure", None)]
    return tuple(e for e in found if e is not None)


def _l2_bytes(device: torch.device) -> int:
    return int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20))


class ColdWeightTuner:
    """Picks one of ``configs`` (``triton.Config``) per key, timing each with ``weight_arg`` rotated."""

    def __init__(self, kernel, configs: list, key: list[str], weight_arg: str,
                 prune: Callable[..., list] | None = None):
        self.kernel = kernel
        self.configs = configs
        self.key = key
        self.weight_arg = weight_arg
        self.prune = prune
        self.arg_names = list(kernel.arg_names)
        if weight_arg not in self.arg_names:
            raise ValueError(f"kernel {kernel.__name__} has no argument {weight_arg!r} to rotate")
        self.choices: dict[tuple, Any] = {}  # key -> the chosen triton.Config
        self.timings: dict[tuple, dict[str, float]] = {}  # key -> {str(config): median ms}

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.run(grid, args, kwargs)

    def run(self, grid, args: tuple, kwargs: dict):
        named = {**dict(zip(self.arg_names, args, strict=False)), **kwargs}
        key = tuning_key(named, self.key)
        config = self.choices.get(key)
        if config is None:
            config = self._from_disk(key) or self._tune(grid, args, kwargs, key)
        return self.kernel[grid](*args, **kwargs, **config.all_kwargs())

    def _tune(self, grid, args: tuple, kwargs: dict, key: tuple):
        """The fastest config for this launch's key, kept; inside a CUDA-graph capture, where nothing can be
        timed, the first one, not kept (the engine warms every key up before it captures)."""
        configs = self.configs
        if self.prune is not None:
            configs = self.prune(configs, dict(zip(self.arg_names, args, strict=False)), **kwargs) or configs[:1]
        if torch.cuda.is_current_stream_capturing():
            return configs[0]
        if len(configs) == 1:
            self.choices[key] = configs[0]
            return configs[0]
        at = self.arg_names.index(self.weight_arg)
        weight = args[at]
        n = copies_needed(weight.numel() * weight.element_size(), _l2_bytes(weight.device))
        weights = [weight, *_copies(weight, n - 1)]
        sets = [(*args[:at], w, *args[at + 1:]) for w in weights]
        skip = _compile_errors()
        times = {}
        for config in configs:
            try:
                times[config] = _time_rotating(self.kernel[grid], sets, {**kwargs, **config.all_kwargs()})
            except skip:
                times[config] = float("inf")
        self.timings[key] = {str(c): t for c, t in times.items()}
        best = min(times, key=times.get)
        if times[best] == float("inf"):
            raise RuntimeError(f"kernel {self.kernel.__name__}: no config compiles for key {key}")
        self.choices[key] = best
        self._to_disk(key, best)
        return best

    def _disk(self, key: tuple):
        """(Triton's cache manager for this kernel, config list, GPU and key; the file name), or None."""
        try:
            from triton.runtime.cache import get_cache_manager

            digest = _disk_key(self.kernel, self.configs, key)
            return get_cache_manager(digest), f"{self.kernel.__name__[:40]}.cold.json"
        except Exception:  # no cache folder, an older Triton: tune without one
            return None

    def _from_disk(self, key: tuple):
        found = self._disk(key)
        try:
            path = found and found[0].get_file(found[1])
            if not path:
                return None
            with open(path) as f:
                index = json.load(f)["config"]
            config = self.configs[index]
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None
        self.choices[key] = config
        return config

    def _to_disk(self, key: tuple, config) -> None:
        found = self._disk(key)
        if found is None:
            return
        record = {"config": self.configs.index(config), "timings_ms": self.timings.get(key, {})}
        with contextlib.suppress(Exception):  # a read-only or full cache folder: keep the choice in memory only
            found[0].put(json.dumps(record), found[1], binary=False)


def _copies(weight: torch.Tensor, n: int) -> list[torch.Tensor]:
    """Up to ``n`` copies of ``weight``: as many as device memory allows (the engine tunes after sizing its KV
    cache; fewer copies only make the rotation shorter, and none leaves the weight warm, as Triton's tuner)."""
    copies = []
    try:
        for _ in range(n):
            copies.append(weight.clone())
    except torch.cuda.OutOfMemoryError:
        pass  # no room for another copy: tune with the copies made so far (see above)
    return copies


def _time_rotating(launch, sets: list[tuple], kwargs: dict) -> float:
    """Median ms of ``launch(*args, **kwargs)``, CUDA-graph replays, each launch taking the next ``args``."""
    turn = itertools.cycle(sets)
    return triton.testing.do_bench_cudagraph(lambda: launch(*next(turn), **kwargs), rep=REP_MS,
                                             return_mode="median")


def _disk_key(kernel, configs: list, key: tuple) -> str:
    """What a stored choice depends on: this tuner's method, the kernel's source, the Triton version, the GPU,
    the config list and the tuning key."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    parts = ["cold-weight-1", L2_MULTIPLE, MAX_COPY_BYTES, kernel.cache_key, triton.__version__, gpu,
             [str(c) for c in configs], key]
    return hashlib.sha256(repr(parts).encode()).hexdigest()

