"""The tensor-core W8A16 GEMV (``kernels/w8a16_mma_gemv.py``): the op's reference on random shapes, every
config, its split-K, its permuted k order and byte conversion on every byte value, ``w8a16_linear``'s dispatch
to it, validation, and large shapes on the GPU. Outputs are poisoned before the kernel writes them
(``run_case``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernels.quant_linear import W8A16_OP, w8a16_linear_reference
from kernels.testing import assert_close, run_case
from kernels.w8a16_mma_gemv import CONFIGS, w8a16_mma_linear

pytestmark = pytest.mark.linear_w8a16
IMPL = "w8a16_mma_gemv"


def test_is_selectable_as_an_implementation_of_the_op():
    assert W8A16_OP.impl(IMPL) is w8a16_mma_linear


@given(m=st.sampled_from([1, 2, 5, 16]), n=st.sampled_from([1, 17, 40, 70]), trips=st.sampled_from([1, 3]),
       dtype=st.sampled_from([torch.bfloat16, torch.float16]), bias=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_matches_the_reference(device, m, n, trips, dtype, bias, seed):
    run_case(W8A16_OP, {"M": m, "N": n, "K": 128 * trips, "dtype": dtype, "bias": bias}, device, seed=seed,
             impl=IMPL)


def test_every_config_computes_the_reference(device):
    # Autotuning tries each config only on the shapes a run meets; each, pinned, must be right.
    for i, cfg in enumerate(CONFIGS["cuda"]):
        case = {"M": (1, 16, 3)[i % 3], "N": 37 + 64 * i, "K": 384, "dtype": (torch.bfloat16, torch.float16)[i % 2],
                "bias": i % 2 == 0}
        inputs = W8A16_OP.make_inputs(case, torch.device(device), torch.Generator(device=device).manual_seed(i))
        got = w8a16_mma_linear(**inputs, config=cfg)
        want = w8a16_linear_reference(**{k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point()
                                         else v for k, v in inputs.items()})
        assert_close(got, want, dtype=case["dtype"], reduction_len=case["K"], what=f"{cfg} {case}")


def test_split_k_matches_the_reference_twice(device):
    # K long enough that the launch is split along K; twice: the first launch must re-arm the counters.
    from kernels._split_k import decode_split
    from kernels.w8a16_mma_gemv import PROGRAMS_PER_SM

    assert decode_split(3, 40, 32, 40 * 4096, torch.device(device), PROGRAMS_PER_SM)[0] > 1
    for seed in range(2):
        run_case(W8A16_OP, {"M": 3, "N": 40, "K": 4096, "dtype": torch.bfloat16, "bias": True}, device, seed=seed,
                 impl=IMPL)


def test_each_byte_value_in_each_position_meets_its_own_x(device):
    """Every int8 value, each at every k of a trip once: the byte conversion must be exact for all 256 values
    and the permuted k order must pair each byte with its own x."""
    k = 128
    x = torch.arange(1, k + 1, dtype=torch.float32, device=device)[None, :].to(torch.bfloat16) / 64
    values = torch.arange(-128, 128, device=device)
    q = torch.stack([values.roll(r)[:k] for r in range(0, 256, 7)]).to(torch.int8)  # [37, 128], every value
    q = torch.cat([q, values[k:][None, :].to(torch.int8)])
    s = torch.full((q.shape[0],), 0.5, device=device).to(torch.bfloat16)
    got = w8a16_mma_linear(x, q, s)
    want = w8a16_linear_reference(x.double(), q, s.double())
    assert_close(got, want, dtype=torch.bfloat16, reduction_len=k, what="every byte value")
    for j in range(0, k, 9):  # one nonzero weight: the pairing of k with x
        one = torch.zeros(2, k, dtype=torch.int8, device=device)
        one[1, j] = -77
        assert_close(w8a16_mma_linear(x, one, s[:2]), w8a16_linear_reference(x.double(), one, s[:2].double()),
                     dtype=torch.bfloat16, reduction_len=k, what=f"weight at k={j}")


def test_w8a16_linear_dispatches_its_middle_rows_here(device, monkeypatch):
    from kernels import quant_linear as ql
    from kernels import w8a16_mma_gemv
    from kernels.quant_pack import quantize_w8

    monkeypatch.setattr(ql, "W8_MMA_ROWS", range(3, 17))  # the mechanism; the shipped range may be empty
    calls = []
    launch = w8a16_mma_gemv.launch_mma_gemv
    monkeypatch.setattr(w8a16_mma_gemv, "launch_mma_gemv",
                        lambda *a, **k: calls.append(a[0].shape[0]) or launch(*a, **k))
    q, s = quantize_w8(torch.randn(40, 256, device=device))
    s = s.to(torch.bfloat16)
    for m in (1, 2, 3, 16, 17):
        x = torch.randn(m, 256, device=device).to(torch.bfloat16)
        want = w8a16_linear_reference(x.double(), q, s.double())
        assert_close(ql.w8a16_linear(x, q, s), want, dtype=torch.bfloat16, reduction_len=256, what=f"M={m}")
    assert calls == [m for m in (1, 2, 3, 16, 17) if m in ql.W8_MMA_ROWS] and 16 in calls
    before = len(calls)
    q2, s2 = quantize_w8(torch.randn(40, 200, device=device))  # K not a multiple of 128
    ql.w8a16_linear(torch.randn(5, 200, device=device).to(torch.bfloat16), q2, s2.to(torch.bfloat16))
    ql.w8a16_linear(torch.randn(5, 256, device=device).to(torch.bfloat16), q, s, config=ql.W8_CONFIGS["cuda"][0])
    monkeypatch.setattr(ql, "W8_MMA_ROWS", range(0))  # read at each launch
    ql.w8a16_linear(torch.randn(4, 256, device=device).to(torch.bfloat16), q, s)
    assert len(calls) == before


def test_empty_batch_and_rejected_inputs(device):
    from kernels.quant_pack import quantize_w8

    q, s = quantize_w8(torch.randn(16, 128, device=device))
    s = s.half()
    assert w8a16_mma_linear(torch.randn(0, 128, device=device).half(), q, s).shape == (0, 16)
    with pytest.raises(ValueError, match="1 to 16 rows"):
        w8a16_mma_linear(torch.randn(17, 128, device=device).half(), q, s)
    q2, s2 = quantize_w8(torch.randn(16, 96, device=device))
    with pytest.raises(ValueError, match="multiple of 128"):
        w8a16_mma_linear(torch.randn(2, 96, device=device).half(), q2, s2.half())
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        w8a16_mma_linear(torch.randn(2, 128, device=device), q, s)
    with pytest.raises(TypeError, match="int8"):
        w8a16_mma_linear(torch.randn(2, 128, device=device).half(), q.to(torch.uint8), s)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 5, 16])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_large_shapes_on_gpu(m, dtype, device):
    for n, k in [(4096, 4096), (14336, 4096), (4096, 14336), (4864, 896)]:
        run_case(W8A16_OP, {"M": m, "N": n, "K": k, "dtype": dtype, "bias": m == 16}, device, seed=n + k + m,
                 impl=IMPL)
