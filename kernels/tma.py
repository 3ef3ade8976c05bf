"""TMA (the Tensor Memory Accelerator, NVIDIA sm_90+): when a launch may load through tensor descriptors.

A tensor descriptor names a 2-D (or higher) region of global memory and a block shape; ``desc.load([r, c])``
copies one block into shared memory asynchronously, with no address arithmetic in the program's threads and
zeros for the parts of the block outside the region. Two ways to make one:

- on the host (``triton.tools.tensor_descriptor.TensorDescriptor``), passed as an argument: the block
  shape is fixed at launch (the attention kernels, whose tile is chosen before the launch);
- in the kernel (``tl.make_tensor_descriptor``), from a pointer, shapes and strides: the block shape may
  be a config's constexpr, so an autotuned kernel can use it. The descriptor is written to a global
  scratch buffer (128 bytes a descriptor a program) that Triton asks an allocator for at each launch;
  :func:`kernel_descriptors` installs one backed by torch's caching allocator (which CUDA-graph capture
  also serves) where none is set. The buffer is freed when the launch returns, so the next launch on the
  stream may get the same block: a kernel launched with PDL (kernels/pdl.py), which can start before its
  predecessor ends, must make its descriptors after its wait. Making them costs time on the critical path:
  in the split-K decode kernel, where a product takes 3-20 us, TMA ran at a median 0.91x the pointer loads'
  speed and was dropped (H200, bench/results/NVIDIA_H200/run27); the persistent prefill kernel makes them
  once per program and keeps them (``kernels.linear_persistent``).

Either way TMA needs a 16-byte aligned base, unit last stride and 16-byte multiples for the other strides
(:func:`tma_aligned`). Everything here is decided at launch, never at import; ``TRITONFORGE_TMA=0`` (read at
each launch) turns every TMA path off.
"""

from __future__ import annotations

import functools
import os

import torch

from kernels._triton import tl, triton
from kernels.device import interpreting, is_hip


@triton.jit
def _descriptor_probe(desc, out_ptr):
    rows, cols = tl.arange(0, 16)[:, None], tl.arange(0, 16)[None, :]
    tl.store(out_ptr + rows * 16 + cols, desc.load([0, 0]))


@triton.jit
def _kernel_descriptor_probe(src_ptr, out_ptr):
    desc = tl.make_tensor_descriptor(src_ptr, shape=[16, 16], strides=[16, 1], block_shape=[16, 16])
    rows, cols = tl.arange(0, 16)[:, None], tl.arange(0, 16)[None, :]
    tl.store(out_ptr + rows * 16 + cols, desc.load([0, 0]))


def _probe(launch) -> bool:
    src = torch.arange(256, dtype=torch.float16).view(16, 16)
    out = torch.zeros_like(src)
    try:
        launch(src, out)
    except Exception:  # whatever an interpreter without descriptor support raises: take the pointer path
        return False
    return torch.equal(out, src)


@functools.cache
def _interpreter_reads_descriptors() -> bool:
    """This Triton's interpreter loads through host TensorDescriptors (3.9's does): tried once, not assumed."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    return _probe(lambda src, out: _descriptor_probe[(1,)](
        TensorDescriptor(src, shape=[16, 16], strides=[16, 1], block_shape=[16, 16]), out))


@functools.cache
def _interpreter_makes_descriptors() -> bool:
    """This Triton's interpreter runs ``tl.make_tensor_descriptor`` (3.9's does): tried once."""
    _install_scratch("cpu")
    return _probe(lambda src, out: _kernel_descriptor_probe[(1,)](src, out))


@functools.cache
def _cuda_has_tma(index: int) -> bool:
    return not is_hip() and torch.cuda.get_device_capability(index) >= (9, 0)


def _enabled(device: torch.device, interp: bool) -> bool:
    if os.environ.get("TRITONFORGE_TMA", "1") == "0":
        return False
    return interp or (device.type == "cuda" and _cuda_has_tma(device.index or 0))


def tma_loads(device: torch.device) -> bool:
    """Kernels launched for ``device`` can load through host-made descriptors: an NVIDIA sm_90+ GPU, or an
    interpreter that supports them."""
    interp = interpreting()
    return _enabled(device, interp) and (not interp or _interpreter_reads_descriptors())


def _scratch(device: str, size: int, alignment: int, stream) -> torch.Tensor:
    # torch's allocations are 512-byte aligned, more than the 128 bytes a descriptor asks for
    return torch.empty(size, dtype=torch.int8, device=device)


@functools.cache
def _allocator_slot():
    """Triton's per-context allocator variable and its 'none set' class, or None in a Triton laid out otherwise."""
    try:
        from triton.runtime._allocation import NullAllocator, _allocator
    except ImportError:  # a Triton without this private module: the caller installs its allocator regardless
        return None
    return _allocator, NullAllocator


def _install_scratch(device: str) -> None:
    """Give Triton an allocator for in-kernel descriptors unless this context already has one (a caller's
    own allocator is left alone; Triton keeps the allocator per thread context). Called at every launch
    that needs it: a new thread starts without one."""
    slot = _allocator_slot()
    if slot is not None and not isinstance(slot[0].get(), slot[1]):
        return
    triton.set_allocator(functools.partial(_scratch, device))


def kernel_descriptors(device: torch.device) -> bool:
    """Kernels launched for ``device`` can make descriptors in the kernel (``tl.make_tensor_descriptor``);
    if so, the scratch allocator they need is installed for the calling thread."""
    interp = interpreting()
    if not _enabled(device, interp) or (interp and not _interpreter_makes_descriptors()):
        return False
    _install_scratch("cpu" if interp else "cuda")
    return True


def tma_aligned(*tensors: torch.Tensor) -> bool:
    """Every tensor is a row-major 2-D view TMA can read: 16-byte aligned base and row stride, unit last stride."""
    return all(t.dim() == 2 and t.stride(1) == 1 and t.data_ptr() % 16 == 0
               and (t.stride(0) * t.element_size()) % 16 == 0 for t in tensors)
