"""The Triton GGUF kernels against the ``gguf`` package and the torch reference: dequantization of
blocks the gguf package quantized, the fused decode matmul in every x dtype, the dense prefill path,
unaligned buffers, input validation, and large bf16 shapes on the GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels import gguf_formats as gf
from kernels.gguf_dequant import GGUF_DEQUANTIZE_OP, gguf_dequantize
from kernels.gguf_linear import DECODE_MAX_M, GGUF_LINEAR_OP, gguf_linear, gguf_linear_reference
from kernels.testing import assert_close, run_case

pytestmark = pytest.mark.gguf

SIMPLE = [gf.Q8_0, gf.Q4_0, gf.Q4_1, gf.Q5_0, gf.Q5_1]
ALL = sorted(gf.GGUF_SUPPORTED)


@pytest.mark.parametrize("qtype", SIMPLE, ids=gf.qtype_name)
def test_triton_dequantize_matches_gguf_package(qtype, device):
    gguf = pytest.importorskip("gguf")
    w = np.random.default_rng(qtype).standard_normal((5, 96)).astype(np.float32)
    data = gguf.quants.quantize(w, gguf.GGMLQuantizationType(qtype))
    expected = torch.from_numpy(gguf.quants.dequantize(data, gguf.GGMLQuantizationType(qtype)))
    got = gguf_dequantize(torch.from_numpy(data).to(device), qtype, torch.float32)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("qtype", ALL, ids=gf.qtype_name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_dequantize_matches_reference(qtype, dtype, device):
    data = gf.random_blocks(qtype, 7, 2 * gf.block_size(qtype), generator=torch.Generator().manual_seed(qtype))
    ref = gf.gguf_dequantize_reference(data, qtype, torch.float32)
    got = gguf_dequantize(data.to(device), qtype, dtype).cpu()
    assert got.dtype == dtype
    assert_close(got, ref, dtype=dtype)


def test_unaligned_blocks_are_handled(device):
    data = gf.random_blocks(gf.Q4_0, 3, 64, generator=torch.Generator().manual_seed(4)).to(device)
    buf = torch.empty(data.numel() + 1, dtype=torch.uint8, device=device)
    buf[1:] = data.flatten()
    odd = buf[1:].view(3, -1)  # f16 fields at odd addresses
    assert odd.data_ptr() % 2 == 1
    torch.testing.assert_close(gguf_dequantize(odd, gf.Q4_0), gguf_dequantize(data, gf.Q4_0))
    x = torch.randn(1, 64, device=device).half()
    torch.testing.assert_close(gguf_linear(x, odd, gf.Q4_0), gguf_linear(x, data, gf.Q4_0))


@pytest.mark.parametrize("qtype", ALL, ids=gf.qtype_name)
@pytest.mark.parametrize("m", [1, DECODE_MAX_M + 3])  # the fused decode kernel, then the dense path
def test_linear_fp32_odd_rows(qtype, m, device):
    gen = torch.Generator().manual_seed(m + qtype)
    data = gf.random_blocks(qtype, 23, 2 * gf.block_size(qtype), generator=gen).to(device)
    x = torch.randn(m, 2 * gf.block_size(qtype), generator=gen).to(device)
    bias = torch.randn(23, generator=gen).to(device)
    got = gguf_linear(x, data, qtype, bias)
    assert got.shape == (m, 23) and got.dtype == torch.float32
    ref = gguf_linear_reference(x.double(), data, qtype, bias.double())
    assert_close(got, ref, dtype=torch.float32, reduction_len=x.shape[1], tf32=True)


def test_linear_output_depends_on_every_block(device):
    # Changing one byte of the last block of one row changes that output and only that one.
    data = gf.random_blocks(gf.Q4_K, 17, 512, generator=torch.Generator().manual_seed(9)).to(device)
    x = torch.randn(1, 512, device=device).half()
    before = gguf_linear(x, data, gf.Q4_K)
    data[5, -1] ^= 0xFF
    after = gguf_linear(x, data, gf.Q4_K)
    changed = ((after - before).abs() > 0).flatten().nonzero().flatten().tolist()
    assert changed == [5]


def test_rejects_bad_inputs(device):
    data = gf.random_blocks(gf.Q4_0, 4, 64).to(device)
    x = torch.randn(1, 64, device=device).half()
    with pytest.raises(gf.UnsupportedQuantType, match=r"type 10 is not supported; supported types: .*Q6_K \(14\)"):
        gguf_linear(x, data, 10)
    with pytest.raises(gf.UnsupportedQuantType, match="supported types"):
        gguf_dequantize(data, 0)  # F32 is not a block format
    with pytest.raises(ValueError, match="whole number of 18-byte blocks, got 35 bytes"):
        gguf_linear(x, data[:, :35], gf.Q4_0)
    with pytest.raises(ValueError, match=r"x must be \[M, K=64\]"):
        gguf_linear(x[:, :32], data, gf.Q4_0)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        gguf_linear(x.to(torch.int32), data, gf.Q4_0)
    with pytest.raises(TypeError, match="uint8"):
        gguf_linear(x, data.to(torch.int8), gf.Q4_0)
    with pytest.raises(ValueError, match=r"bias must be a float tensor of shape \(4,\)"):
        gguf_linear(x, data, gf.Q4_0, torch.zeros(5, device=device))
    with pytest.raises(TypeError, match="dtype must be one of"):
        gguf_dequantize(data, gf.Q4_0, torch.int8)


@pytest.mark.gpu
@pytest.mark.parametrize("qtype", ALL, ids=gf.qtype_name)
def test_large_bf16_shapes_on_gpu(qtype, device):
    linear, dequant = GGUF_LINEAR_OP, GGUF_DEQUANTIZE_OP
    for n, k in [(4096, 4096), (4113, 14336)]:
        for m in (1, 4, 16, 64):
            run_case(linear, {"M": m, "N": n, "K": k, "qtype": qtype, "dtype": torch.bfloat16, "bias": m == 4},
                     device, seed=m + n)
        run_case(dequant, {"N": n, "K": k, "qtype": qtype, "dtype": torch.bfloat16}, device, seed=n)


@pytest.mark.parametrize("qtype", ALL, ids=gf.qtype_name)
def test_split_k_decode_matches_reference(qtype, device):
    # K long enough that the decode launch is split along K and reduced in-kernel.
    from kernels._split_k import decode_split

    fmt = gf.block_format(qtype)
    per_unit = 1 if fmt.block_size == 256 else 4
    K = 2048
    units = -(-K // fmt.block_size // per_unit)
    assert decode_split(2, 24, units, 24 * gf.gguf_row_bytes(qtype, K), torch.device(device))[0] > 1
    for seed in range(2):  # twice: the first launch must have re-armed the arrival counters
        run_case(GGUF_LINEAR_OP, {"M": 2, "N": 24, "K": K, "qtype": qtype, "dtype": torch.float16, "bias": True},
                 device, seed=seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_q4_0_gemv_pair_and_halfword_paths(dtype, device):
    # Rows of an even number of blocks are read as pairs in 4-byte words, odd ones as 2-byte words; both
    # against the reference at M = 1, 2 and 4 with a bias, K long enough that the launch is split along K.
    from kernels import gguf_linear as gl
    from kernels._gguf_gemv import q4_0_gemv_kernel, q4_0_pair_gemv_kernel
    from kernels._split_k import decode_split

    gen = torch.Generator().manual_seed(11)
    N = 24
    for K, kernel in ((60 * 32, q4_0_pair_gemv_kernel), (61 * 32, q4_0_gemv_kernel)):
        data = gf.random_blocks(gf.Q4_0, N, K, generator=gen).to(device)
        units = -(-K // 32 // 4)
        assert decode_split(4, N, units, data.numel(), torch.device(device))[0] > 1
        bias = torch.randn(N, generator=gen).to(device, dtype)
        for m in (1, 2, 4):
            x = torch.randn(m, K, generator=gen).to(device, dtype)
            assert gl._gemv(gf.Q4_0, x, data, None).tuned.kernel is kernel
            got = gguf_linear(x, data, gf.Q4_0, bias)
            ref = gguf_linear_reference(x.double(), data, gf.Q4_0, bias.double())
            assert_close(got, ref, dtype=dtype, reduction_len=K)



def test_q4_0_gemv_8_block_groups(device):
    # Rows of a multiple of 8 blocks with bf16 x (fp16 up to TILES.fp16_most_rows rows), 4-byte aligned, take the
    # 16-byte group kernel; against the reference at M = 1, 2 and 4 with a bias, split along K. x rows that
    # are not 4-byte aligned, and fp16 at more rows, take the pair kernel, with the same results.
    from kernels import gguf_linear as gl
    from kernels._gguf_gemv import q4_0_pair_gemv_kernel
    from kernels._q4_0_group_gemv import TILES, q4_0_group_gemv_kernel
    from kernels._split_k import decode_split

    gen = torch.Generator().manual_seed(12)
    N, K = 24, 1024
    data = gf.random_blocks(gf.Q4_0, N, K, generator=gen).to(device)
    assert decode_split(4, N, K // 256, data.numel(), torch.device(device))[0] > 1
    bias = torch.randn(N, generator=gen).to(device)
    cases = [(torch.bfloat16, m, 0, q4_0_group_gemv_kernel) for m in (1, 2, 4)]
    cases += [(torch.float16, TILES.fp16_most_rows, 0, q4_0_group_gemv_kernel),
              (torch.float16, TILES.fp16_most_rows + 1, 0, q4_0_pair_gemv_kernel),
              (torch.bfloat16, 2, 1, q4_0_pair_gemv_kernel)]  # x rows starting 2 bytes past a word
    for dtype, m, shift, kernel in cases:
        x = torch.randn(m, K + shift, generator=gen).to(device, dtype)[:, shift:]
        assert gl._gemv(gf.Q4_0, x, data, None).tuned.kernel is kernel
        got = gguf_linear(x, data, gf.Q4_0, bias.to(dtype))
        ref = gguf_linear_reference(x.double(), data, gf.Q4_0, bias.to(dtype).double())
        assert_close(got, ref, dtype=dtype, reduction_len=K)


def test_q4_0_group_gemv_rows_do_not_depend_on_the_batch(device):
    # Each row count tunes its own tile, and every tile sums a row in the same order: a row's output is
    # bitwise the same decoded alone or with one or three others.
    gen = torch.Generator().manual_seed(13)
    N, K = 40, 512
    data = gf.random_blocks(gf.Q4_0, N, K, generator=gen).to(device)
    x = torch.randn(4, K, generator=gen).to(device, torch.bfloat16)
    four = gguf_linear(x, data, gf.Q4_0)
    for m in (1, 2):
        for r in range(0, 4, m):
            torch.testing.assert_close(gguf_linear(x[r:r + m], data, gf.Q4_0), four[r:r + m], rtol=0, atol=0)


def test_q4_k_gemv_super_blocks(device):
    # Q4_K with bf16 x (fp16 up to TILES.fp16_most_rows rows) and 4-byte aligned rows takes the 16-byte
    # super-block kernel; against the reference at M = 1, 2 and 4 with a bias, split along K. x rows that are
    # not 4-byte aligned, and fp16 at more rows, take the 4-byte word kernel, with the same results.
    from kernels import gguf_linear as gl
    from kernels._gguf_gemv import q4_k_gemv_kernel
    from kernels._q4_k_group_gemv import PROGRAMS_PER_SM, TILES, q4_k_group_gemv_kernel
    from kernels._split_k import decode_split

    gen = torch.Generator().manual_seed(14)
    N, K = 24, 1024
    data = gf.random_blocks(gf.Q4_K, N, K, generator=gen).to(device)
    assert decode_split(4, N, K // 256, data.numel(), torch.device(device), PROGRAMS_PER_SM)[0] > 1
    bias = torch.randn(N, generator=gen).to(device)
    cases = [(torch.bfloat16, m, 0, q4_k_group_gemv_kernel) for m in (1, 2, 4)]
    cases += [(torch.float16, TILES.fp16_most_rows, 0, q4_k_group_gemv_kernel),
              (torch.float16, TILES.fp16_most_rows + 1, 0, q4_k_gemv_kernel),
              (torch.bfloat16, 2, 1, q4_k_gemv_kernel)]  # x rows starting 2 bytes past a word
    for dtype, m, shift, kernel in cases:
        x = torch.randn(m, K + shift, generator=gen).to(device, dtype)[:, shift:]
        assert gl._gemv(gf.Q4_K, x, data, None).tuned.kernel is kernel
        got = gguf_linear(x, data, gf.Q4_K, bias.to(dtype))
        ref = gguf_linear_reference(x.double(), data, gf.Q4_K, bias.to(dtype).double())
        assert_close(got, ref, dtype=dtype, reduction_len=K)


def test_q4_k_group_gemv_rows_do_not_depend_on_the_batch(device):
    # As for Q4_0's group kernel: a row's output is bitwise the same decoded alone or with others.
    gen = torch.Generator().manual_seed(15)
    N, K = 40, 512
    data = gf.random_blocks(gf.Q4_K, N, K, generator=gen).to(device)
    x = torch.randn(4, K, generator=gen).to(device, torch.bfloat16)
    four = gguf_linear(x, data, gf.Q4_K)
    for m in (1, 2):
        for r in range(0, 4, m):
            torch.testing.assert_close(gguf_linear(x[r:r + m], data, gf.Q4_K), four[r:r + m], rtol=0, atol=0)


def test_kernels_compile_for_hopper():
    """The GPU compiler accepts every quantized-linear kernel variant (the CPU tests only interpret them).

    Compiled for sm_90 with the ptxas Triton ships, in a subprocess: this process interprets.
    """
    from tests.aot_helpers import run_sm90

    run = run_sm90("bench.aot_quant", "--check")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "SPILLS" not in run.stdout, run.stdout
