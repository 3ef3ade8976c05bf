"""Running a ``bench.aot_*`` module (Triton compiling for sm_90 without a GPU) from a test."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def run_sm90(*module_args: str) -> subprocess.CompletedProcess:
    """``python -m <module_args>`` in a subprocess without TRITON_INTERPRET (this process interprets, and
    Triton would interpret there too); skips, with the reason, where Triton cannot compile for sm_90."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    probe = subprocess.run([sys.executable, "-c", "from bench.aot_quant import available; print(available() or '')"],
                           env=env, capture_output=True, text=True)
    if probe.returncode or probe.stdout.strip():
        pytest.skip(f"cannot compile for sm_90 here: {probe.stdout.strip() or probe.stderr[-300:]}")
    return subprocess.run([sys.executable, "-m", *module_args], env=env, capture_output=True, text=True, timeout=600)
