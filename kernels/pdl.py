"""Programmatic dependent launch (PDL): a decode kernel starts while the kernel before it finishes.

A decode step is a chain of short kernels (a 0.5B model's step is about 200 launches of 1-7 us each), and
between two of them the card idles: the next grid is launched only once the last program of the previous
one has exited, and its programs then wait for their first loads. On Hopper and later a kernel launched
with PDL may be scheduled early, once every program of the kernel before it has signalled
``launch_dependents`` (or exited). A kernel then splits its work in two::

    start(PDL)      # in the "start" mode (the default, below): the next kernel may be scheduled now
    ... work that reads only what no earlier kernel of the step writes (weights, strides, index math) ...
    enter(PDL)      # waits until the earlier kernels have finished and their writes are visible; in the
                    # "after_wait" mode, only then signals that the next kernel may be scheduled
    ... everything else: the activations, the KV cache, every store ...

The rule a kernel keeps: nothing before the wait stores to global memory or reads memory that an earlier
kernel writes. The dense GEMVs (``linear_gemv``, ``rmsnorm_linear``) load their first weight tile before
it, so that load overlaps the previous kernel's tail -- but only for a weight its owner has declared
static (:func:`mark_static`: the engine does so for its model's weights at load). Any other weight may
have been written by the kernel just before (a test's ``randn(...).to(bf16)``, a ``.contiguous()``
copy), so it is loaded after the wait like everything else. The paged decode split kernel likewise reads its
first tile of the KV cache before the wait only when its caller promises which tokens are settled
(``fresh_tokens``, kernels/paged_decode.py: the engine's decode step writes one new token per sequence).
The other decode kernels wait first. The wait
orders against every earlier kernel in the stream, not only the one just before (that one's own wait
returned only after the kernels before it had finished), and a kernel launched without PDL -- torch's, or
ours with PDL off -- starts after the previous one ends, as usual. Inside a CUDA graph the same launches
become programmatic edges.

Where to signal (:data:`SIGNAL`; H200, run 9). The default, "start", signals before the wait: the next
kernel is scheduled as early as possible. In the 0.5B model's decode graph it gave 691.4 us against 853.8
without PDL (one process), and 689.5 us as shipped on another machine. "after_wait", which keeps at most
one launch ahead of the running one, measured 703.8 us on a third machine. Signalled at the very start,
though, a chain of launches can sit resident and blocked, holding slots the running kernel's later
programs need: split paged decode launches ran 10-25% slower, Q4_K at 4096 x 14336 30% slower, and
back-to-back KV writes of 4096 tokens 12% slower (run 10). So the quantized GEMVs, the paged decode split
kernel and the KV write signal after their main work (``wait`` and ``launch_dependents`` separately), in
every mode. A kernel may also take its own mode (:data:`KERNEL_SIGNAL`, keyed by the name its launcher
passes), and the dense split-K decode makes the choice a tuned config (``SIGNAL_AFTER_WAIT`` in
``kernels.linear_decode``): launched back to back at the start signal, it ran 896 x 896 at M = 16 in 5.4 us,
against 4.0 without PDL and 3.4 after the wait, which fits a chain as above (H200, run 22). In the 0.5B
decode graph no single kernel's mode measured better than the run's drift, so KERNEL_SIGNAL ships empty.

``enabled(device)`` decides at launch, never at import: an NVIDIA GPU of compute capability 9.0 or later,
a Triton that has the grid-dependency instructions, and the switch :data:`ENABLED` (benchmarks turn it off
to measure what it gives). In the interpreter and on AMD GPUs the kernels compile every call here out (the
``PDL`` flag is a compile-time constant, 0) and launch as before. ``TRITONFORGE_PDL`` (read at each
launch) overrides for a whole process: ``0`` turns it off, ``start`` or ``after_wait`` picks the mode (a
launch whose tuned config has ``SIGNAL_AFTER_WAIT`` still signals after its wait).
"""

from __future__ import annotations

import functools
import os
import weakref

import torch

from kernels._triton import tl, triton
from kernels.device import interpreting, is_hip

ENABLED = True  # read at each launch (see enabled)
SIGNAL = "start"  # or "after_wait": where start()/enter() signal (see the module docstring)
MODES = {"after_wait": 1, "start": 2}  # the PDL constexpr: 0 = off
# Kernels measured to do better with another signal than SIGNAL: launcher name -> mode (see the docstring).
KERNEL_SIGNAL: dict[str, str] = {}


@functools.cache
def _supported(index: int) -> bool:
    if interpreting() or is_hip() or not torch.cuda.is_available():
        return False
    try:
        from triton.language.extra import cuda as tl_cuda
    except ImportError:  # a Triton without the CUDA extras: launch without PDL, as on any other card
        return False
    if not (hasattr(tl_cuda, "gdc_wait") and hasattr(tl_cuda, "gdc_launch_dependents")):
        return False
    return torch.cuda.get_device_capability(index) >= (9, 0)


def enabled(device: torch.device) -> bool:
    """Launch on ``device`` with PDL: the switch is on (:data:`ENABLED`, and ``TRITONFORGE_PDL`` is not
    ``0``), and the card and Triton support it."""
    return (ENABLED and os.environ.get("TRITONFORGE_PDL", "1") != "0" and device.type == "cuda"
            and _supported(device.index or 0))


def mode(kernel: str | None = None) -> int:
    """The ``PDL`` constexpr of an enabled launch of ``kernel`` (a launcher's name): ``TRITONFORGE_PDL`` when it
    names a mode, else the kernel's entry in :data:`KERNEL_SIGNAL`, else :data:`SIGNAL`."""
    name = os.environ.get("TRITONFORGE_PDL", "")
    if name not in MODES:
        name = KERNEL_SIGNAL.get(kernel, SIGNAL)
    if name not in MODES:
        where = f"KERNEL_SIGNAL[{kernel!r}]" if kernel in KERNEL_SIGNAL else "SIGNAL"
        raise ValueError(f"kernels.pdl.{where}={name!r}: expected one of {', '.join(MODES)}")
    return MODES[name]


_STATIC: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # data_ptr -> a tensor marked static


def mark_static(*tensors: torch.Tensor) -> None:
    """Declare ``tensors`` never written by any kernel from now on (model weights), so that a kernel may
    read them before its PDL wait. The mark lives as long as the tensor; a copy is not marked."""
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.numel():
            _STATIC[t.data_ptr()] = t


def is_static(t: torch.Tensor) -> bool:
    """``t`` starts where a live tensor marked by :func:`mark_static` starts (one dictionary lookup: it runs
    at every GEMV launch). A marked tensor's memory cannot be reused while it lives, and its mark dies with it."""
    return t.numel() > 0 and t.data_ptr() in _STATIC


def launch_options(device: torch.device, kernel: str | None = None) -> dict:
    """Launch keywords for a kernel that takes a ``PDL`` constexpr: ``PDL`` and Triton's ``launch_pdl``.
    ``kernel`` names the launch for :data:`KERNEL_SIGNAL`."""
    return {"PDL": mode(kernel), "launch_pdl": True} if enabled(device) else {"PDL": 0}


@triton.jit
def start(PDL: tl.constexpr):
    """A kernel's first call: signals the next kernel in the "start" mode (the default) only."""
    if PDL == 2:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def wait(PDL: tl.constexpr):
    """Wait for the earlier kernels of the stream to finish (a no-op unless PDL); signals nothing."""
    if PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def enter(PDL: tl.constexpr):
    """Wait for the earlier kernels, then (in the "after_wait" mode) let the next kernel be scheduled."""
    wait(PDL)
    if PDL == 1:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def launch_dependents(PDL: tl.constexpr):
    """Let the next kernel of the stream be scheduled now (a no-op unless PDL), for kernels that signal late."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
