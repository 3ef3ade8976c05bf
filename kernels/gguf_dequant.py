"""Dequantize raw GGUF blocks to a dense [N, K] tensor in Triton.

The block layouts are documented (and implemented in torch) in ``kernels.gguf_formats``. Each program
writes a [BLOCK_N, BLOCK_K] tile of the output; every element finds its block (``k // block_size``),
its index ``i`` within the block, and decodes itself from the block's bytes with the format's formula:

    Q8_0  d * q_i              Q4_0  d * (q_i - 8)         Q4_1  d * q_i + m
    Q5_0  d * (q_i - 16)       Q5_1  d * q_i + m
    Q4_K / Q5_K  (d * sc_s) * q - dmin * m_s      Q6_K  (d * sc_s) * (q - 32)

Scales and quants are re-read by the elements that share them; those reads hit L1, and the op is bound
by writing the dense output (2 bytes per element against at most 1.06 bytes read). The arithmetic is
float32, as in ggml, rounded once to the output dtype. f16 fields sit at even offsets in every format
(all block sizes are even), so they are loaded through a float16 view of the same bytes.
"""

from __future__ import annotations

import torch

from kernels import alloc
from kernels._quant_launch import launcher
from kernels._triton import tl, triton
from kernels.gguf_formats import FORMATS, check_blocks, gguf_dequantize_reference, random_blocks
from kernels.registry import Op, register
from kernels.tuning import Tuned


@triton.jit
def _f16(ptr):
    """The f16 field at byte pointer ``ptr`` (an even address), as float32."""
    return tl.load(ptr.to(tl.pointer_type(tl.float16))).to(tl.float32)


@triton.jit
def _u8(ptr):
    return tl.load(ptr).to(tl.int32)


@triton.jit
def _nibble(qs, i):
    """Element i (0..31) of a Q4/Q5 block: low nibble of qs[i] for i < 16, else high nibble of qs[i-16]."""
    byte = _u8(qs + (i % 16))
    return tl.where(i < 16, byte & 0xF, byte >> 4)


@triton.jit
def _high_bit(qh, i):
    """Bit i of the little-endian 32-bit field at ``qh``."""
    return (_u8(qh + i // 8) >> (i % 8)) & 1


@triton.jit
def _k4_scale_min(scales, s):
    """The 6-bit scale and min of sub-block s (0..7) of a Q4_K / Q5_K super-block."""
    a = _u8(scales + s)
    b = _u8(scales + s + 4)
    c = _u8(scales + (s & 3))
    sc = tl.where(s < 4, a & 63, (b & 0xF) | ((c >> 6) << 4))
    mn = tl.where(s < 4, b & 63, (b >> 4) | ((a >> 6) << 4))
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def gguf_value(blk, i, QTYPE: tl.constexpr):
    """Element ``i`` of the block starting at byte pointer ``blk``, as float32 (any tensor shape)."""
    if QTYPE == 8:  # Q8_0
        q = tl.load(blk + 2 + i).to(tl.int8, bitcast=True).to(tl.float32)
        w = _f16(blk) * q
    elif QTYPE == 2:  # Q4_0
        w = _f16(blk) * (_nibble(blk + 2, i) - 8).to(tl.float32)
    elif QTYPE == 3:  # Q4_1
        w = _f16(blk) * _nibble(blk + 4, i).to(tl.float32) + _f16(blk + 2)
    elif QTYPE == 6:  # Q5_0
        q = _nibble(blk + 6, i) | (_high_bit(blk + 2, i) << 4)
        w = _f16(blk) * (q - 16).to(tl.float32)
    elif QTYPE == 7:  # Q5_1
        q = _nibble(blk + 8, i) | (_high_bit(blk + 4, i) << 4)
        w = _f16(blk) * q.to(tl.float32) + _f16(blk + 2)
    elif QTYPE == 12 or QTYPE == 13:  # Q4_K, Q5_K
        s, l = i // 32, i % 32
        qs = blk + (16 if QTYPE == 12 else 48)
        byte = _u8(qs + (s // 2) * 32 + l)
        q = tl.where(s % 2 == 0, byte & 0xF, byte >> 4)
        if QTYPE == 13:
            q = q | (((_u8(blk + 16 + l) >> s) & 1) << 4)
        sc, mn = _k4_scale_min(blk + 4, s)
        w = (_f16(blk) * sc) * q.to(tl.float32) - _f16(blk + 2) * mn
    else:  # Q6_K
        h, r = i // 128, i % 128
        t, l = r // 32, r % 32
        ql = _u8(blk + 64 * h + l + 32 * (t % 2))
        low = tl.where(t < 2, ql & 0xF, ql >> 4)
        high = (_u8(blk + 128 + 32 * h + l) >> (2 * t)) & 3
        sc = tl.load(blk + 192 + 8 * h + l // 16 + 2 * t).to(tl.int8, bitcast=True).to(tl.float32)
        w = (_f16(blk + 208) * sc) * ((low | (high << 4)) - 32).to(tl.float32)
    return w


@triton.jit
def _gguf_dequant_kernel(
    data_ptr, out_ptr, N, K, row_bytes,
    QTYPE: tl.constexpr, QK: tl.constexpr, TYPE_SIZE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    ok = (rows < N)[:, None] & (cols < K)[None, :]
    # Clamp instead of masking every byte load inside gguf_value: out-of-range lanes read a valid
    # element and are simply not stored.
    r = tl.minimum(rows, N - 1).to(tl.int64)
    k = tl.minimum(cols, K - 1)
    blk = data_ptr + r[:, None] * row_bytes + ((k // QK) * TYPE_SIZE)[None, :]
    w = gguf_value(blk, (k % QK)[None, :], QTYPE)
    out = out_ptr + rows.to(tl.int64)[:, None] * K + cols[None, :]
    tl.store(out, w.to(out_ptr.dtype.element_ty), mask=ok)


# One config: the op is a streaming write; 16 x 128 elements is 16 elements per thread at 4 warps.
CONFIGS = {
    "cuda": [dict(BLOCK_N=16, BLOCK_K=128, num_warps=4, num_stages=1)],
    "hip": [dict(BLOCK_N=16, BLOCK_K=128, num_warps=4, num_stages=1)],
}
_dequant = Tuned(_gguf_dequant_kernel, CONFIGS, key=["N", "K", "QTYPE"])

OUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_aligned(data: torch.Tensor, what: str = "data") -> torch.Tensor:
    """GGUF blocks as a contiguous tensor whose f16 fields are 2-byte aligned (copied if needed)."""
    if not data.is_contiguous() or data.data_ptr() % 2:
        data = data.contiguous() if data.data_ptr() % 2 == 0 else data.clone()
    if data.data_ptr() % 2:
        raise ValueError(f"{what}: could not obtain 2-byte aligned GGUF blocks")
    return data


def gguf_dequantize(data: torch.Tensor, qtype: int, dtype: torch.dtype = torch.float16) -> torch.Tensor:
    """Dense [N, K] ``dtype`` weight from raw GGUF blocks ``data`` (uint8 [N, row_bytes]) of ``qtype``."""
    fmt, N, K = check_blocks(data, qtype)
    if dtype not in OUT_DTYPES:
        raise TypeError(f"gguf_dequantize: dtype must be one of {[str(d) for d in OUT_DTYPES]}, got {dtype}")
    data = check_aligned(data)
    out = alloc.empty(N, K, dtype=dtype, device=data.device)
    if N == 0:
        return out
    grid = lambda META: (triton.cdiv(N, META["BLOCK_N"]), triton.cdiv(K, META["BLOCK_K"]))
    launcher(_dequant, None)[grid](
        data, out, N, K, data.shape[1], QTYPE=fmt.qtype, QK=fmt.block_size, TYPE_SIZE=fmt.type_size,
    )
    return out


# --- registration -------------------------------------------------------------------------------

QTYPES = sorted(FORMATS)


def _cases(profile: str):
    from hypothesis import strategies as st  # a test-time dependency, imported only by tests

    if profile == "cpu":
        rows, blocks = st.sampled_from([1, 3, 17]), st.sampled_from([1, 2, 3])
    else:
        rows, blocks = st.sampled_from([1, 896, 4096, 4113]), st.sampled_from([2, 14, 16])

    def with_k(c):
        per_block = FORMATS[c["qtype"]].block_size
        # On the GPU the simple formats get as many elements per row as the K-quants (256 per unit).
        unit = per_block if profile == "cpu" else 256
        return {"N": c["N"], "K": c["blocks"] * unit, "qtype": c["qtype"], "dtype": c["dtype"]}

    return st.fixed_dictionaries({
        "N": rows, "blocks": blocks, "qtype": st.sampled_from(QTYPES), "dtype": st.sampled_from(OUT_DTYPES),
    }).map(with_k)


def _make_inputs(case, device, gen):
    data = random_blocks(case["qtype"], case["N"], case["K"], generator=gen, device=device)
    return {"data": data, "qtype": case["qtype"], "dtype": case["dtype"]}


def _row_bytes(case):
    fmt = FORMATS[case["qtype"]]
    return case["K"] // fmt.block_size * fmt.type_size


def _bench_cases():
    shapes = [(4096, 4096), (14336, 4096), (4096, 14336), (896, 896), (4864, 896), (896, 4864)]
    return [{"N": n, "K": k, "qtype": q, "dtype": torch.bfloat16} for q in QTYPES for n, k in shapes
            if k % FORMATS[q].block_size == 0]


def _torch_dequant_baseline(data, qtype, dtype=torch.float16):
    return gguf_dequantize_reference(data, qtype, dtype)


GGUF_DEQUANTIZE_OP = register(Op(
    name="gguf_dequantize",
    triton=gguf_dequantize,
    torch=gguf_dequantize_reference,
    cases=_cases,
    make_inputs=_make_inputs,
    bench_cases=_bench_cases,
    smoke_cases=lambda: [{"N": 3, "K": 2 * FORMATS[q].block_size, "qtype": q, "dtype": torch.float16}
                         for q in QTYPES],
    reduction_len=lambda c: 1,
    flops=lambda c: 2.0 * c["N"] * c["K"],
    bytes=lambda c: c["N"] * (_row_bytes(c) + c["K"] * c["dtype"].itemsize),
    baseline=_torch_dequant_baseline,
    baseline_name="torch eager",
))

