"""tritonforge kernels: Triton kernels for LLM inference, each with a pure-torch reference.

Importing this package never touches a GPU. Look ops up through :mod:`kernels.registry`::

    from kernels import registry
    rmsnorm = registry.resolve("rmsnorm", backend="triton", device="cuda")
"""
