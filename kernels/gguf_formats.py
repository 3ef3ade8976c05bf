"""GGUF (ggml) quantized block formats: the byte layouts as data, and a pure-torch dequantizer per format.

A quantized GGUF weight of shape [N, K] (N output rows, K the reduction dimension) is stored row by row;
each row is K / block_size blocks laid end to end, with no padding, so a row is
``K / block_size * type_size`` bytes. Here that is a ``uint8`` tensor [N, row_bytes]. Every multi-byte
field is little-endian; ``f16`` is an IEEE half. The layouts, exactly as ggml declares its block structs
(offsets in bytes within a block, element index ``i`` within the block):

    Q8_0  (32 elements, 34 bytes):  d:f16 @0, qs:int8[32] @2.                 w_i = d * qs[i]
    Q4_0  (32, 18):  d:f16 @0, qs:u8[16] @2.   q_i = low nibble of qs[i] for i < 16, high nibble of
                     qs[i-16] for i >= 16.                                       w_i = d * (q_i - 8)
    Q4_1  (32, 20):  d:f16 @0, m:f16 @2, qs:u8[16] @4 (nibbles as Q4_0).       w_i = d * q_i + m
    Q5_0  (32, 22):  d:f16 @0, qh:u8[4] @2, qs:u8[16] @6. Bit i of the 32-bit qh is bit 4 of q_i,
                     the nibble as Q4_0.                                         w_i = d * (q_i - 16)
    Q5_1  (32, 24):  d:f16 @0, m:f16 @2, qh:u8[4] @4, qs:u8[16] @8.             w_i = d * q_i + m

K-quants: a super-block of 256 elements in 8 sub-blocks of 32 (Q6_K: 16 sub-blocks of 16).

    Q4_K  (256, 144): d:f16 @0, dmin:f16 @2, scales:u8[12] @4, qs:u8[128] @16.
          Sub-block s (0..7) has a 6-bit scale sc_s and a 6-bit min m_s packed in ``scales``:
              s < 4:  sc = scales[s] & 63,                 m = scales[s+4] & 63
              s >= 4: sc = (scales[s+4] & 15) | (scales[s-4] >> 6) << 4,
                      m  = (scales[s+4] >> 4) | (scales[s] >> 6) << 4
          Element l (0..31) of sub-block s is the low (s even) or high (s odd) nibble of
          qs[32 * (s // 2) + l].                                         w = d * sc_s * q - dmin * m_s
    Q5_K  (256, 176): d:f16 @0, dmin:f16 @2, scales:u8[12] @4, qh:u8[32] @16, qs:u8[128] @48.
          As Q4_K, plus bit 4 of element l of sub-block s is bit s of qh[l].
    Q6_K  (256, 210): ql:u8[128] @0, qh:u8[64] @128, scales:int8[16] @192, d:f16 @208.
          Element i = 128 h + 32 t + l (half h, quarter t in 0..3, l in 0..31):
              low 4 bits:  ql[64 h + l + 32 (t & 1)], low nibble for t < 2, high for t >= 2
              high 2 bits: (qh[32 h + l] >> 2 t) & 3
              q = (low | high << 4) - 32;   w = d * scales[8 h + l // 16 + 2 t] * q

``qtype`` values are the ``gguf.GGMLQuantizationType`` integers, kept here as constants so that this
module does not import the ``gguf`` package (a runtime dependency of the engine only). F32, F16 and BF16
tensors in a GGUF file are plain arrays, not block formats, and are not handled here.

The engine uses :func:`gguf_row_bytes`, :func:`block_size`, :data:`GGUF_SUPPORTED` and
:func:`gguf_dequantize_reference`; the Triton kernels live in ``gguf_dequant`` and ``gguf_linear``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K = 2, 3, 6, 7, 8, 12, 13, 14


@dataclass(frozen=True)
class BlockFormat:
    name: str
    qtype: int
    block_size: int  # elements per block
    type_size: int  # bytes per block


FORMATS: dict[int, BlockFormat] = {f.qtype: f for f in (
    BlockFormat("Q4_0", Q4_0, 32, 18),
    BlockFormat("Q4_1", Q4_1, 32, 20),
    BlockFormat("Q5_0", Q5_0, 32, 22),
    BlockFormat("Q5_1", Q5_1, 32, 24),
    BlockFormat("Q8_0", Q8_0, 32, 34),
    BlockFormat("Q4_K", Q4_K, 256, 144),
    BlockFormat("Q5_K", Q5_K, 256, 176),
    BlockFormat("Q6_K", Q6_K, 256, 210),
)}

GGUF_SUPPORTED: frozenset[int] = frozenset(FORMATS)


class UnsupportedQuantType(ValueError):
    """A GGUF tensor type that these kernels cannot dequantize."""


def _supported_list() -> str:
    return ", ".join(f"{f.name} ({q})" for q, f in sorted(FORMATS.items()))


def block_format(qtype: int) -> BlockFormat:
    try:
        return FORMATS[int(qtype)]
    except (KeyError, TypeError, ValueError):
        raise UnsupportedQuantType(
            f"GGUF quantization type {qtype!r} is not supported; supported types: {_supported_list()}"
        ) from None


def block_size(qtype: int) -> int:
    """Elements per block of ``qtype``; K of a weight must be a multiple of it."""
    return block_format(qtype).block_size


def type_size(qtype: int) -> int:
    """Bytes per block of ``qtype``."""
    return block_format(qtype).type_size


def qtype_name(qtype: int) -> str:
    return block_format(qtype).name


def gguf_row_bytes(qtype: int, K: int) -> int:
    """Bytes one row of K elements occupies; raises if K is not a whole number of blocks."""
    fmt = block_format(qtype)
    if K <= 0 or K % fmt.block_size:
        raise ValueError(
            f"a {fmt.name} row must hold a positive multiple of {fmt.block_size} elements, got K={K}"
        )
    return K // fmt.block_size * fmt.type_size


def check_blocks(data: torch.Tensor, qtype: int, what: str = "data") -> tuple[BlockFormat, int, int]:
    """Validate raw GGUF blocks [N, row_bytes]; returns (format, N, K)."""
    fmt = block_format(qtype)
    if data.dtype != torch.uint8:
        raise TypeError(f"{what}: GGUF blocks must be a uint8 tensor of raw bytes, got {data.dtype}")
    if data.dim() != 2:
        raise ValueError(f"{what}: GGUF blocks must be 2-D [rows, row_bytes], got shape {tuple(data.shape)}")
    N, row_bytes = data.shape
    if row_bytes == 0 or row_bytes % fmt.type_size:
        raise ValueError(
            f"{what}: a {fmt.name} row must be a whole number of {fmt.type_size}-byte blocks, "
            f"got {row_bytes} bytes per row"
        )
    return fmt, N, row_bytes // fmt.type_size * fmt.block_size


# --- reference dequantization (pure torch, float32 arithmetic as ggml does) ---------------------------


def _f16(blocks: torch.Tensor, offset: int) -> torch.Tensor:
    """The f16 field at ``offset`` of every block, as float32 [N, nb, 1]."""
    return blocks[..., offset:offset + 2].contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """[.., 16] bytes -> [.., 32] values: the 16 low nibbles, then the 16 high nibbles."""
    q = qs.to(torch.int32)
    return torch.cat([q & 0xF, q >> 4], dim=-1)


def _bits(qh: torch.Tensor) -> torch.Tensor:
    """[.., 4] bytes of a little-endian u32 -> [.., 32] bits, bit i at position i."""
    q = qh.to(torch.int32)
    shifts = torch.arange(8, device=qh.device, dtype=torch.int32)
    return ((q[..., :, None] >> shifts) & 1).flatten(-2)


def _scale_min_k4(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12 packed bytes of Q4_K/Q5_K -> (sc, m), each [.., 8] of 6-bit values."""
    s = scales.to(torch.int32)
    lo, mid, hi = s[..., 0:4], s[..., 4:8], s[..., 8:12]
    sc = torch.cat([lo & 63, (hi & 0xF) | ((lo >> 6) << 4)], dim=-1)
    m = torch.cat([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], dim=-1)
    return sc, m


def _q8_0(b):
    return _f16(b, 0) * b[..., 2:34].view(torch.int8).float()


def _q4_0(b):
    return _f16(b, 0) * (_nibbles(b[..., 2:18]) - 8).float()


def _q4_1(b):
    return _f16(b, 0) * _nibbles(b[..., 4:20]).float() + _f16(b, 2)


def _q5_0(b):
    q = _nibbles(b[..., 6:22]) | (_bits(b[..., 2:6]) << 4)
    return _f16(b, 0) * (q - 16).float()


def _q5_1(b):
    q = _nibbles(b[..., 8:24]) | (_bits(b[..., 4:8]) << 4)
    return _f16(b, 0) * q.float() + _f16(b, 2)


def _k_quant(b, qs_offset: int, qh_offset: int | None):
    sc, m = _scale_min_k4(b[..., 4:16])
    qs = b[..., qs_offset:qs_offset + 128].to(torch.int32).unflatten(-1, (4, 32))
    q = torch.stack([qs & 0xF, qs >> 4], dim=-2).flatten(-3, -2)  # [.., 8 sub-blocks, 32]
    if qh_offset is not None:
        qh = b[..., qh_offset:qh_offset + 32].to(torch.int32)
        s = torch.arange(8, device=b.device, dtype=torch.int32)
        q = q | (((qh[..., None, :] >> s[:, None]) & 1) << 4)
    d = _f16(b, 0)[..., None] * sc.float()[..., None]
    dm = _f16(b, 2)[..., None] * m.float()[..., None]
    return (d * q.float() - dm).flatten(-2)


def _q4_k(b):
    return _k_quant(b, 16, None)


def _q5_k(b):
    return _k_quant(b, 48, 16)


def _q6_k(b):
    ql = b[..., 0:128].to(torch.int32).unflatten(-1, (2, 2, 32))  # [.., half, t & 1, l]
    qh = b[..., 128:192].to(torch.int32).unflatten(-1, (2, 1, 32))  # [.., half, 1, l]
    scales = b[..., 192:208].view(torch.int8).float().unflatten(-1, (2, 4, 2))  # [.., half, t, l // 16]
    low = torch.cat([ql & 0xF, ql >> 4], dim=-2)  # [.., half, t, l]
    shifts = 2 * torch.arange(4, device=b.device, dtype=torch.int32)[:, None]
    high = (qh >> shifts) & 3  # [.., half, t, l]
    q = ((low | (high << 4)) - 32).float()
    scale = scales.repeat_interleave(16, dim=-1)  # [.., half, t, l]
    return (_f16(b, 208)[..., None, None] * scale * q).flatten(-3)


_DEQUANT = {Q8_0: _q8_0, Q4_0: _q4_0, Q4_1: _q4_1, Q5_0: _q5_0, Q5_1: _q5_1,
            Q4_K: _q4_k, Q5_K: _q5_k, Q6_K: _q6_k}


def gguf_dequantize_reference(data: torch.Tensor, qtype: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Dequantize raw GGUF blocks [N, row_bytes] of ``qtype`` to a dense [N, K] tensor of ``dtype``."""
    fmt, N, K = check_blocks(data, qtype)
    blocks = data.reshape(N, K // fmt.block_size, fmt.type_size)
    return _DEQUANT[fmt.qtype](blocks).reshape(N, K).to(dtype)


# --- well-formed random blocks, for tests and benchmarks ---------------------------------------------

# Field offsets of the f16 scales per format, and the magnitude drawn for each so that dequantized
# weights are typically a few hundredths, as trained weights are.
_F16_FIELDS = {
    Q8_0: {0: 5e-4}, Q4_0: {0: 1e-2}, Q4_1: {0: 5e-3, 2: 5e-2}, Q5_0: {0: 5e-3}, Q5_1: {0: 3e-3, 2: 5e-2},
    Q4_K: {0: 2e-4, 2: 2e-4}, Q5_K: {0: 1e-4, 2: 2e-4}, Q6_K: {208: 1e-4},
}


def random_blocks(qtype: int, N: int, K: int, *, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Random well-formed blocks: uniform random bytes, with finite f16 scales of sensible magnitude."""
    fmt = block_format(qtype)
    nb = gguf_row_bytes(qtype, K) // fmt.type_size
    blocks = torch.randint(0, 256, (N, nb, fmt.type_size), generator=generator, device=device,
                           dtype=torch.int32).to(torch.uint8)
    for offset, scale in _F16_FIELDS[fmt.qtype].items():
        mag = torch.rand(N, nb, generator=generator, device=device) + 0.5
        sign = torch.randint(0, 2, (N, nb), generator=generator, device=device) * 2 - 1
        value = (mag * sign * scale).to(torch.float16)
        blocks[..., offset:offset + 2] = value.unsqueeze(-1).view(torch.uint8)
    return blocks.reshape(N, nb * fmt.type_size)
