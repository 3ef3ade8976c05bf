"""Engine configuration: what to load, where to run it, and how much to batch.

``backend=None`` picks ``"triton"`` when a GPU is visible and triton is installed, and ``"torch"`` (the
pure-torch references of the same ops) otherwise; ``op_overrides`` swaps single kernels by registered
implementation name (``{"rmsnorm": "rmsnorm_v2"}``) without touching engine code. Nothing here queries
the GPU at import: :meth:`EngineConfig.resolved` fills in the device-dependent defaults when the engine
starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclass
class EngineConfig:
    model: str
    backend: str | None = None
    device: str | torch.device | None = None
    dtype: str | torch.dtype | None = None
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    gpu_memory_utilization: float = 0.9
    num_kv_blocks: int | None = None
    enable_prefix_cache: bool = True
    enable_chunked_prefill: bool = True
    enforce_eager: bool = False
    op_overrides: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    revision: str | None = None
    # Additions beyond the first interface (all optional): a cap on prompt + output length (defaults to
    # the model's max_position_embeddings), a default per-request timeout, and hub offline mode.
    max_model_len: int | None = None
    request_timeout_s: float | None = None
    offline: bool | None = None

    def validate(self) -> None:
        if not self.model:
            raise ValueError("EngineConfig.model: give a local model directory, a .gguf file or a hub id")
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError(f"EngineConfig.block_size must be a power of two >= 1, got {self.block_size}")
        if self.max_num_seqs < 1:
            raise ValueError(f"EngineConfig.max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"EngineConfig.max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"EngineConfig.gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError(f"EngineConfig.num_kv_blocks must be >= 1 when given, got {self.num_kv_blocks}")
        if self.max_model_len is not None and self.max_model_len < 2:
            raise ValueError(f"EngineConfig.max_model_len must be >= 2 when given, got {self.max_model_len}")
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            raise ValueError(f"EngineConfig.request_timeout_s must be > 0 when given, got {self.request_timeout_s}")
        if not isinstance(self.op_overrides, dict):
            raise TypeError("EngineConfig.op_overrides must be a dict of op name -> implementation name")

    def resolved(self) -> EngineConfig:
        """A copy with device, backend and dtype filled in for this machine (dtype may stay None: the
        model's own dtype is used, see :func:`resolve_dtype`)."""
        self.validate()
        device = torch.device(self.device) if self.device is not None else _default_device()
        backend = self.backend or ("triton" if device.type == "cuda" and _triton_installed() else "torch")
        dtype = parse_dtype(self.dtype) if self.dtype is not None else None
        return dataclasses.replace(self, device=device, backend=backend, dtype=dtype)


def parse_dtype(value: str | torch.dtype) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    try:
        return _DTYPES[str(value).lower().removeprefix("torch.")]
    except KeyError:
        raise ValueError(f"unknown dtype {value!r}; choose one of {sorted(_DTYPES)}") from None


def resolve_dtype(requested: torch.dtype | None, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The compute dtype: the requested one, else the model's; on a CPU half precision becomes float32
    (CPU half matmuls are slow and the CPU path is for correctness)."""
    if requested is not None:
        return requested
    if device.type == "cpu" and model_dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return model_dtype


def _default_device() -> torch.device:
    from kernels.device import default_device

    return default_device()


def _triton_installed() -> bool:
    from kernels.device import triton_installed

    return triton_installed()
