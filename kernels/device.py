"""Where kernels can run, decided at first use and never at import.

Three facts matter to a launcher: is there a GPU (and is it NVIDIA or AMD), is Triton running in its
interpreter (``TRITON_INTERPRET=1``, the CPU path used by tests), and which backend the caller asked for.
Under all three lies whether triton is installed at all (pyproject installs it on Linux only); without it
the kernel modules still import (see ``kernels._triton``) and only backend ``"torch"`` runs.
Nothing here touches the GPU driver when imported; every query is a function call, cached after the
first answer.
"""

from __future__ import annotations

import functools
import os

import torch

BACKENDS = ("triton", "torch")
TRITON_MISSING = "triton is not installed: pip install triton (Linux) or use backend='torch'"


class BackendUnavailable(RuntimeError):
    """Raised when an implementation was asked for that cannot run on this machine."""


@functools.cache
def triton_installed() -> bool:
    """Triton imports here; where it does not, launching a kernel raises :class:`BackendUnavailable`."""
    from kernels._triton import AVAILABLE

    return AVAILABLE


def interpreting() -> bool:
    """True when Triton executes kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def has_gpu() -> bool:
    """A CUDA or ROCm device is visible to torch."""
    return torch.cuda.is_available()


@functools.cache
def is_hip() -> bool:
    """The visible GPU is an AMD one (torch built for ROCm)."""
    return has_gpu() and torch.version.hip is not None


def vendor() -> str:
    """``"cuda"``, ``"hip"`` or ``"cpu"``: picks config lists and baselines."""
    if not has_gpu():
        return "cpu"
    return "hip" if is_hip() else "cuda"


def default_device() -> torch.device:
    return torch.device("cuda") if has_gpu() else torch.device("cpu")


@functools.cache
def num_sms(device_index: int = 0) -> int:
    """Multiprocessors (CUs on AMD); a small fixed count when interpreting on the CPU."""
    if not has_gpu():
        return 4
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def device_sms(device: torch.device) -> int:
    """:func:`num_sms` of the GPU ``device`` names (its index, 0 if none), or the CPU's stand-in count."""
    return num_sms(device.index or 0) if device.type == "cuda" else num_sms()


def gpu_name() -> str:
    if not has_gpu():
        return "cpu"
    return torch.cuda.get_device_name(0)


def check_backend(backend: str, device: torch.device | str) -> None:
    """Raise a clear error if ``backend`` cannot run tensors on ``device`` here."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS} (or a registered variant)")
    dev = torch.device(device)
    if backend == "triton":
        if not triton_installed():
            raise BackendUnavailable(TRITON_MISSING)
        if dev.type == "cpu" and not interpreting():
            raise BackendUnavailable(
                "the triton backend needs a GPU tensor; on a CPU run with TRITON_INTERPRET=1 set before "
                "anything imports triton (the test suite does this), or choose backend='torch'"
            )
        if dev.type not in ("cpu", "cuda"):
            raise BackendUnavailable(f"the triton backend cannot run on device type {dev.type!r}")
