"""Weight-only quantized linear layers beyond the generic property test: quantizer round-trip bounds,
the int4 packing contract, scale dtypes, strided x, input validation, and large bf16 shapes on the GPU."""

from __future__ import annotations

import pytest
import torch

from kernels.quant_linear import (
    W4A16_OP,
    W8A16_OP,
    w4a16_linear,
    w4a16_linear_reference,
    w8a16_linear,
    w8a16_linear_reference,
)
from kernels.quant_pack import dequantize_w4, pack_int4, quantize_w4, quantize_w8, unpack_int4
from kernels.testing import assert_close, run_case

pytestmark = pytest.mark.quant_linear


def _weight(n, k, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    # Rows of very different magnitude, and one row of a constant, exercise per-row/per-group scales.
    w = torch.randn(n, k, generator=gen) * torch.logspace(-3, 0, n)[:, None]
    w[0] = 0.25
    return w.to(dtype)


def test_pack_int4_nibble_order():
    q = torch.tensor([[1, 2, 15, 0], [7, 8, 3, 12]])
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[0x21, 0x0F], [0x87, 0xC3]]  # even k low nibble, odd k high nibble
    assert torch.equal(unpack_int4(packed), q.to(torch.int32))


def test_dequantize_w4_formula():
    # Two rows, K = 64, group 32: W[n, k] = (q[n, k] - zeros[g, n]) * scales[g, n], written out by hand.
    q = torch.arange(128).reshape(2, 64) % 16
    scales = torch.tensor([[0.5, 2.0], [0.25, 1.0]])  # [groups, N]
    zeros = torch.tensor([[8.0, 0.0], [3.0, 15.0]])
    w = dequantize_w4(pack_int4(q), scales, zeros, 32)
    assert w[0, 5].item() == (5 - 8) * 0.5
    assert w[1, 3].item() == ((64 + 3) % 16 - 0) * 2.0
    assert w[0, 40].item() == (40 % 16 - 3) * 0.25
    assert w[1, 63].item() == (127 % 16 - 15) * 1.0


def test_quantize_w8_round_trip_within_half_a_step():
    w = _weight(37, 300)
    q, s = quantize_w8(w)
    assert q.dtype == torch.int8 and s.shape == (37,)
    assert q.abs().max() <= 127
    err = (q.float() * s[:, None] - w).abs()
    assert (err <= 0.5 * s[:, None] * (1 + 1e-5)).all()
    assert torch.allclose(q[0].float() * s[0], w[0])  # a constant row is exact


@pytest.mark.parametrize("group", [32, 64, 128])
def test_quantize_w4_round_trip_within_half_a_step(group):
    w = _weight(19, 4 * group, seed=group)
    qweight, scales, zeros = quantize_w4(w, group)
    assert qweight.shape == (19, 2 * group) and scales.shape == zeros.shape == (4, 19)
    assert torch.equal(zeros, zeros.round()) and zeros.min() >= 0 and zeros.max() <= 15
    err = (dequantize_w4(qweight, scales, zeros, group) - w).abs()
    step = scales.T.repeat_interleave(group, dim=1)
    assert (err <= 0.5 * step * (1 + 1e-4) + 1e-7).all()
    # The range is what 4 bits can do: the error is a fraction of the weights, not of their max.
    assert err.max() < 0.07 * w.abs().max()


def test_quantize_w4_bf16_weight_error_bound():
    w = _weight(8, 256, dtype=torch.bfloat16)
    qweight, scales, zeros = quantize_w4(w, 128)
    assert scales.dtype == torch.bfloat16
    err = (dequantize_w4(qweight, scales.float(), zeros.float(), 128) - w.float()).abs()
    # bf16 scales are rounded before quantizing against them: at most one step off at the range's top.
    assert (err <= 1.0 * scales.float().T.repeat_interleave(128, dim=1) + 1e-6).all()


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16])
def test_scale_dtypes_and_strided_x(device, scale_dtype):
    gen = torch.Generator().manual_seed(1)
    w = (0.05 * torch.randn(45, 192, generator=gen)).to(device)
    big_x = torch.randn(3, 400, generator=gen).to(device=device, dtype=torch.bfloat16)
    x = big_x[:, 7:199]  # rows strided wider than K
    bias = torch.randn(45, generator=gen).to(device=device, dtype=torch.bfloat16)
    q8, s8 = quantize_w8(w.to(scale_dtype))
    got = w8a16_linear(x, q8, s8, bias)
    assert got.dtype == torch.bfloat16
    assert_close(got, w8a16_linear_reference(x.double(), q8, s8, bias), dtype=torch.bfloat16, reduction_len=192)
    q4, s4, z4 = quantize_w4(w.to(scale_dtype), 64)
    got = w4a16_linear(x, q4, s4, z4, 64, bias)
    assert_close(got, w4a16_linear_reference(x.double(), q4, s4, z4, 64, bias), dtype=torch.bfloat16,
                 reduction_len=192)


def test_kernel_is_not_the_reference_in_disguise(device):
    # A wrong zero point must be visible: the fused correction term is exercised by non-trivial zeros.
    w = (0.05 * torch.randn(33, 128, generator=torch.Generator().manual_seed(2)) + 0.02).to(device)
    q4, s4, z4 = quantize_w4(w, 32)
    assert z4.float().std() > 0.5
    x = torch.randn(2, 128, device=device).half()
    right = w4a16_linear(x, q4, s4, z4, 32)
    wrong = w4a16_linear(x, q4, s4, z4 + 1, 32)
    assert (right - wrong).abs().max() > 0.05


def test_empty_batch(device):
    q8, s8 = quantize_w8(torch.randn(16, 32, device=device))
    assert w8a16_linear(torch.randn(0, 32, device=device).half(), q8, s8.half()).shape == (0, 16)


def _w4_args(device, n=16, k=128, group=64):
    q, s, z = quantize_w4(torch.randn(n, k, device=device), group)
    return torch.randn(2, k, device=device).half(), q, s.half(), z.half(), group


def test_rejects_bad_inputs(device):
    q8, s8 = quantize_w8(torch.randn(16, 32, device=device))
    x = torch.randn(2, 32, device=device).half()
    with pytest.raises(ValueError, match="x has K=31 but the weight has K=32"):
        w8a16_linear(x[:, :31], q8, s8)
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        w8a16_linear(x.float(), q8, s8)
    with pytest.raises(TypeError, match="int8"):
        w8a16_linear(x, q8.to(torch.int16), s8)
    with pytest.raises(ValueError, match=r"scales must have shape \(16,\)"):
        w8a16_linear(x, q8, s8[:8])
    with pytest.raises(TypeError, match="scales must be one of"):
        w8a16_linear(x, q8, s8.to(torch.int32))
    x4, q, s, z, g = _w4_args(device)
    with pytest.raises(ValueError, match="group_size must be one of"):
        w4a16_linear(x4, q, s, z, 48)
    with pytest.raises(ValueError, match="group_size 128 does not divide K=192"):
        q192, s192, z192 = quantize_w4(torch.randn(16, 192, device=device), 64)
        w4a16_linear(torch.randn(2, 192, device=device).half(), q192, s192, z192, 128)
    with pytest.raises(ValueError, match=r"zeros must have shape \(2, 16\)"):
        w4a16_linear(x4, q, s, z[:1], g)
    with pytest.raises(ValueError, match="x has K=64 but the weight has K=128"):
        w4a16_linear(x4[:, :64], q, s, z, g)
    with pytest.raises(TypeError, match="uint8"):
        w4a16_linear(x4, q.to(torch.int8), s, z, g)
    with pytest.raises(ValueError, match="group_size must be one of"):
        quantize_w4(torch.randn(4, 96), 64)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["linear_w8a16", "linear_w4a16"])
@pytest.mark.parametrize("m", [1, 16, 300])
def test_large_bf16_shapes_on_gpu(name, m, device):
    op = {"linear_w8a16": W8A16_OP, "linear_w4a16": W4A16_OP}[name]
    for n, k in [(4096, 4096), (14336, 4096), (4096, 14336), (4113, 896)]:
        case = {"M": m, "N": n, "K": k, "dtype": torch.bfloat16, "bias": m == 16}
        if name == "linear_w4a16":
            case["group_size"] = 128
        run_case(op, case, device, seed=n + k + m)


@pytest.mark.parametrize("name", ["linear_w8a16", "linear_w4a16"])
def test_split_k_decode_matches_reference(name, device):
    # K long enough that the decode launch is split along K and reduced in-kernel.
    from kernels._split_k import decode_split

    op = {"linear_w8a16": W8A16_OP, "linear_w4a16": W4A16_OP}[name]
    case = {"M": 3, "N": 40, "K": 4096, "dtype": torch.bfloat16, "bias": True}
    if name == "linear_w4a16":
        case["group_size"] = 32
    weight_bytes = 40 * 4096 if name == "linear_w8a16" else 40 * 2048
    units = 8 if name == "linear_w8a16" else 32
    assert decode_split(3, 40, units, weight_bytes, torch.device(device))[0] > 1
    for seed in range(2):  # twice: the first launch must have re-armed the arrival counters
        run_case(op, case, device, seed=seed)



@pytest.mark.parametrize("sms", [4, 78, 108, 132, 304])
@pytest.mark.parametrize("units", [1, 7, 8, 12, 16, 28, 32, 112])
def test_split_plans_cover_every_unit_and_avoid_a_short_last_split(monkeypatch, sms, units):
    """Every unit in exactly one split; where a split count near the aim divides the units, all splits are
    equal; the partials' cap holds."""
    from kernels import _split_k

    monkeypatch.setattr(_split_k, "num_sms", lambda index=0: sms)
    for n in (896, 4096, 14336):
        weight_bytes = n * units * 512
        splits, per_split = _split_k.split_plan(1, n, units, weight_bytes, torch.device("cpu"))
        assert (splits - 1) * per_split < units <= splits * per_split
        assert splits <= max(1, weight_bytes // (4 * 8 * 4 * n))
        wanted = min(-(-2 * sms // -(-n // 128)), units)
        near = [c for c in range(max(1, -(-2 * wanted // 3)), 2 * wanted + 1) if units % c == 0]
        if near and splits <= weight_bytes // (4 * 8 * 4 * n) and units % per_split:
            pytest.fail(f"{units} units in {splits} splits of {per_split}: {near} would divide them evenly")


@pytest.mark.parametrize("name", ["linear_w8a16", "linear_w4a16"])
def test_every_gemv_config_computes_the_reference(name, device):
    # Autotuning tries only some configs in a given run; each shipped GEMV config, pinned, must be right.
    # K = 1408 groups and words do not fill whole trips (EVEN is false); the rows of x differ; each config
    # meets another M of 1..4 and, for W4, another group size.
    from kernels.quant_linear import W4_GEMV_CONFIGS, W8_GEMV_CONFIGS

    op = {"linear_w8a16": W8A16_OP, "linear_w4a16": W4A16_OP}[name]
    configs = (W4_GEMV_CONFIGS if name == "linear_w4a16" else W8_GEMV_CONFIGS)["cuda"]
    for i, cfg in enumerate(configs):
        case = {"M": 1 + i % 4, "N": 37, "K": 1408 if i % 2 else 1024, "dtype": torch.float16, "bias": i % 3 == 0}
        if name == "linear_w4a16":
            case["group_size"] = (32, 64, 128)[i % 3]
        impl = lambda cfg=cfg, **kw: op.triton(**kw, config=cfg)
        gen = torch.Generator(device=device).manual_seed(i)
        inputs = op.make_inputs(case, torch.device(device), gen)
        got = impl(**inputs)
        want = op.torch(**{k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                           for k, v in inputs.items()})
        assert_close(got, want, dtype=torch.float16, reduction_len=case["K"], what=f"{name} {cfg} {case}")


def _w4_decode_case(device, k, seed):
    gen = torch.Generator().manual_seed(seed)
    q, s, z = quantize_w4(0.05 * torch.randn(40, k, generator=gen), 128)
    x = torch.randn(4, k, generator=gen).to(torch.bfloat16)
    x[0, ::5] = 0  # zeros: the 8-byte path turns 16 x 0 into 2^-123, which must not show
    return x.to(device), q.to(device), s.to(device, torch.bfloat16), z.to(device, torch.bfloat16)


@pytest.mark.parametrize("k", [1024, 1408])
@pytest.mark.parametrize("name", ["linear_w8a16", "linear_w4a16"])
def test_gemv_reads_bf16_x_in_quads_with_the_same_arithmetic(device, monkeypatch, name, k):
    """bf16 x in 8-byte loads of four values and in 2-byte loads give the same bits on rows of normal-sized
    values, zeros among them: only the loads differ. K = 1408 leaves a partial trip (masked loads)."""
    from kernels import quant_linear as ql

    x, q, s, z = _w4_decode_case(device, k, seed=k)
    x = x[:3]
    if name == "linear_w8a16":
        q, s8 = quantize_w8(0.05 * torch.randn(40, k, generator=torch.Generator().manual_seed(k)))
        q, s = q.to(device), s8.to(device, torch.bfloat16)
        launch = lambda: w8a16_linear(x, q, s)
        want = w8a16_linear_reference(x.double(), q, s.double())
    else:
        launch = lambda: w4a16_linear(x, q, s, z, 128)
        want = w4a16_linear_reference(x.double(), q, s.double(), z.double(), 128)
    assert ql.x_quads(x) and not ql.x_quads(x[:, 1:])
    quads = launch()
    monkeypatch.setattr(ql, "x_quads", lambda x: False)
    assert torch.equal(quads, launch())
    assert_close(quads, want, dtype=torch.bfloat16, reduction_len=k)


def test_w4_gemv_row_does_not_depend_on_the_rows_decoded_with_it(device):
    # M = 1, 2 and 3 compile ROWS = 1, 2 and 4 and share one tuned config and split: a row's bits must agree.
    x, q, s, z = _w4_decode_case(device, 2048, seed=3)
    alone = w4a16_linear(x[:1], q, s, z, 128)
    for m in (2, 3, 4):
        assert torch.equal(w4a16_linear(x[:m], q, s, z, 128)[:1], alone), f"row 0 differs at M={m}"


def test_w8_gemv_row_limit_is_read_at_each_launch(device, monkeypatch):
    from kernels import quant_linear as ql

    seen, real = [], ql.launcher
    monkeypatch.setattr(ql, "launcher", lambda tuned, config: seen.append(tuned) or real(tuned, config))
    q, s = quantize_w8(torch.randn(24, 128, device=device))
    s, x = s.to(torch.bfloat16), torch.randn(3, 128, device=device).to(torch.bfloat16)
    for most in (4, 0):  # the FMA GEMV, then the tensor-core tiles
        monkeypatch.setattr(ql, "W8_GEMV_MAX_M", most)
        assert_close(ql.w8a16_linear(x, q, s), w8a16_linear_reference(x.double(), q, s.double()),
                     dtype=torch.bfloat16, reduction_len=128, what=f"W8_GEMV_MAX_M={most}")
    assert seen == [ql._w8a16_gemv, ql._w8a16]
