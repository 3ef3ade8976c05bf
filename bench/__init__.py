"""Benchmarks and checks: the sweep (``tritonforge bench``), the correctness check (``tritonforge check``),
the card's measured ceilings and the timing helper they share.

Nothing here imports triton at module import: ``bench.check`` must be able to switch Triton to its
interpreter first on a machine without a GPU.
"""
