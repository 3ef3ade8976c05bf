"""A variant of ``sample`` for all-greedy batches: each row's argmax split over several programs.

The ``sample`` kernel gives each row one program, which walks the whole vocabulary serially. For batches
of a few rows that leaves most of the GPU idle and bounds the step by one SM's load latency: on an H200 a
greedy batch of 1 at V=151936 took 176 us against 12 us for ``torch.argmax``
(bench/results/NVIDIA_H200/run4/tune_sampling.log). Greedy decoding needs only the argmax and the chosen
token's log-probability, so here a row is cut into chunks of CHUNK tokens, one program each:

    stage 1, program (b, p):  m_p = max_i z_i,  a_p = min{i : z_i = m_p},  s_p = sum_i exp(z_i - m_p),
                              bad_p = any z_i is NaN or +inf                  (i over chunk p of row b)
    stage 2, program b:       M = max_p m_p,  token = min{a_p : m_p = M}  (ties: lowest index, as `sample`)
                              lse = M + log(sum_p s_p exp(m_p - M)),  logprob = M - lse
                              a row with a bad chunk or no finite logit gets token -1 (the caller raises)

z is the logits row upcast to fp32 (temperature 0 is greedy; no penalties, bias or top logprobs). Any
other batch goes to ``sample`` unchanged, so this variant has ``sample``'s signature and meaning on every
input. Selected by name: ``tritonforge bench --ops sample --impl sample_greedy_split``,
``--op sample=sample_greedy_split`` for the engine. Not yet timed on a GPU.
"""

from __future__ import annotations

import torch

from kernels import alloc
from kernels._triton import tl, triton
from kernels.registry import register_impl
from kernels.sampling import SampleResult, SamplingTensors, _check, _raise_invalid, sample

CHUNK = 4096  # tokens per stage-1 program: 37 programs per row at V=151936
CHUNK_INTERPRETER = 64  # small chunks on a CPU, so tests cross chunk edges
REDUCE_BLOCK = 64  # partials per stage-2 iteration


@triton.jit
def _argmax_partial_kernel(logits_ptr, part_m_ptr, part_a_ptr, part_s_ptr, part_bad_ptr, V, stride_l, P,
                           CHUNK: tl.constexpr):
    row = tl.program_id(0)
    p = tl.program_id(1)
    offs = p * CHUNK + tl.arange(0, CHUNK)
    ok = offs < V
    z = tl.load(logits_ptr + row.to(tl.int64) * stride_l + offs, mask=ok, other=float("-inf")).to(tl.float32)
    bad = tl.max(((z != z) | (z == float("inf"))).to(tl.int32), 0)
    m = tl.max(z, 0)
    a = tl.min(tl.where(z == m, offs, V), 0)
    m_ref = tl.where(m == float("-inf"), 0.0, m)
    s = tl.sum(tl.exp(z - m_ref), 0)
    out = row.to(tl.int64) * P + p
    tl.store(part_m_ptr + out, m)
    tl.store(part_a_ptr + out, a)
    tl.store(part_s_ptr + out, s)
    tl.store(part_bad_ptr + out, bad)


@triton.jit
def _argmax_reduce_kernel(part_m_ptr, part_a_ptr, part_s_ptr, part_bad_ptr, token_ptr, lp_ptr, V, P,
                          BLOCK: tl.constexpr):
    row = tl.program_id(0)
    base = row.to(tl.int64) * P
    top = tl.full([], float("-inf"), tl.float32)
    token = tl.full([], V, tl.int32)
    bad = tl.zeros([], tl.int32)
    for p0 in range(0, P, BLOCK):  # pass 1: the max, the lowest index attaining it, any bad chunk
        idx = p0 + tl.arange(0, BLOCK)
        ok = idx < P
        m = tl.load(part_m_ptr + base + idx, mask=ok, other=float("-inf"))
        a = tl.load(part_a_ptr + base + idx, mask=ok, other=V)
        bad = tl.maximum(bad, tl.max(tl.load(part_bad_ptr + base + idx, mask=ok, other=0), 0))
        block_top = tl.max(m, 0)
        block_arg = tl.min(tl.where(m == block_top, a, V), 0)
        token = tl.where(block_top > top, block_arg, tl.where(block_top == top, tl.minimum(token, block_arg), token))
        top = tl.maximum(top, block_top)
    total = tl.zeros([], tl.float32)
    top_ref = tl.where(top == float("-inf"), 0.0, top)
    for p0 in range(0, P, BLOCK):  # pass 2: the softmax denominator, relative to the row's max
        idx = p0 + tl.arange(0, BLOCK)
        ok = idx < P
        m = tl.load(part_m_ptr + base + idx, mask=ok, other=float("-inf"))
        s = tl.load(part_s_ptr + base + idx, mask=ok, other=0.0)
        m_ref = tl.where(m == float("-inf"), top_ref, m)
        total += tl.sum(tl.where(ok, s * tl.exp(m_ref - top_ref), 0.0), 0)
    invalid = (bad > 0) | (top == float("-inf"))
    tl.store(token_ptr + row, tl.where(invalid, -1, token).to(tl.int64))
    tl.store(lp_ptr + row, -tl.log(total))


def sample_greedy_split(logits: torch.Tensor, st: SamplingTensors) -> SampleResult:
    """``sample`` with all-greedy batches (no penalties, bias or top logprobs) done by a split argmax."""
    if not st.greedy_only or st.has_edits or st.max_logprobs:
        return sample(logits, st)
    _check(logits, st)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    B, V = logits.shape
    dev = logits.device
    tokens = alloc.empty(B, dtype=torch.int64, device=dev)
    lps = alloc.empty(B, dtype=torch.float32, device=dev)
    if B == 0:
        return SampleResult(tokens, lps, None, None, [])
    chunk = CHUNK_INTERPRETER if dev.type == "cpu" else CHUNK
    P = triton.cdiv(V, chunk)
    part_m = torch.empty(B, P, dtype=torch.float32, device=dev)
    part_s = torch.empty(B, P, dtype=torch.float32, device=dev)
    part_a = torch.empty(B, P, dtype=torch.int32, device=dev)
    part_bad = torch.empty(B, P, dtype=torch.int32, device=dev)
    _argmax_partial_kernel[(B, P)](logits, part_m, part_a, part_s, part_bad, V, logits.stride(0), P,
                                   CHUNK=chunk, num_warps=8 if chunk >= 2048 else 1)
    _argmax_reduce_kernel[(B,)](part_m, part_a, part_s, part_bad, tokens, lps, V, P, BLOCK=REDUCE_BLOCK,
                                num_warps=2)
    host_tokens = tokens.tolist()  # the step's one wait for the device, as in `sample`
    if -1 in host_tokens:
        _raise_invalid([row for row, t in enumerate(host_tokens) if t == -1])
    return SampleResult(tokens, lps, None, None, host_tokens)


register_impl("sample", "sample_greedy_split", sample_greedy_split)
