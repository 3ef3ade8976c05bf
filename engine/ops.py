"""The engine's op table: every kernel the model calls, resolved once through the registry.

The model never imports a kernel module. It calls ``ops.rmsnorm(...)``, ``ops.linear(...)`` and so on,
and this table decides which registered implementation that is: the engine's backend (``"triton"`` on a
GPU, ``"torch"`` -- the references -- on a CPU) unless ``EngineConfig.op_overrides`` names another
implementation registered with :func:`kernels.registry.register_impl`. That is the kernel hot-swap: an
edited kernel registered under a new name is selected by configuration (``--op rmsnorm=my_rmsnorm``)
without touching engine code. A fused op (RoPE with the KV write, an RMSNorm with the projection after
it; opt-in, the SwiGLU gate with the down projection and the decode attention with its output projection)
gives way to its parts when one of them is swapped
(:data:`FUSIONS`). Ops the model never calls (the GGUF ones for a safetensors model) are resolved at
first use, so a missing optional module only matters to models that need it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels import pdl, registry
from kernels.device import BACKENDS, check_backend

ENGINE_OPS = (
    "rmsnorm", "silu_and_mul", "rope", "linear", "gguf_linear", "gguf_dequantize",
    "kv_cache_write", "prefill_attention", "paged_decode_attention", "sample",
    "greedy", "rope_kv_write", "silu_mul_linear", "rmsnorm_linear", "rmsnorm_swiglu",
    "rmsnorm_qkv_rope", "paged_decode_attention_linear",
)
# Fused ops: the ops each stands for, and whether the engine uses it unless told otherwise. A fusion on by
# default gives way to its parts while one of them is swapped for another implementation (a researcher's
# edited ``rope`` must run, not be fused away); naming the fused op itself (``--op silu_mul_linear=triton``)
# turns it on. Measured on an H200 (bench/results/NVIDIA_H200/run6/decode_profile.csv, batch-1 decode
# graph): rope_kv_write saves 24-34 us per step; silu_mul_linear costs 7.6 us more per down projection
# than it saves (the gate's exp and the second input load slow the weight stream), so it is opt-in.
# rmsnorm_linear (run8/decode_profile.csv): the Qwen2.5-0.5B graph 897.6 -> 838.2 us, Llama-3.2-1B 1039.3
# -> 1011.0 us (48 and 32 norm launches fewer); the folded attention reduce, tried in the same call, was slower.
# silu_mul_linear on the one-token GEMV (run9/decode_profile_llama.csv, with PDL): Llama-3.2-1B 960.7 -> 976.7 us
# despite 16 launches fewer, so it stays opt-in. rmsnorm_swiglu (run12, same process): Qwen2.5-0.5B 699.2 ->
# 675.7 us, Llama-3.2-1B 969.1 -> 951.6 us; rmsnorm_qkv_rope on top of it: Qwen2.5-0.5B 676.9 -> 667.3 us,
# Llama-3.2-1B 931.4 -> 936.9 us (within the 2% the graph moves between machines; kept on for both).
# paged_decode_attention_linear (the split-KV combine in the o_proj GEMV, one launch fewer per layer at batch 1;
# run14/decode_profile_call5.log, H200, same process): the Qwen2.5-0.5B graph took 689.5 us against 635.5 us
# without it (call 3: 707.4 against 642.5), so it is opt-in.
# Each holds the fusions it replaces among its parts, so naming one of those turns it off too.
FUSIONS = {
    "rope_kv_write": (("rope", "kv_cache_write"), True),
    "silu_mul_linear": (("silu_and_mul", "linear"), False),
    "rmsnorm_linear": (("rmsnorm", "linear"), True),
    "rmsnorm_swiglu": (("rmsnorm", "linear", "silu_and_mul", "rmsnorm_linear"), True),
    "rmsnorm_qkv_rope": (("rmsnorm", "linear", "rope", "kv_cache_write", "rmsnorm_linear", "rope_kv_write"), True),
    "paged_decode_attention_linear": (("paged_decode_attention", "linear"), False),
}


class OpTable:
    """``table.<op name>(...)`` calls the implementation chosen for that op."""

    def __init__(self, backend: str, device: torch.device | str, overrides: dict[str, str] | None = None):
        self.backend = backend
        self.device = torch.device(device)
        self.overrides = dict(overrides or {})
        if backend in BACKENDS:
            # Fail at start-up with the reason (triton missing, or a CPU tensor without the interpreter),
            # not with every request of the first step finishing in error.
            check_backend(backend, self.device)
        for name, impl in self.overrides.items():
            if name not in ENGINE_OPS:
                raise ValueError(f"op override {name}={impl}: the engine uses no op {name!r}; "
                                 f"overridable ops: {', '.join(ENGINE_OPS)}")
            op = registry.get(name)
            if impl not in op.impls:
                raise ValueError(f"op override {name}={impl}: no implementation {impl!r} is registered for "
                                 f"{name!r}; registered: {', '.join(sorted(op.impls))}")
        self._resolved: dict[str, Callable] = {}

    def impl_name(self, name: str) -> str:
        return self.overrides.get(name, self.backend)

    def get(self, name: str) -> Callable:
        fn = self._resolved.get(name)
        if fn is None:
            fn = registry.resolve(name, self.impl_name(name), self.device)
            self._resolved[name] = fn
        return fn

    def __getattr__(self, name: str) -> Callable:
        if name.startswith("_") or name not in ENGINE_OPS:
            raise AttributeError(name)
        fn = self.get(name)
        # Cache as an instance attribute: later lookups skip __getattr__ (thousands per step).
        setattr(self, name, fn)
        return fn

    def mark_static(self, *tensors) -> None:
        """Declare model weights never written again, so that decode kernels may read them before their PDL
        wait (kernels/pdl.py); other objects (quantized blocks) are ignored."""
        pdl.mark_static(*(t for t in tensors if isinstance(t, torch.Tensor)))

    def fused(self, name: str) -> bool:
        """Whether the model should call the fused op ``name`` rather than its parts (see FUSIONS)."""
        parts, default = FUSIONS[name]
        return name in self.overrides or (default and not any(part in self.overrides for part in parts))

    def describe(self) -> dict[str, str]:
        """Op name -> chosen implementation name, for logs and ``stats()``."""
        return {name: self.impl_name(name) for name in ENGINE_OPS}
