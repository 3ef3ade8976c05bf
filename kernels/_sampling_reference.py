"""The pure-torch sampler: the same pipeline as ``kernels/sampling.py``, written with a full sort.

``sample_reference`` reproduces the kernel's draws: it computes the same counter-based noise from each
row's keys, so on the same inputs it picks the same token (up to float rounding at exact near-ties).
``sample_baseline`` is the same sort-based pipeline with noise from torch's own generator: what a plain
torch sampler costs, the benchmark's baseline. ``processed_logits`` and ``kept_mask`` are the pieces the
tests use to state what a correct draw may be.
"""

from __future__ import annotations

import torch

from kernels._sampling_params import SampleResult, SamplingTensors
from kernels.greedy import invalid_rows_error

_M32 = 0xFFFFFFFF


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def check_logits(logits: torch.Tensor) -> None:
    """Raise ValueError for rows with NaN or +inf logits, or without any finite logit."""
    invalid = torch.isnan(logits).any(-1) | (logits == float("inf")).any(-1) | (logits == float("-inf")).all(-1)
    if bool(invalid.any()):
        bad = invalid.nonzero().flatten().tolist()
        raise invalid_rows_error("sample", bad)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # int64 holding uint32 values: products wrap modulo 2^64, whose low 32 bits are the uint32 product.
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def counter_gumbel(st: SamplingTensors, vocab: int, dtype: torch.dtype) -> torch.Tensor:
    """The kernel's Gumbel noise [B, V], bit-identical in its uniforms."""
    idx = torch.arange(vocab, device=st.rng_key1.device, dtype=torch.int64)
    k1 = st.rng_key1.to(torch.int64) & _M32
    k2 = st.rng_key2.to(torch.int64) & _M32
    h = _mix32(_mix32(idx[None, :] ^ k1[:, None]) ^ k2[:, None])
    u = ((h >> 9).to(dtype) + 0.5) / 8388608.0
    return -torch.log(-torch.log(u))


def torch_gumbel(st: SamplingTensors, vocab: int, dtype: torch.dtype) -> torch.Tensor:
    u = torch.rand(st.batch, vocab, device=st.rng_key1.device, dtype=dtype).clamp_(min=1e-20)
    return -torch.log(-torch.log(u))


def processed_logits(logits: torch.Tensor, st: SamplingTensors) -> torch.Tensor:
    """z = (logits + bias, penalised) / T, with T = 1 for greedy rows (steps 1-4 of the pipeline)."""
    x = logits.to(_compute_dtype(logits))
    E = int(st.edit_start[-1])
    if E:
        B = x.shape[0]
        rows = torch.repeat_interleave(torch.arange(B, device=x.device), st.edit_start.diff().long())
        tok = st.edit_token[:E].long()
        count = st.edit_count[:E].to(x.dtype)
        v = x[rows, tok] + st.edit_bias[:E].to(x.dtype)
        rep = st.repetition_penalty[rows].to(x.dtype)
        v = torch.where(st.edit_in_context[:E] != 0, torch.where(v > 0, v / rep, v * rep), v)
        v = v - st.frequency_penalty[rows].to(x.dtype) * count
        v = v - torch.where(count > 0, st.presence_penalty[rows].to(x.dtype), torch.zeros_like(v))
        x = x.clone()
        x[rows, tok] = v
    t = st.temperature.to(x.dtype)
    return x / torch.where(t > 0, t, torch.ones_like(t))[:, None]


def kept_mask(z: torch.Tensor, st: SamplingTensors, slack: float = 0.0) -> torch.Tensor:
    """Tokens the filters keep (min-p, then top-k, then top-p; ties at a threshold kept), via a sort.

    ``slack`` > 0 widens every threshold by that relative amount: the set a float32 kernel may draw from.
    """
    V = z.shape[1]
    m = z.max(-1, keepdim=True).values
    sorted_z = z.sort(-1, descending=True).values
    min_p = st.min_p.to(z.dtype)[:, None]
    tau = torch.where(min_p > 0, m + torch.log(min_p.clamp(min=1e-30) * (1 - slack)), torch.full_like(m, -torch.inf))
    k = st.top_k.long()[:, None]
    v_k = sorted_z.gather(1, (k - 1).clamp(min=0))
    tau = torch.where(k > 0, torch.maximum(tau, v_k), tau)
    top_p = st.top_p.to(z.dtype)[:, None]
    mass = torch.exp(sorted_z - m) * (sorted_z >= tau)
    cum = mass.cumsum(-1)
    target = (top_p + slack).clamp(max=1.0) * cum[:, -1:]
    first = (cum < target).sum(-1, keepdim=True).clamp(max=V - 1)
    tau = torch.where(top_p < 1, torch.maximum(tau, sorted_z.gather(1, first)), tau)
    if slack:
        tau = torch.where(torch.isfinite(tau), tau - slack * (1 + tau.abs()), tau)
    return (z >= tau) & (z > -torch.inf)


def _sample_sorted(logits: torch.Tensor, st: SamplingTensors, noise) -> SampleResult:
    check_logits(logits)
    z = processed_logits(logits, st)
    V = z.shape[1]
    greedy = st.temperature == 0
    scores = torch.where(kept_mask(z, st), z + noise(st, V, z.dtype), torch.full_like(z, -torch.inf))
    tokens = torch.where(greedy, z.argmax(-1), scores.argmax(-1))
    logp = z - torch.logsumexp(z, -1, keepdim=True)
    chosen = logp.gather(1, tokens[:, None])[:, 0].float()
    n = st.max_logprobs
    if not n:
        return SampleResult(tokens, chosen, None, None)
    top_lp, top_ids = logp.sort(dim=-1, descending=True, stable=True)
    top_lp, top_ids = top_lp[:, :n].float(), top_ids[:, :n]
    pad = torch.arange(n, device=z.device)[None, :] >= st.num_logprobs[:, None]
    top_ids = top_ids.masked_fill(pad, -1)
    top_lp = top_lp.masked_fill(pad, -torch.inf)
    return SampleResult(tokens, chosen, top_ids, top_lp)


def sample_reference(logits: torch.Tensor, st: SamplingTensors) -> SampleResult:
    """Pure torch, same signature and draws as ``sample``; sorts the whole vocabulary."""
    return _sample_sorted(logits, st, counter_gumbel)


def sample_baseline(logits: torch.Tensor, st: SamplingTensors) -> SampleResult:
    """The sort-based torch sampler with torch's generator for the noise: the benchmark baseline."""
    return _sample_sorted(logits, st, torch_gumbel)
