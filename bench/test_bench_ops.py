"""pytest-benchmark view of every registered op: kernel, reference and baseline on a couple of bench cases.

Collected only when asked for (``testpaths`` is ``tests``)::

    PYTHONPATH=. python3 -m pytest bench/ --benchmark-only --benchmark-group-by=param:case_id

pytest-benchmark reads a host clock, so each round ends with a device synchronize; for device-event
medians and % of the card's ceiling use ``tritonforge bench``. GPU-marked: skipped with a reason elsewhere.
"""

from __future__ import annotations

import pytest
import torch

from bench.report import dtype_name, shape_string
from kernels import registry

CASES_PER_OP = 2


def _params():
    for op in registry.all_ops():
        cases = op.bench_cases()
        picks = [cases[len(cases) // 3], cases[-1]][:CASES_PER_OP] if cases else []
        impls = ["triton", "torch"] + (["baseline"] if op.baseline is not None else [])
        for i, case in enumerate(picks):
            for impl in impls:
                case_id = f"{op.name}[{dtype_name(case['dtype'])} {shape_string(case)}]"
                yield pytest.param(op, case, impl, case_id, id=f"{op.name}-{i}-{impl}")


@pytest.mark.gpu
@pytest.mark.parametrize("op, case, impl, case_id", list(_params()))
def test_bench(benchmark, op, case, impl, case_id):
    device = torch.device("cuda")
    inputs = op.make_inputs(case, device, torch.Generator(device=device).manual_seed(0))
    fn = op.baseline if impl == "baseline" else op.impl(impl)

    def call():
        fn(**inputs)
        torch.cuda.synchronize()

    call()  # compile and autotune outside the measurement
    benchmark.extra_info.update(op=op.name, impl=impl, case=case_id, bytes=op.bytes(case), flops=op.flops(case))
    benchmark.pedantic(call, rounds=20, iterations=5, warmup_rounds=2)
