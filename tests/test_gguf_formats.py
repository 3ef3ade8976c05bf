"""GGUF block layouts proven against the ``gguf`` package's own (numpy) implementation.

The simple formats are quantized by ``gguf.quants.quantize``; the K-quants, which that package only
dequantizes, are random well-formed blocks. Either way our torch dequantizer must agree with
``gguf.quants.dequantize`` to float32 rounding, which pins every byte offset, nibble order and bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kernels import gguf_formats as gf

gguf = pytest.importorskip("gguf", reason="the gguf package is the independent reference for these layouts")

pytestmark = pytest.mark.gguf

SIMPLE = [gf.Q8_0, gf.Q4_0, gf.Q4_1, gf.Q5_0, gf.Q5_1]
K_QUANTS = [gf.Q4_K, gf.Q5_K, gf.Q6_K]


def _gguf_dequant(data: torch.Tensor, qtype: int) -> torch.Tensor:
    return torch.from_numpy(gguf.quants.dequantize(data.numpy(), gguf.GGMLQuantizationType(qtype)))


def test_table_matches_gguf_package():
    for qtype in gf.GGUF_SUPPORTED:
        t = gguf.GGMLQuantizationType(qtype)
        assert t.name == gf.qtype_name(qtype)
        assert gguf.GGML_QUANT_SIZES[t] == (gf.block_size(qtype), gf.type_size(qtype))


@pytest.mark.parametrize("qtype", SIMPLE, ids=gf.qtype_name)
@pytest.mark.parametrize("shape", [(1, 32), (7, 96), (3, 4096)])
def test_simple_formats_match_gguf(qtype, shape):
    rng = np.random.default_rng(qtype * 100 + shape[1])
    # Mixed magnitudes per row, so blocks have very different scales (and some negative scales).
    w = (rng.standard_normal(shape) * rng.uniform(0.01, 3.0, (shape[0], 1))).astype(np.float32)
    data = torch.from_numpy(gguf.quants.quantize(w, gguf.GGMLQuantizationType(qtype)))
    assert data.shape == (shape[0], gf.gguf_row_bytes(qtype, shape[1]))
    ours = gf.gguf_dequantize_reference(data, qtype, torch.float32)
    torch.testing.assert_close(ours, _gguf_dequant(data, qtype), rtol=1e-6, atol=1e-7)
    # And the round trip is a quantization of w, not noise: within half a step of the block's range.
    assert (ours - torch.from_numpy(w)).abs().max() < 0.2 * np.abs(w).max()


@pytest.mark.parametrize("qtype", K_QUANTS, ids=gf.qtype_name)
@pytest.mark.parametrize("shape", [(1, 256), (5, 768)])
def test_k_quants_match_gguf_on_random_blocks(qtype, shape):
    gen = torch.Generator().manual_seed(qtype + shape[0])
    data = gf.random_blocks(qtype, *shape, generator=gen)
    ours = gf.gguf_dequantize_reference(data, qtype, torch.float32)
    ref = _gguf_dequant(data, qtype)
    assert ref.abs().max() > 0.01  # not a degenerate all-zero block
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("qtype", SIMPLE + K_QUANTS, ids=gf.qtype_name)
def test_random_blocks_match_gguf(qtype):
    data = gf.random_blocks(qtype, 3, 2 * gf.block_size(qtype), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(gf.gguf_dequantize_reference(data, qtype, torch.float32),
                               _gguf_dequant(data, qtype), rtol=1e-6, atol=1e-7)


def test_row_bytes():
    assert gf.gguf_row_bytes(gf.Q4_0, 4096) == 4096 // 32 * 18
    assert gf.gguf_row_bytes(gf.Q6_K, 4096) == 16 * 210
    with pytest.raises(ValueError, match="multiple of 256"):
        gf.gguf_row_bytes(gf.Q4_K, 100)


def test_unsupported_type_lists_supported():
    with pytest.raises(gf.UnsupportedQuantType, match=r"supported types: Q4_0 \(2\)"):
        gf.block_size(10)  # Q2_K


def test_bad_blocks_are_rejected():
    with pytest.raises(TypeError, match="uint8"):
        gf.gguf_dequantize_reference(torch.zeros(2, 18, dtype=torch.int8), gf.Q4_0)
    with pytest.raises(ValueError, match="whole number of 18-byte blocks"):
        gf.gguf_dequantize_reference(torch.zeros(2, 19, dtype=torch.uint8), gf.Q4_0)
    with pytest.raises(ValueError, match="2-D"):
        gf.gguf_dequantize_reference(torch.zeros(36, dtype=torch.uint8), gf.Q4_0)
