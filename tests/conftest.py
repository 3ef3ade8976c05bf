"""Test configuration: interpreter on CPU-only machines, hypothesis profiles, GPU and per-op markers.

This file runs before any test module imports triton, which is what lets it switch Triton to its CPU
interpreter (``TRITON_INTERPRET=1``) when no GPU is present. With a GPU, kernels compile for it.
"""

from __future__ import annotations

import os

import torch

GPU = torch.cuda.is_available()
if not GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Tests check results: autotuned kernels launch their first config untimed (kernels.tuning), as in the
# interpreter. The configs the autotuner picks are checked where they are picked: the sweep (which always
# autotunes what it times) checks its first timed case of every op against the reference.
os.environ.setdefault("TRITONFORGE_TUNE", "first")

import pytest  # noqa: E402  (after the interpreter switch on purpose)
from hypothesis import HealthCheck, settings  # noqa: E402  (after the interpreter switch on purpose)

settings.register_profile(
    "cpu", max_examples=6, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "gpu", max_examples=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("TRITONFORGE_PROFILE", "gpu" if GPU else "cpu")
settings.load_profile(PROFILE)


def pytest_configure(config):
    from kernels import registry

    for op in registry.all_ops():
        config.addinivalue_line("markers", f"{op.name}: the {op.name} op")


def pytest_collection_modifyitems(config, items):
    if GPU:
        return
    skip = pytest.mark.skip(reason="needs a CUDA or ROCm GPU; none is visible to torch here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if GPU else "cpu")


@pytest.fixture(scope="session")
def profile() -> str:
    return PROFILE
