"""The card's measured ceilings, against which every kernel's time is judged.

Datasheet numbers are leads, not ceilings: the sweep measures, in the same process that times the kernels,

- copy bandwidth: a device-to-device copy of a buffer far larger than L2, counting bytes read plus bytes
  written (what a memory-bound kernel can hope to reach);
- matmul rate: a bf16 8192^3 product through torch (cuBLAS on NVIDIA, hipBLASLt/rocBLAS on AMD).

Measured once per process (cached): both take about a second.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

COPY_BYTES = 1 << 30  # 1 GiB source: tens of times any L2
MATMUL_N = 8192


@dataclass(frozen=True)
class Ceilings:
    gpu: str
    copy_gbps: float  # bytes read + written per second / 1e9
    matmul_tflops: float  # bf16 dense matmul, flops per second / 1e12
    l2_bytes: int

    def roofline_ms(self, flops: float, nbytes: float) -> tuple[float, str]:
        """The time floor of a kernel that moves ``nbytes`` and does ``flops``, and which term sets it."""
        byte_ms = nbytes / (self.copy_gbps * 1e9) * 1e3
        flop_ms = flops / (self.matmul_tflops * 1e12) * 1e3
        return (byte_ms, "bytes") if byte_ms >= flop_ms else (flop_ms, "flops")


def copy_bandwidth_gbps(nbytes: int = COPY_BYTES) -> float:
    from bench.timing import time_ms

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").random_()  # never zeros
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    return 2 * nbytes / (ms * 1e-3) / 1e9


def matmul_tflops(n: int = MATMUL_N) -> float:
    from bench.timing import time_ms

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = time_ms(lambda: a @ b)
    return 2 * n**3 / (ms * 1e-3) / 1e12


@functools.cache
def measure() -> Ceilings:
    """Measure the ceilings of GPU 0 (once per process)."""
    if not torch.cuda.is_available():
        raise RuntimeError("measuring ceilings needs a GPU; none is visible to torch here")
    props = torch.cuda.get_device_properties(0)
    ceilings = Ceilings(
        gpu=props.name, copy_gbps=copy_bandwidth_gbps(), matmul_tflops=matmul_tflops(),
        l2_bytes=int(getattr(props, "L2_cache_size", 50 << 20)),
    )
    torch.cuda.empty_cache()
    return ceilings
