"""pytest configuration for ``pytest bench/ --benchmark-only``: GPU-marked benchmarks skip with a reason
on a machine without a GPU (the test suite's own conftest lives in tests/ and does not apply here)."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="benchmarks need a CUDA or ROCm GPU; none is visible to torch here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
