"""The tensor-core W4A16 GEMV variant (``kernels/w4a16_mma_gemv.py``): the op's reference on random shapes,
every config, its split-K, its permuted k order with a non-trivial zero point, ``w4a16_linear``'s dispatch
to it, the element-wise path of ROCm, validation, and large shapes on the GPU. Outputs are poisoned before
the kernel writes them (``run_case``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernels.device import interpreting
from kernels.quant_linear import W4A16_OP, w4a16_linear_reference
from kernels.quant_pack import quantize_w4
from kernels.testing import assert_close, run_case
from kernels.w4a16_mma_gemv import CONFIGS, w4a16_mma_linear

pytestmark = pytest.mark.linear_w4a16
IMPL = "w4a16_mma_gemv"


def test_is_selectable_as_an_implementation_of_the_op():
    assert W4A16_OP.impl(IMPL) is w4a16_mma_linear


@given(m=st.sampled_from([1, 2, 5, 16]), n=st.sampled_from([1, 17, 40, 70]), groups=st.sampled_from([1, 3]),
       group=st.sampled_from([32, 64, 128]), dtype=st.sampled_from([torch.bfloat16, torch.float16]),
       bias=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_matches_the_reference(device, m, n, groups, group, dtype, bias, seed):
    case = {"M": m, "N": n, "K": groups * group, "dtype": dtype, "bias": bias, "group_size": group}
    run_case(W4A16_OP, case, device, seed=seed, impl=IMPL)


def test_every_config_computes_the_reference(device):
    # Autotuning tries each config only on the shapes a run meets; each, pinned, must be right.
    for i, cfg in enumerate(CONFIGS["cuda"]):
        case = {"M": (1, 16, 3)[i % 3], "N": 37 + 64 * i, "K": 384, "dtype": (torch.bfloat16, torch.float16)[i % 2],
                "bias": i % 2 == 0, "group_size": (32, 64, 128)[i % 3]}
        inputs = W4A16_OP.make_inputs(case, torch.device(device), torch.Generator(device=device).manual_seed(i))
        got = w4a16_mma_linear(**inputs, config=cfg)
        want = w4a16_linear_reference(**{k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point()
                                         else v for k, v in inputs.items()})
        assert_close(got, want, dtype=case["dtype"], reduction_len=case["K"], what=f"{cfg} {case}")


def test_split_k_matches_the_reference_twice(device):
    # K long enough that the launch is split along K; twice: the first launch must re-arm the counters.
    from kernels._split_k import decode_split

    assert decode_split(3, 40, 32, 40 * 2048, torch.device(device))[0] > 1
    for seed in range(2):
        run_case(W4A16_OP, {"M": 3, "N": 40, "K": 4096, "dtype": torch.bfloat16, "bias": True, "group_size": 32},
                 device, seed=seed, impl=IMPL)


def test_each_weight_meets_its_own_x_in_the_permuted_order(device):
    """One nonzero weight at a time, in every position of a group: the permuted k order must pair each nibble
    with its own x, and a zero point must be subtracted from the right sums."""
    group, n = 32, 2
    x = torch.arange(1, group + 1, dtype=torch.float32, device=device)[None, :].to(torch.bfloat16)
    for k in range(group):
        w = torch.zeros(n, group, device=device)
        w[1, k] = 1.0
        q, s, z = quantize_w4(w, group)
        got = w4a16_mma_linear(x, q, s.to(torch.bfloat16), z.to(torch.bfloat16), group)
        want = w4a16_linear_reference(x.double(), q, s.double(), z.double(), group)
        assert_close(got, want, dtype=torch.bfloat16, reduction_len=group, what=f"weight at k={k}")


def test_empty_batch_and_rejected_inputs(device):
    q, s, z = quantize_w4(torch.randn(16, 128, device=device), 64)
    s, z = s.half(), z.half()
    assert w4a16_mma_linear(torch.randn(0, 128, device=device).half(), q, s, z, 64).shape == (0, 16)
    with pytest.raises(ValueError, match="1 to 16 rows"):
        w4a16_mma_linear(torch.randn(17, 128, device=device).half(), q, s, z, 64)
    with pytest.raises(ValueError, match="K=64"):
        w4a16_mma_linear(torch.randn(2, 64, device=device).half(), q, s, z, 64)
    with pytest.raises(ValueError, match="group_size"):
        w4a16_mma_linear(torch.randn(2, 128, device=device).half(), q, s, z, 48)
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        w4a16_mma_linear(torch.randn(2, 128, device=device), q, s, z, 64)


def test_w4a16_linear_dispatches_its_middle_rows_here(device, monkeypatch):
    from kernels import quant_linear as ql
    from kernels import w4a16_mma_gemv

    calls = []
    launch = w4a16_mma_gemv.launch_mma_gemv
    monkeypatch.setattr(w4a16_mma_gemv, "launch_mma_gemv",
                        lambda *a, **k: calls.append(a[0].shape[0]) or launch(*a, **k))
    q, s, z = quantize_w4(torch.randn(40, 256, device=device), 128)
    s, z = s.to(torch.bfloat16), z.to(torch.bfloat16)
    for m in (1, 2, 3, 16, 17):
        x = torch.randn(m, 256, device=device).to(torch.bfloat16)
        want = w4a16_linear_reference(x.double(), q, s.double(), z.double(), 128)
        assert_close(ql.w4a16_linear(x, q, s, z, 128), want, dtype=torch.bfloat16, reduction_len=256, what=f"M={m}")
    ql.w4a16_linear(torch.randn(5, 256, device=device).to(torch.bfloat16), q, s, z, 128,
                    config=ql.W4_CONFIGS["cuda"][0])  # a pinned config: the kernel it names
    x5 = torch.randn(5, 256, device=device).to(torch.bfloat16)
    for s2, z2 in ((s.float(), z), (s, z.half())):  # scales or zeros not in x's dtype: not timed here
        want = w4a16_linear_reference(x5.double(), q, s2.double(), z2.double(), 128)
        assert_close(ql.w4a16_linear(x5, q, s2, z2, 128), want, dtype=torch.bfloat16, reduction_len=256)
    assert calls == [m for m in (1, 2, 3, 16, 17) if m in ql.W4_MMA_ROWS] and 16 in calls
    monkeypatch.setattr(ql, "W4_MMA_ROWS", range(0))  # read at each launch
    before = len(calls)
    ql.w4a16_linear(torch.randn(4, 256, device=device).to(torch.bfloat16), q, s, z, 128)
    assert len(calls) == before


def test_scales_and_zeros_in_float32(device):
    # A selectable implementation takes scales and zeros in any float dtype; they are cast to x's dtype in
    # the kernel (w4a16_linear dispatches only the x-dtype case here).
    for i, group in enumerate((32, 64, 128)):
        case = {"M": 3 + i, "N": 40, "K": 2 * group, "dtype": torch.bfloat16, "bias": i == 1, "group_size": group,
                "scale_dtype": torch.float32}
        run_case(W4A16_OP, case, device, seed=i, impl=IMPL)


def test_element_wise_dequantization_of_other_backends(device, monkeypatch):
    # The ROCm path (plain 16-bit arithmetic instead of inline PTX) checked in fp16, which the interpreter
    # computes correctly.
    from kernels import w4a16_mma_gemv

    if not interpreting():
        pytest.skip("the interpreter forces the mode here; on a GPU the mode is the device's")
    monkeypatch.setattr(w4a16_mma_gemv, "_mode", lambda: 2)
    for seed in range(2):
        run_case(W4A16_OP, {"M": 3, "N": 40, "K": 256, "dtype": torch.float16, "bias": True, "group_size": 64},
                 device, seed=seed, impl=IMPL)


@pytest.mark.gpu
@pytest.mark.parametrize("m", [1, 5, 16])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_large_shapes_on_gpu(m, dtype, device):
    for n, k in [(4096, 4096), (14336, 4096), (4096, 14336), (4113, 896)]:
        case = {"M": m, "N": n, "K": k, "dtype": dtype, "bias": m == 16, "group_size": 128}
        run_case(W4A16_OP, case, device, seed=n + k + m, impl=IMPL)


@pytest.mark.gpu
@pytest.mark.parametrize("group", [32, 64])
@pytest.mark.parametrize("scale_dtype", [None, torch.float32])
def test_other_groups_and_float32_scales_on_gpu(group, scale_dtype, device):
    for m in (1, 5, 16):
        for n, k in [(4096, 4096), (4113, 896)]:
            case = {"M": m, "N": n, "K": k, "dtype": torch.bfloat16, "bias": m == 5, "group_size": group,
                    "scale_dtype": scale_dtype}
            run_case(W4A16_OP, case, device, seed=n + k + m + group, impl=IMPL)
