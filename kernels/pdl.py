"""Programmatic dependent launch (PDL): a decode kernel starts while the kernel before it finishes.

A decode step is a chain of short kernels (a 0.5B model's step is about 200 launches of 1-7 us each), and
between two of them the card idles: the next grid is launched only once the last program of the previous
one has exited, and its programs then wait for their first loads. On Hopper and later a kernel launched
with PDL may be scheduled early, once every program of the kernel before it has signalled
``launch_dependents`` (or exited). It then has to split its work in two:

    launch_dependents(PDL)   # first thing: the kernel after this one may be scheduled from now on
    ... work that reads only what no earlier kernel of the step writes (weights, strides, index math) ...
    wait(PDL)                # blocks until the earlier kernels have finished and their writes are visible
    ... everything else: the activations, the KV cache, every store ...

The rule a kernel keeps is the one above: nothing before ``wait`` stores to global memory or reads memory
that an earlier kernel writes. The dense GEMVs (``linear_gemv``, ``rmsnorm_linear``) load their first
weight tile before ``wait``, so that load overlaps the previous kernel's tail; the other decode kernels
(paged decode and its reduce, RoPE + KV write, SwiGLU, RMSNorm, greedy, the split-K and quantized
GEMVs) wait first. The quantized GEMVs and the paged decode split kernel signal ``launch_dependents``
after their main loop rather than at their start: signalled at the start, the early programs of the
launches after them slowed the large GEMVs and the split decode launches (H200, run 9).
``wait`` orders against every earlier kernel in the stream, not only the one just before (that one's own
``wait`` returned only after the kernels before it had finished), and a kernel
launched without PDL -- torch's, or ours with PDL off -- starts after the previous one ends, as usual.
Inside a CUDA graph the same launches become programmatic edges.

``enabled(device)`` decides at launch, never at import: an NVIDIA GPU of compute capability 9.0 or later,
a Triton that has the grid-dependency instructions, and the switch :data:`ENABLED` (benchmarks turn it off
to measure what it gives). In the interpreter and on AMD GPUs the kernels compile ``wait`` and
``launch_dependents`` out (the ``PDL`` flag is a compile-time constant) and launch as before.
``TRITONFORGE_PDL=0`` (read at each launch) turns it off for a whole process, e.g. a benchmark's baseline.
"""

from __future__ import annotations

import functools
import os

import torch

from kernels._triton import tl, triton
from kernels.device import interpreting, is_hip

ENABLED = True  # read at each launch (see enabled)


@functools.cache
def _supported(index: int) -> bool:
    if interpreting() or is_hip() or not torch.cuda.is_available():
        return False
    try:
        from triton.language.extra import cuda as tl_cuda
    except ImportError:
        return False
    if not (hasattr(tl_cuda, "gdc_wait") and hasattr(tl_cuda, "gdc_launch_dependents")):
        return False
    return torch.cuda.get_device_capability(index) >= (9, 0)


def enabled(device: torch.device) -> bool:
    """Launch on ``device`` with PDL: the switch is on (:data:`ENABLED`, and ``TRITONFORGE_PDL`` is not
    ``0``), and the card and Triton support it."""
    return (ENABLED and os.environ.get("TRITONFORGE_PDL", "1") != "0" and device.type == "cuda"
            and _supported(device.index or 0))


def launch_options(device: torch.device) -> dict:
    """Launch keywords for a kernel that takes a ``PDL`` constexpr: ``PDL`` and Triton's ``launch_pdl``."""
    return {"PDL": True, "launch_pdl": True} if enabled(device) else {"PDL": False}


@triton.jit
def wait(PDL: tl.constexpr):
    """Wait for the earlier kernels of the stream to finish (a no-op unless PDL)."""
    if PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def launch_dependents(PDL: tl.constexpr):
    """Let the next kernel of the stream be scheduled now (a no-op unless PDL)."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
