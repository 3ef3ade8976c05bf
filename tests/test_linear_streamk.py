"""The stream-K linear: every way the K-iteration ranges can fall on the tiles, the arrival counters, races.

Small explicit tiles (16 x 16 x 16) and a small program count P stand in for 128 x 256 tiles on 132 SMs,
so that the interpreter reaches each case of kernels/linear_streamk.py: no stream-K phase (tiles a
multiple of P), fewer tiles than programs (many contributors per tile), one to two waves split, ranges
that start or end inside a tile, K not a multiple of BLOCK_K, more programs than K-iterations.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernels import alloc
from kernels._split_k import _COUNTERS
from kernels.linear import linear
from kernels.linear_streamk import linear_streamk_2d
from kernels.testing import assert_close
from tests.linear_helpers import expected, operands

pytestmark = pytest.mark.linear

TILE = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, GROUP_M=2, num_warps=4, num_stages=2, FLATTEN=False)


def _tiles(M, N):
    return -(-M // 16) * -(-N // 16)


@pytest.mark.parametrize("M,N,K,programs", [
    (64, 48, 40, 4),    # 12 tiles on 4 programs: whole waves, no stream-K phase
    (70, 51, 40, 3),    # 20 tiles on 3, 3 iterations a tile: the 2 tiles of the partial wave go whole to 2 programs
    (70, 51, 300, 3),   # 19 iterations a tile: those 2 tiles cut among all 3 programs, ranges end inside tiles
    (70, 51, 300, 7),   # 6 partial-wave tiles on 7 programs
    (64, 64, 300, 3),   # 1 tile split 3 ways, then 5 whole rounds
    (33, 33, 100, 7),   # 9 tiles on 7: 2 tiles among 4 programs (7 iterations, the last one short), 3 idle
    (16, 20, 300, 5),   # 2 tiles, fewer than the programs: each cut among 2-3 of them
    (5, 9, 200, 9),     # 1 tile of 13 iterations among 3 programs, 6 with nothing to do
    (3, 5, 20, 8),      # 1 tile of 2 iterations: one program takes it whole
])
@pytest.mark.parametrize("fixup_iters", [0, 12])  # split every partial wave / only where it pays
def test_every_partition_computes_the_product(M, N, K, programs, fixup_iters, device):
    x, w, b = operands(M, N, K, device, seed=M + programs)
    with alloc.poisoned():  # output and workspace: a slot read before it is written gives NaN
        y = linear_streamk_2d(x, w, b, config=TILE, programs=programs, fixup_iters=fixup_iters)
    assert_close(y, expected(x, w, b), dtype=torch.float32, reduction_len=K)
    with alloc.poisoned():
        y = linear_streamk_2d(x, w, None, config=TILE, programs=programs, fixup_iters=fixup_iters)
    assert_close(y, expected(x, w), dtype=torch.float32, reduction_len=K)


@given(M=st.integers(1, 80), N=st.integers(1, 60), K=st.integers(1, 120), programs=st.integers(1, 9))
def test_any_shape_and_program_count(M, N, K, programs, device):
    x, w, b = operands(M, N, K, device, seed=K)
    with alloc.poisoned():
        y = linear_streamk_2d(x, w, b, config=TILE, programs=programs, fixup_iters=0)
    assert_close(y, expected(x, w, b), dtype=torch.float32, reduction_len=K)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype, device):
    x, w, b = operands(40, 50, 70, device, dtype=dtype, seed=4)
    with alloc.poisoned():
        y = linear_streamk_2d(x, w, b, config=TILE, programs=5, fixup_iters=0)
    assert_close(y, expected(x, w, b), dtype=dtype, reduction_len=70)


def test_counters_rearmed_and_result_deterministic(device):
    """Split tiles leave their arrival counters at zero, so the next launch sums the same way."""
    M, N, K, programs = 70, 51, 300, 7
    assert _tiles(M, N) % programs  # a stream-K phase exists
    x, w, b = operands(M, N, K, device, seed=9)
    first = linear_streamk_2d(x, w, b, config=TILE, programs=programs, fixup_iters=0)
    counters = [t for key, t in _COUNTERS.items() if key[0] == device.type]
    assert counters and all(int(t.abs().sum()) == 0 for t in counters)
    assert torch.equal(linear_streamk_2d(x, w, b, config=TILE, programs=programs, fixup_iters=0), first)


def test_dispatch_entry_point_runs_it(device):
    x, w, b = operands(17, 70, 33, device, seed=2)
    with alloc.poisoned():
        y = linear(x, w, b, variant="streamk")
    assert_close(y, expected(x, w, b), dtype=torch.float32, reduction_len=33)


@pytest.mark.gpu
@pytest.mark.parametrize("M,N,K", [(4096, 4608, 3584), (2048, 4608, 3584), (4096, 3584, 3584), (200, 4096, 4096)])
@pytest.mark.parametrize("fixup_iters", [0, None])
def test_real_shapes_have_no_race_gpu(M, N, K, fixup_iters, device):
    """Shapes whose tiles leave a partial wave (and M = 200: fewer tiles than SMs, each cut several
    ways): right against the reference, and the same bits over repeated runs."""
    x, w, b = operands(M, N, K, device, dtype=torch.bfloat16, seed=M)
    kw = {} if fixup_iters is None else dict(fixup_iters=fixup_iters)
    with alloc.poisoned():
        first = linear_streamk_2d(x, w, b, **kw)
    assert_close(first, expected(x, w, b), dtype=torch.bfloat16, reduction_len=K)
    for _ in range(10):
        with alloc.poisoned():
            again = linear_streamk_2d(x, w, b, **kw)
        assert torch.equal(again, first), "stream-K result changed between identical runs (a race)"
