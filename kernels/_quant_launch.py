"""Launch plumbing shared by the quantized-linear ops: the autotuning key for M, pruning decode and
prefill tiles by it, pinning one config instead of autotuning (tuning scripts time each config), and
whether the GEMVs launch with PDL."""

from __future__ import annotations

import torch

from kernels import pdl
from kernels._quant_gemv import GEMV_MAX_M
from kernels._triton import triton
from kernels.tuning import Tuned

# Which quantized GEMVs launch with programmatic dependent launch (kernels/pdl.py) where it is on; they
# signal the next kernel after their weight loop, not at their start (see kernels/_quant_gemv.py).
# H200, M = 1, speedup over cuBLAS without PDL and with it signalled late (two calls, so two machines:
# bench/results/NVIDIA_H200/run9_notes.md): W8A16 1.45-1.56x -> 1.52-1.64x, W4A16 1.34-1.39x ->
# 1.33-1.48x, GGUF Q4_K 0.83-0.94x -> 0.74-0.88x (Q4_0 unchanged), so the GGUF GEMVs launch without it.
GEMV_PDL = {"w8a16": True, "w4a16": True, "gguf": False}


def gemv_launch_options(kind: str, device: torch.device) -> dict:
    """``PDL``/``launch_pdl`` for a quantized GEMV launch of ``kind`` (a GEMV_PDL key) on ``device``."""
    return pdl.launch_options(device, f"{kind}_gemv") if GEMV_PDL[kind] else {"PDL": 0}


def m_bucket(M: int) -> int:
    """The autotuning key for M: decode sizes share one entry, prefill sizes one per power of two."""
    return 16 if M <= 16 else min(triton.next_power_of_2(M), 4096)


def prune_by_m(configs, named_args, **kwargs):
    """Decode tiles for M <= 16, prefill tiles above; always at least one config."""
    decode = named_args["M_BUCKET"] <= 16
    kept = [c for c in configs if (c.kwargs["BLOCK_M"] == 16) == decode]
    return kept or configs


def gemv_rows(M: int) -> int:
    """The GEMV kernels' ROWS for M <= 4: 1, 2 or 4 (each row's arithmetic is the same in all three)."""
    return 1 if M == 1 else 2 if M == 2 else 4


def use_gemv(M: int, weight, align: int, config: dict | None, max_m: int = GEMV_MAX_M) -> bool:
    """Whether a decode launch takes the GEMV kernel: M <= max_m (the dispatch's limit), a weight whose rows
    can be read as ``align``-byte words, and no pinned tensor-core config (one with BLOCK_M); a pinned GEMV
    config (no BLOCK_M) forces it at any M the kernels take (1 to GEMV_MAX_M)."""
    if config is not None:
        if "BLOCK_M" not in config and not 0 < M <= GEMV_MAX_M:
            raise ValueError(f"a GEMV config was pinned for M={M}; the GEMV kernels take 1 <= M <= {GEMV_MAX_M}")
        return "BLOCK_M" not in config
    return (0 < M <= max_m and weight.is_contiguous() and weight.data_ptr() % align == 0
            and weight.shape[-1] % align == 0)


class Pinned:
    """A kernel launched with one fixed config instead of autotuning (tuning scripts time each config)."""

    def __init__(self, kernel, config: dict):
        self.kernel, self.config = kernel, config

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.kernel[grid](*args, **kwargs, **self.config)


def launcher(tuned: Tuned, config: dict | None):
    return tuned if config is None else Pinned(tuned.kernel, config)
