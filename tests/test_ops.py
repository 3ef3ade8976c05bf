"""Every registered op against its reference, on fresh random inputs drawn by hypothesis.

Generic over the registry: a new kernel module is tested here as soon as it registers. Every dtype an op
declares runs here, in the interpreter too: kernels whose bf16 ``tl.dot`` the interpreter cannot compute
upcast those operands there (their ``UPCAST`` flag) rather than leaving the dtype to the GPU.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels import registry
from kernels.testing import run_case

OPS = registry.all_ops()


def _param(op):
    return pytest.param(op, id=op.name, marks=getattr(pytest.mark, op.name))


@pytest.mark.parametrize("op", [_param(op) for op in OPS])
def test_op_matches_reference(op, device, profile):
    cases = op.cases(profile)

    @given(case=cases, seed=st.integers(0, 2**31 - 1))
    def check(case, seed):
        run_case(op, case, device, seed)

    check()


@pytest.mark.parametrize("op", [_param(op) for op in OPS])
def test_smoke_cases(op, device):
    for i, case in enumerate(op.smoke_cases()):
        run_case(op, case, device, seed=i)


@pytest.mark.parametrize("op", [_param(op) for op in OPS])
def test_registration_is_complete(op):
    assert op.smoke_cases(), f"{op.name} declares no smoke cases"
    assert op.bench_cases(), f"{op.name} declares no benchmark cases"
    for case in op.bench_cases()[:3]:
        assert op.bytes(case) > 0 and op.flops(case) >= 0
