"""Launch plumbing shared by the quantized-linear ops: the autotuning key for M, pruning decode and
prefill tiles by it, and pinning one config instead of autotuning (tuning scripts time each config)."""

from __future__ import annotations

from kernels._triton import triton
from kernels.tuning import Tuned


def m_bucket(M: int) -> int:
    """The autotuning key for M: decode sizes share one entry, prefill sizes one per power of two."""
    return 16 if M <= 16 else min(triton.next_power_of_2(M), 4096)


def prune_by_m(configs, named_args, **kwargs):
    """Decode tiles for M <= 16, prefill tiles above; always at least one config."""
    decode = named_args["M_BUCKET"] <= 16
    kept = [c for c in configs if (c.kwargs["BLOCK_M"] == 16) == decode]
    return kept or configs


class Pinned:
    """A kernel launched with one fixed config instead of autotuning (tuning scripts time each config)."""

    def __init__(self, kernel, config: dict):
        self.kernel, self.config = kernel, config

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.kernel[grid](*args, **kwargs, **self.config)


def launcher(tuned: Tuned, config: dict | None):
    return tuned if config is None else Pinned(tuned.kernel, config)
